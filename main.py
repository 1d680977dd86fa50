"""The FastAPI app: created by `create_app`, with the model owned by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api.observability import RequestCountMiddleware
from api.responses import register_exception_handlers
from api.routes import router
from api.upload_limit import UploadLimitMiddleware
from config import Settings, get_settings
from models.voice_storage import VoiceStore
from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.errors import ModelUnavailable
from services.metrics import LiveFigures, Metrics
from services.model_loader import load_model
from services.sessions import SessionRegistry, log_session
from services.speech import SpeechService
from services.tts import TTSEngine
from services.utils import configure_logging
from services.voices import VoiceService

logger = logging.getLogger("xtts_server")

DESCRIPTION = """
Streams speech from Coqui XTTS v2 as it is generated: clone a voice from a few seconds of audio,
save it, and stream it in 17 languages. `POST /tts_stream` answers with a WAV header at once and
then 16-bit mono PCM at 24 kHz chunk by chunk. Errors are JSON: `{"error", "message", "details"}`.
"""


async def _bring_up(app: FastAPI, settings: Settings, engine: TTSEngine | None) -> None:
    """Load and warm the model, then open the voice store; on failure stop the server."""
    state = app.state
    try:
        if engine is None:
            loaded = await anyio.to_thread.run_sync(load_model, settings)
            engine = TTSEngine(loaded)
        logger.info(
            "model %s on %s loaded in %.1f s%s",
            engine.loaded.source,
            engine.device,
            engine.loaded.load_seconds,
            " (DUMMY: random weights, noise not speech)" if engine.loaded.dummy else "",
        )
        state.engine = engine
        warm_s = await anyio.to_thread.run_sync(engine.warm_up)
        logger.info("warm-up generation took %.2f s", warm_s)
        store = VoiceStore(settings.VOICES_DIR, engine.latent_dim, engine.embedding_dim)
        if removed := await anyio.to_thread.run_sync(store.remove_leftovers):
            logger.warning("removed %d half-written voice files from %s", removed, settings.VOICES_DIR)
        voices = VoiceService(engine, store, state.cache)
        await voices.preload(settings.preload_voice_ids)
        state.voices = voices
        state.speech = SpeechService(
            engine,
            voices,
            state.sessions,
            state.gate,
            settings.MAX_TEXT_LENGTH,
            settings.STREAM_FIRST_CHUNK_TOKENS,
            settings.MAX_AUDIO_TOKENS,
        )
        state.status = "ready"
        logger.info("ready: http://%s:%d/ (Swagger UI)", settings.HOST, settings.PORT)
    except ModelUnavailable as error:
        _fail(app, f"No model: {error}")
    except Exception as error:
        logger.exception("start-up failed")
        _fail(app, f"Start-up failed: {type(error).__name__}: {error}")


def _fail(app: FastAPI, message: str) -> None:
    logger.critical(message)
    app.state.status = "failed"
    app.state.failure = message
    # run.py stops its server directly and exits 1; under plain `uvicorn --factory`, stop it like Ctrl-C would.
    stop = getattr(app.state, "request_exit", None) or (lambda: os.kill(os.getpid(), signal.SIGTERM))
    stop()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    state = app.state
    state.started_at = time.time()
    state.status = "loading"
    state.failure = None
    state.engine = state.voices = state.speech = None
    state.gate = AdmissionGate(settings.MAX_CONCURRENT_REQUESTS, settings.MAX_QUEUE_SIZE, settings.QUEUE_TIMEOUT)
    state.cache = SpeakerCache(settings.SPEAKER_CACHE_MAX_SIZE, settings.SPEAKER_CACHE_TTL)
    state.metrics = Metrics(_live_figures(app))
    state.sessions = SessionRegistry(
        settings.SESSION_HISTORY_SIZE,
        settings.SESSION_HISTORY_TTL,
        on_finish=[log_session, state.metrics.observe_session],
    )
    bring_up = asyncio.create_task(_bring_up(app, settings, state.preset_engine))
    try:
        yield
    finally:
        begin_draining(app)
        bring_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bring_up
        for session in state.sessions.live():
            session.error = session.error or "server shutting down"
            session.cancel_event.set()
        if state.engine is not None:
            await anyio.to_thread.run_sync(state.engine.shutdown)


def _live_figures(app: FastAPI) -> LiveFigures:
    state = app.state

    def cache() -> tuple[int, int, int, int]:
        stats = state.cache.stats()
        return stats.size, stats.hits, stats.misses, stats.evictions

    return LiveFigures(
        in_flight=lambda: state.gate.in_flight,
        queued=lambda: state.gate.queued,
        capacity=lambda: state.gate.capacity,
        cache=cache,
        model_load_seconds=lambda: state.engine.loaded.load_seconds if state.engine is not None else None,
    )


def begin_draining(app: FastAPI) -> None:
    """Refuse new work (503) while running streams finish."""
    if app.state.status != "failed":
        app.state.status = "draining"
    app.state.gate.draining = True


def create_app(settings: Settings | None = None, engine: TTSEngine | None = None) -> FastAPI:
    """The app; the model loads in the lifespan (or `engine` is used as given)."""
    settings = settings or get_settings()
    configure_logging(settings.DEBUG)
    # Swagger UI's files are served by the app itself (fastapi-offline): no CDN, so it works offline too.
    app = FastAPIOffline(
        title="XTTS Streaming Server",
        description=DESCRIPTION,
        version="1.0.0",
        docs_url="/",
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.preset_engine = engine
    register_exception_handlers(app)
    app.include_router(router)
    app.add_middleware(UploadLimitMiddleware, limit_bytes=int(settings.MAX_UPLOAD_MB * 1_000_000))
    app.add_middleware(RequestCountMiddleware)
    return app
