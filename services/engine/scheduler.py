"""Continuous batching: plan, step, deliver, one model-thread job per step.

Each step runs as a job on the model thread, so other model work (cloning, warm-up) still gets its turn
between steps. A step asks the policy (`plan.plan`) what to do, carries the plan out with the decoder
(leave, join, prefill, one batched forward pass for every stream that steps) and posts each stream's
audio and events to its channel. A step's prefill can take a few hundred ms: a live newcomer that
arrives meanwhile, and would step first if the plan were made again, gets that plan before the step's
decode runs (the decode waits one plan; the newcomer does not wait for it). The scheduler keeps only
its own facts per stream (`_Scheduled`); the decoder owns the rows, the stream owns its request and channel.

What each stream hears depends only on its own prompt, cache row, settings and random generator:
the decoder guarantees that (tests/test_batching.py proves it); this module only decides who steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import torch

from services.engine.pcm import to_pcm16
from services.engine.plan import BatchLimits, StepPlan, StreamView, plan
from services.engine.stream import (
    EngineStream,
    Preempted,
    SentenceDone,
    StreamEnded,
    StreamReport,
    SynthesisRequest,
)

logger = logging.getLogger(__name__)


@dataclass
class RowOutput:
    """What one step produced for one stream."""

    chunks: list[torch.Tensor] = field(default_factory=list)
    """Waveform chunks (float, 24 kHz), in order."""
    sentence_done: bool = False
    finished: bool = False
    """The last sentence is done: the stream has nothing more to say."""
    error: Exception | None = None
    """This row failed (its numbers went bad): it leaves, the others step on."""


class Decoder(Protocol):
    """The model's part of a step (model thread only); it owns each stream's row."""

    def join(self, request: SynthesisRequest) -> None:
        """Take the stream in (its first sentence's prompt is prefilled by `prefill`)."""

    def prompt_left(self, request: SynthesisRequest) -> tuple[int, int]:
        """(prompt positions it needs before it can step, positions of its next sentence's prompt still ahead)."""
        ...

    def prefill(self, chunks: Sequence[tuple[SynthesisRequest, int | None]]) -> None:
        """Prefill the next `positions` positions (None: all) of each stream's pending prompt, together."""

    def step(self, requests: list[SynthesisRequest]) -> list[RowOutput]:
        """One token for each of `requests` (all of them in the batch), in one forward pass."""
        ...

    def leave(self, request: SynthesisRequest) -> StreamReport:
        """Free the stream's row; what it cost and sampled."""
        ...


@dataclass
class _Scheduled:
    """The scheduler's own facts about a stream in the batch (model thread only)."""

    steps_before_audio: int = 0
    encode_s: float = 0.0


class BatchScheduler:
    """Carries out `plan` one model-thread step at a time; see the module's docstring."""

    def __init__(
        self, decoder: Decoder, submit: Callable[[Callable[[], None]], Future[None]], limits: BatchLimits
    ) -> None:
        self.decoder = decoder
        self.limits = limits
        self._submit = submit
        self._lock = threading.Lock()  # guards _waiting and _step_queued (the event loop adds, the model thread takes)
        self._waiting: list[EngineStream] = []
        self._step_queued = False
        self._running: dict[EngineStream, _Scheduled] = {}  # model thread only; in joining order
        self.steps = 0
        self.peak_batch = 0
        self.preempted = 0
        """Background streams that gave their row to a live one (and were started over by their owner)."""

    @property
    def running(self) -> int:
        return len(self._running)

    def add(self, stream: EngineStream) -> None:
        """From the event loop: the stream joins at the next step."""
        with self._lock:
            self._waiting.append(stream)
            self._queue_step()

    def wake(self) -> None:
        """From the event loop: something changed (a reader took audio, a cancel): make sure a step comes."""
        with self._lock:
            self._queue_step()

    def close(self) -> None:
        """End every stream still here, once the model thread has stopped (engine shutdown)."""
        with self._lock:
            stranded, self._waiting = [*self._running, *self._waiting], []
            self._running = {}
        for stream in stranded:
            stream.channel.post(StreamEnded(StreamReport()))

    def _queue_step(self) -> None:
        if not self._step_queued:
            self._step_queued = True
            self._submit(self._step)

    def _step(self) -> None:
        with self._lock:
            self._step_queued = False
        try:
            more = self._advance()
        except Exception as error:  # a bug here must not leave every listener waiting forever
            logger.exception("the batch scheduler failed; failing every stream")
            with self._lock:
                stranded, self._waiting = [*self._running, *self._waiting], []
            for stream in stranded:
                self._fail(stream, error)
            return
        if more:
            self.wake()

    def _advance(self) -> bool:
        """One step: plan, carry out, deliver. Returns whether another is needed now."""
        with self._lock:
            waiting = list(self._waiting)
        decision = plan(
            [self._view(stream, facts) for stream, facts in self._running.items()],
            [self._waiting_view(stream) for stream in waiting],
            self.limits,
        )
        with self._lock:
            taken = set(decision.leave) | set(decision.join)
            self._waiting = [stream for stream in self._waiting if stream not in taken]
        self._carry_out(decision)
        stepping = [stream for stream in decision.step if stream in self._running]  # a failed prefill left
        if stepping and decision.prefill and self._newcomer_goes_first(decision, stepping):
            return True  # a live newcomer came during this step's prefill: plan again, so it steps first
        if stepping:
            self._decode(stepping)
        return not decision.idle

    def _newcomer_goes_first(self, decision: StepPlan[EngineStream], stepping: list[EngineStream]) -> bool:
        """Whether a live stream arrived while this step prefilled and would step before `stepping` if the plan
        were made now: before background streams always; before live ones under first-chunk priority, when
        it has a row to join. A prefill can take a few hundred ms; the decode after it waits one plan."""
        with self._lock:
            arrived = [
                stream
                for stream in self._waiting
                if not stream.request.background and stream not in decision.still_waiting
            ]
        if not arrived:
            return False
        if all(stream.request.background for stream in stepping):
            return True
        live_rows = sum(not stream.request.background for stream in self._running)
        return self.limits.first_chunk_priority_steps > 0 and live_rows < self.limits.max_batch_size

    def _waiting_view(self, stream: EngineStream) -> StreamView[EngineStream]:
        cancelled = stream.request.cancel.is_set()
        prompt_left = 0 if cancelled else self.decoder.prompt_left(stream.request)[0]
        return StreamView(stream, cancelled, prompt_left=prompt_left, background=stream.request.background)

    def _view(self, stream: EngineStream, facts: _Scheduled) -> StreamView[EngineStream]:
        channel = stream.channel
        prompt_left, lookahead_left = self.decoder.prompt_left(stream.request)
        return StreamView(
            stream,
            cancelled=stream.request.cancel.is_set(),
            prompt_left=prompt_left,
            lookahead_left=lookahead_left,
            buffered_seconds=channel.buffered_seconds(),
            has_audio=channel.produced_samples > 0,
            steps_before_audio=facts.steps_before_audio,
            background=stream.request.background,
        )

    def _carry_out(self, decision: StepPlan[EngineStream]) -> None:
        for stream in decision.leave:
            self._leave(stream)
        for stream in decision.preempt:
            self.preempted += 1
            self._leave(stream, Preempted("a live stream needed its row"))
        for stream in decision.join:
            self._running[stream] = _Scheduled()
            self.decoder.join(stream.request)
        self.peak_batch = max(self.peak_batch, len(self._running))
        if decision.prefill:
            self._prefill([(chunk.key, chunk.positions) for chunk in decision.prefill])

    def _prefill(self, chunks: list[tuple[EngineStream, int | None]]) -> None:
        """The step's prefill chunks in one pass; if that fails, each alone, so only a prompt that fails alone fails."""
        if len(chunks) > 1:
            try:
                self.decoder.prefill([(stream.request, positions) for stream, positions in chunks])
                return
            except Exception:
                logger.warning("a batched prefill of %d prompts failed; trying each alone", len(chunks), exc_info=True)
        for stream, positions in chunks:
            try:
                self.decoder.prefill([(stream.request, positions)])
            except Exception as error:
                logger.exception("prefill failed")
                self._fail(stream, error)

    def _decode(self, stepping: list[EngineStream]) -> None:
        for stream in stepping:
            if stream.channel.produced_samples == 0:
                self._running[stream].steps_before_audio += 1
        try:
            outputs = self.decoder.step([stream.request for stream in stepping])
        except Exception as error:
            logger.exception("a batched GPT step failed; failing its %d streams", len(stepping))
            for stream in stepping:
                self._fail(stream, error)
            return
        self.steps += 1
        for stream, output in zip(stepping, outputs, strict=True):
            self._deliver(stream, output)

    def _deliver(self, stream: EngineStream, output: RowOutput) -> None:
        facts = self._running[stream]
        if output.error is not None:
            logger.warning("a stream's numbers went bad; it leaves the batch: %s", output.error)
            self._fail(stream, output.error)
            return
        for chunk in output.chunks:
            started = time.perf_counter()
            pcm = to_pcm16(chunk)
            facts.encode_s += time.perf_counter() - started
            stream.channel.post_audio(pcm)
        if output.sentence_done:
            stream.channel.post(SentenceDone())
            if output.finished or stream.request.cancel.is_set():
                self._leave(stream)

    def _fail(self, stream: EngineStream, error: Exception) -> None:
        self._leave(stream, error)

    def _leave(self, stream: EngineStream, error: Exception | None = None) -> None:
        facts = self._running.pop(stream, None)
        if facts is None:  # cancelled before it joined
            stream.channel.post(StreamEnded(StreamReport(), error))
            return
        report = self.decoder.leave(stream.request)
        report = StreamReport(report.timings, report.audio_tokens, report.encode_s + facts.encode_s)
        stream.channel.post(StreamEnded(report, error))
