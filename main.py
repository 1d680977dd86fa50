"""The FastAPI app: created by `create_app`, with the model and every service owned by its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api.errors import register_exception_handlers
from api.middleware.allowed_hosts import HostNames, check_hosts
from api.middleware.api_keys import ApiKeyMiddleware, open_paths
from api.middleware.cors import allow_origins
from api.middleware.origin_guard import guard_writes
from api.middleware.replica_header import ReplicaHeaderMiddleware
from api.middleware.request_counting import RequestCountMiddleware
from api.middleware.upload_limit import UploadLimitMiddleware
from api.routes import router
from api.state import AppState, ModelServices, XttsApiState, attach
from api.wyoming.server import WyomingServer
from config import Settings, get_settings
from services.admission import AdmissionGate
from services.cache import SpeakerCache
from services.client_settings import ClientSettingsFile
from services.engine.model_loader import ModelChoice, pick_device
from services.engine.plan import BatchLimits
from services.engine.protocol import Engine
from services.engine.tts import TTSEngine
from services.errors import ModelUnavailable
from services.jobs.runner import JobRunner
from services.jobs.service import JobLimits, JobService
from services.jobs.speaker import LocalSpeaker
from services.jobs.store import JobStore
from services.metrics import LiveFigures, Metrics
from services.peers import NO_PEERS, LocalAnswers, Peers, SessionDirectory
from services.reference_files import ReferenceFolder
from services.sessions import SHUTTING_DOWN, SessionRegistry, log_session
from services.speech import SpeechLimits, SpeechService
from services.utils import configure_logging
from services.voice_store import VoiceStore
from services.voices import CloneLimits, VoiceService

logger = logging.getLogger("xtts_server")

XTTS_API_SETTINGS_FILE = ".xtts-api-settings.json"  # in VOICES_DIR: shared by every replica on that folder

DESCRIPTION = """
Streams speech from Coqui XTTS v2 as it is generated: clone a voice from a few seconds of audio,
save it, and stream it in 17 languages. `POST /tts_stream` answers with a WAV header at once and
then 16-bit mono PCM at 24 kHz chunk by chunk. Errors are JSON: `{"error", "message", "details"}`.
"""


def _build_state(settings: Settings, peers: Peers) -> AppState:
    gate = AdmissionGate(settings.MAX_CONCURRENT_REQUESTS, settings.MAX_QUEUE_SIZE, settings.QUEUE_TIMEOUT)
    cache = SpeakerCache(settings.SPEAKER_CACHE_MAX_SIZE, settings.SPEAKER_CACHE_TTL)
    metrics = Metrics(_live_figures(gate, cache), replica=peers.replica)
    sessions = SessionRegistry(
        settings.SESSION_HISTORY_SIZE,
        settings.SESSION_HISTORY_TTL,
        on_finish=[log_session, metrics.observe_session],
        replica=peers.replica,
    )
    return AppState(
        settings=settings, gate=gate, cache=cache, sessions=sessions, metrics=metrics, peers=peers,
        directory=SessionDirectory(sessions, peers),
        xtts_api=XttsApiState(ClientSettingsFile(settings.VOICES_DIR / XTTS_API_SETTINGS_FILE)),
    )  # fmt: skip


def _live_figures(gate: AdmissionGate, cache: SpeakerCache) -> LiveFigures:
    def cache_figures() -> tuple[int, int, int, int]:
        stats = cache.stats()
        return stats.size, stats.hits, stats.misses, stats.evictions

    return LiveFigures(
        in_flight=lambda: gate.in_flight, queued=lambda: gate.queued, capacity=lambda: gate.capacity,
        cache=cache_figures,
    )  # fmt: skip


def model_choice(settings: Settings) -> ModelChoice:
    """The model settings, as the engine's loader takes them."""
    return ModelChoice(
        dummy=settings.DUMMY_MODEL,
        checkpoint_dir=settings.CUSTOM_MODEL_PATH,
        use_cpu=settings.USE_CPU,
        num_threads=settings.NUM_THREADS,
        gpt_precision=settings.GPT_PRECISION,
        vocoder_precision=settings.VOCODER_PRECISION,
        vocoder_backend=settings.VOCODER_BACKEND,
    )


# Beyond these a bigger batch adds little throughput (CPU: weight reads are shared already at 8 rows;
# measured in `make bench`) while each stream slows down.
_BATCH_CAP = {"cpu": 8, "cuda": 32}


def batch_limits(settings: Settings) -> BatchLimits:
    """How the engine batches streams (MAX_BATCH_SIZE, STREAM_BUFFER_SECONDS)."""
    size = settings.MAX_BATCH_SIZE
    if size is None:
        size = min(settings.MAX_CONCURRENT_REQUESTS, _BATCH_CAP.get(pick_device(settings.USE_CPU).type, 8))
    return BatchLimits(max_batch_size=size, buffer_seconds=settings.STREAM_BUFFER_SECONDS)


def _studio_speakers_json(engine: Engine) -> bytes:
    """coqui's /studio_speakers answer: every built-in speaker with its latents as lists."""
    return json.dumps({name: latents.as_lists() for name, latents in engine.builtin_speakers.items()}).encode()


async def _bring_up(state: AppState, engine: Engine) -> None:
    """Warm the model, then open the voice store and the services."""
    settings = state.settings
    loaded = engine.loaded
    state.metrics.model_load_seconds.set(loaded.load_seconds)
    logger.info(
        "model %s on %s loaded in %.1f s%s", loaded.source, engine.device, loaded.load_seconds,
        " (DUMMY: random weights, noise not speech)" if loaded.dummy else "",
    )  # fmt: skip
    logger.info("warm-up generation took %.2f s", await anyio.to_thread.run_sync(engine.warm_up))
    scheduler = engine.scheduler
    state.gate.fit_to(scheduler.limits.max_batch_size)  # the gate's queue is the only one
    state.metrics.figures.batch = lambda: (scheduler.running, scheduler.limits.max_batch_size, scheduler.steps)
    store = VoiceStore(settings.VOICES_DIR, engine.latent_dim, engine.embedding_dim)
    if removed := await anyio.to_thread.run_sync(store.remove_leftovers):
        logger.warning("removed %d half-written files (voices, settings) from %s", removed, settings.VOICES_DIR)
    clone_limits = CloneLimits(settings.MAX_CLONE_FILES, settings.MAX_CLONE_SECONDS)
    references = ReferenceFolder(settings.REFERENCE_AUDIO_DIR, int(settings.MAX_UPLOAD_MB * 1_000_000))
    voices = VoiceService(engine, store, state.cache, state.gate, clone_limits, references)
    await voices.preload(settings.preload_voice_ids)
    limits = SpeechLimits(settings.MAX_TEXT_LENGTH, settings.STREAM_FIRST_CHUNK_TOKENS, settings.MAX_AUDIO_TOKENS)
    speech = SpeechService(engine, voices, state.sessions, state.gate, limits, state.directory)
    state.model = ModelServices(
        engine=engine,
        voices=voices,
        speech=speech,
        studio_speakers_json=await anyio.to_thread.run_sync(_studio_speakers_json, engine),
        jobs=await _open_jobs(state, engine, speech, limits),
    )
    state.status = "ready"
    # a wildcard bind is reached by a name (ALLOWED_HOSTS): show the one every machine answers to
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.HOST, settings.HOST)
    shown = f"[{shown}]" if ":" in shown else shown
    logger.info("ready: http://%s:%d/ (Swagger UI)", shown, settings.PORT)


async def _open_jobs(state: AppState, engine: Engine, speech: SpeechService, limits: SpeechLimits) -> JobService:
    """The job store under DATA_DIR and its runner, started: jobs a stopped server left resume now."""
    settings = state.settings
    data_dir = settings.data_dir
    store = await anyio.to_thread.run_sync(JobStore, data_dir / "jobs.sqlite3")
    rows = settings.JOB_ROWS or engine.scheduler.limits.max_batch_size
    speaker = state.peers.job_speaker(LocalSpeaker(engine, speech.voices, limits))  # a cluster: any replica
    runner = JobRunner(store, speaker, data_dir, rows, state.metrics.job_audio_seconds.inc)
    state.metrics.figures.jobs = store.count_by_status
    runner.start()
    job_limits = JobLimits(settings.MAX_JOB_CHARS, settings.MAX_ACTIVE_JOBS)
    return JobService(store, runner, speech, engine, data_dir, job_limits)


def _default_exit() -> None:
    # Under plain `uvicorn --factory`: stop the server as Ctrl-C would (run.py passes its own).
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    request_exit: Callable[[], None] = _default_exit,
    peers: Peers = NO_PEERS,
    wait_for_model: bool = False,
) -> FastAPI:
    """The app. The lifespan loads the model, or uses `engine` as given (and then leaves it running:
    its owner shuts it down). `request_exit` is called when start-up fails. As one replica of several
    (cluster/), `peers` reaches the others, and `wait_for_model` holds the lifespan's start-up until the
    model is ready (or raises), so the router sends this replica nothing before it can serve."""
    settings = settings or get_settings()
    configure_logging(settings.DEBUG)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = _build_state(settings, peers)
        attach(app, state)
        # Wyoming (Home Assistant) beside HTTP, on the same state; it answers "loading" until the model is ready
        wyoming = WyomingServer(state) if settings.WYOMING_PORT is not None else None
        if wyoming is not None:
            await wyoming.start()
        owned_engine: Engine | None = None  # shut down here; an engine passed in belongs to its caller

        async def bring_up() -> None:
            nonlocal owned_engine
            try:
                ready_engine = engine
                if ready_engine is None:  # loaded on its own model thread: see TTSEngine.start
                    ready_engine = owned_engine = await anyio.to_thread.run_sync(
                        TTSEngine.start, model_choice(settings), batch_limits(settings)
                    )
                await _bring_up(state, ready_engine)
            except ModelUnavailable as error:
                _fail(state, f"No model: {error}", request_exit)
            except Exception as error:
                logger.exception("start-up failed")
                _fail(state, f"Start-up failed: {type(error).__name__}: {error}", request_exit)

        starting = asyncio.create_task(bring_up())
        await peers.start(LocalAnswers(state.sessions, state.metrics.render))
        if wait_for_model:
            await starting
            if state.status != "ready":
                await peers.stop()
                raise RuntimeError(state.failure or "start-up failed")
        try:
            yield
        finally:
            state.begin_draining()
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            if wyoming is not None:  # its requests get the grace HTTP streams got while uvicorn waited for them
                await wyoming.drain()
            for stream in state.sessions.live():
                stream.cancel(SHUTTING_DOWN)
            if wyoming is not None:  # after the cancels: its sessions record the shutdown, not a client leaving
                await wyoming.stop()
            # Streams whose response task uvicorn cancelled close in the background: let them record their
            # outcome (and log it) while the model thread can still let go of them.
            if not await state.sessions.wait_all_finished(timeout_s=5.0):
                logger.warning("shutting down with %d streams still open", len(state.sessions.live()))
            await peers.stop()
            if state.model is not None:  # before the engine: its sentences end now and resume at the next start
                await state.model.jobs.close()
            if owned_engine is not None:
                await anyio.to_thread.run_sync(owned_engine.shutdown)

    # Swagger UI's files are served by the app itself (fastapi-offline): no CDN, so it works offline too.
    app = FastAPIOffline(
        title="XTTS Streaming Server",
        description=DESCRIPTION,
        version="1.0.0",
        docs_url="/",
        redoc_url=None,
        lifespan=lifespan,
    )
    register_exception_handlers(app)
    app.include_router(router)
    # Added innermost first, so the outermost is the last line. From the outside in: allowed hosts (400 for a
    # Host not ours, before anything else sees the request) > CORS (answers preflights) > replica header
    # (cluster only) > request counting > origin guard (403) > API keys (401) > upload limit (413).
    # See api/middleware/__init__.py.
    keys, admin_keys = settings.api_keys()
    hosts = HostNames.of(settings.allowed_hosts)
    app.add_middleware(UploadLimitMiddleware, limit_bytes=int(settings.MAX_UPLOAD_MB * 1_000_000))
    app.add_middleware(
        ApiKeyMiddleware,
        keys=keys,
        admin_keys=admin_keys,
        is_open=open_paths(settings.METRICS_NEED_KEY, settings.DOCS_NEED_KEY),
    )
    guard_writes(app, settings.cors_allow_origins, hosts)
    app.add_middleware(RequestCountMiddleware)
    if peers.replica is not None:
        app.add_middleware(ReplicaHeaderMiddleware, replica=peers.replica)
    allow_origins(app, settings.cors_allow_origins)
    check_hosts(app, hosts, settings.HOST)
    _warn_if_exposed(settings, bool(keys))
    return app


def _warn_if_exposed(settings: Settings, keys_on: bool) -> None:
    if settings.WYOMING_PORT is not None and not _is_loopback(settings.HOST):
        logger.warning(
            "Wyoming listens on %s:%d with no authentication (the protocol has none): anyone who can reach that port "
            "can speak with every voice; let only Home Assistant reach it (see README, Home Assistant)",
            settings.HOST, settings.WYOMING_PORT,
        )  # fmt: skip
    if not keys_on and not _is_loopback(settings.HOST):
        logger.warning(
            "listening on %s with no API keys: anyone who can reach port %d can use the server and delete "
            "its voices; set API_KEYS (see README, Security)", settings.HOST, settings.PORT,
        )  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(state: AppState, message: str, request_exit: Callable[[], None]) -> None:
    logger.critical(message)
    state.status = "failed"
    state.failure = message
    request_exit()
