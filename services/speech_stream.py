"""One speech request from the queue to its last chunk: the one owner of a stream's lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from services.admission import AdmissionGate
from services.engine.pcm import pcm_seconds
from services.engine.synthesis_stream import SynthesisStream
from services.errors import ServiceError
from services.sessions import SessionRegistry, StreamSession, StreamState

logger = logging.getLogger(__name__)

# Starts the engine's synthesis once admitted; the event is this stream's cancel signal.
StartSynthesis = Callable[[threading.Event], SynthesisStream]


class SpeechStream:
    """Owns a request's session record, its admission slot, its cancellation and its ending.

    `admit()` waits for a slot; then iterate for 16-bit PCM chunks inside `async with stream:`, which
    closes it whatever happens. `cancel(reason)` may come from anywhere on the event loop (a client
    leaving, /stream_cancel, shutdown): the first reason is the one recorded. Closing waits until the
    model thread is done with the stream, then frees the slot and records the outcome, once.
    """

    def __init__(
        self,
        session: StreamSession,
        seed: int,
        start_synthesis: StartSynthesis,
        gate: AdmissionGate,
        registry: SessionRegistry,
    ) -> None:
        self.session = session
        self.seed = seed
        self._start_synthesis = start_synthesis
        self._gate = gate
        self._registry = registry
        self._cancel = threading.Event()  # read by the model thread between tokens
        self._cancel_reason: str | None = None
        self._synthesis: SynthesisStream | None = None
        self._admitted_at: float | None = None
        self._closing: asyncio.Task[None] | None = None

    def cancel(self, reason: str) -> None:
        """Stop generating within one model chunk; the first reason given is the one recorded."""
        if self._cancel_reason is None:
            self._cancel_reason = reason
        self._cancel.set()

    async def admit(self) -> None:
        """Wait in the queue for a slot, then start generating. On refusal (429, 503) or cancellation
        the stream is closed, recording why, and the error is raised."""
        try:
            waited_s = await self._gate.acquire()
        except BaseException as error:
            await self.close(error)
            raise
        self._admitted_at = time.perf_counter()
        self.session.add_timing("queue", waited_s)
        self.session.state = StreamState.GENERATING
        self.session.started_at = time.time()
        self._synthesis = self._start_synthesis(self._cancel)

    async def __aenter__(self) -> SpeechStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close(error)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        synthesis = self._synthesis
        if synthesis is None:
            raise RuntimeError("iterate a SpeechStream only after admit()")
        session = self.session
        async for pcm in synthesis:
            if session.first_audio_at is None:
                session.first_audio_at = time.time()
            session.audio_seconds += pcm_seconds(len(pcm))
            session.chunks_done = synthesis.sentences_done
            if logger.isEnabledFor(logging.DEBUG):  # stage timings come once, in the session's final log line
                logger.debug(
                    "session=%s chunk audio=%.3fs total=%.2fs at=%.3fs buffered=%.2fs",
                    session.id, pcm_seconds(len(pcm)), session.audio_seconds, time.time() - session.created_at,
                    synthesis.buffered_seconds,
                )  # fmt: skip
            yield pcm

    @property
    def complete(self) -> bool:
        """Everything planned was spoken and handed over (false after a cancel or before the end)."""
        return self._synthesis is not None and self._synthesis.complete

    def token_usage(self) -> tuple[int, int]:
        """(text tokens read, audio tokens generated) so far."""
        synthesis = self._synthesis
        return (synthesis.text_tokens, len(synthesis.audio_tokens)) if synthesis is not None else (0, 0)

    def add_timing(self, stage: str, seconds: float) -> None:
        """Time spent on this stream outside the engine (encoding, sending)."""
        self.session.add_timing(stage, seconds)

    def count_sent(self, byte_count: int) -> None:
        self.session.bytes_sent += byte_count

    async def close(self, error: BaseException | None = None) -> None:
        """Idempotent; completes even if the caller is cancelled meanwhile (the slot must come back)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(error))
        await asyncio.shield(self._closing)

    async def _close(self, error: BaseException | None) -> None:
        synthesis = self._synthesis
        # Everything spoken and handed over counts as completed, even if a cancel arrived after the end.
        completed = error is None and synthesis is not None and synthesis.complete
        if not completed:
            self._cancel.set()
        if synthesis is not None:
            await synthesis.wait_idle()
            timings = synthesis.timings
            for stage, seconds in (
                ("prefill", timings.prefill_s),
                ("gpt_steps", timings.gpt_steps_s),
                ("vocoder", timings.vocoder_s),
                ("encode", synthesis.encode_s),
            ):
                self.session.add_timing(stage, seconds)
            self.session.chunks_done = synthesis.sentences_done
        if self._admitted_at is not None:
            self._gate.release(time.perf_counter() - self._admitted_at)
        self._registry.finish(self.session, *self._outcome(error, completed))

    def _outcome(self, error: BaseException | None, completed: bool) -> tuple[StreamState, str | None]:
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]  # a task group (the response's disconnect watcher) wraps what failed
        if completed:
            return StreamState.COMPLETED, None
        if self._cancel_reason is not None:
            return StreamState.CANCELLED, self._cancel_reason
        if error is None or isinstance(error, asyncio.CancelledError):
            return StreamState.CANCELLED, "stopped before the end"
        if isinstance(error, ServiceError):
            return StreamState.FAILED, error.message
        return StreamState.FAILED, f"{type(error).__name__}: {error}"
