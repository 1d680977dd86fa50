"""Continuous batching: every stream that is generating advances one GPT token per model-thread step.

The scheduler runs as a chain of jobs on the model thread, one step per job, so other model work
(cloning, warm-up) still gets its turn between steps. A step first drops cancelled streams, lets
newcomers join (their prefill runs now, between steps, so they need not wait for anyone's sentence to
end), then asks the decoder for one token of every running stream that is not paused, in one batched
forward pass. A stream that has `buffer_seconds` of audio its client has not read yet pauses (it keeps
its place in the batch) and resumes when the client catches up; the others go on.

Streams that have not made their first chunk yet step on their own (a few steps: one token plus the
vocoder's lookahead): a step of one row costs a third of a step of eight on a CPU, so a newcomer's
first audio comes nearly as fast as on an idle server, while the others pause for about half a second.

What each stream hears depends only on its own prompt, cache row, settings and random generator:
the decoder guarantees that (tests/test_batching.py proves it); this module only decides who steps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from services.engine.gpt_sampler import StepTimings
from services.engine.latents import VoiceLatents
from services.engine.pcm import OUTPUT_SAMPLE_RATE, to_pcm16
from services.engine.params import GenerationParams
from services.engine.text import Sentence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchLimits:
    """How many streams decode together, and how far one may run ahead of its client."""

    max_batch_size: int = 8
    buffer_seconds: float = 10.0
    first_chunk_priority_steps: int = 32
    """Steps a newcomer may take alone (with other newcomers) before its first chunk; 0 turns it off."""


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SENTENCE_DONE = _Marker("SENTENCE_DONE")
"""Outbox item: the stream's current sentence has been spoken to its end."""
STREAM_END = _Marker("STREAM_END")
"""Outbox item: nothing more will come (all spoken, or cancelled)."""


class StreamWork:
    """One stream as the scheduler and decoder see it; created on the event loop that reads its outbox.

    The model thread writes `timings`, `audio_tokens`, `encode_s`, `sentence_index` and `produced_samples`;
    the event loop writes `consumed_samples`. Items reach the loop through `outbox` (PCM bytes,
    SENTENCE_DONE, STREAM_END, or the exception that ended the stream).
    """

    def __init__(
        self,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        cancel: threading.Event,
        device: torch.device,
    ) -> None:
        self.sentences = sentences
        self.voice = voice
        self.params = params
        self.cancel = cancel
        self.generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
        self.timings = StepTimings()
        self.audio_tokens: list[int] = []
        """Every audio token sampled, all sentences in order (the stop tokens included)."""
        self.encode_s = 0.0
        self.sentence_index = 0
        self.decoding: Any = None
        """The decoder's state for this stream (model thread only)."""
        self.produced_samples = 0
        self.consumed_samples = 0
        self.steps_before_audio = 0
        self.paused = False
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.released = asyncio.Event()
        """Set once the model thread will not touch this stream again."""
        self._loop = asyncio.get_running_loop()

    @property
    def sentence(self) -> Sentence:
        return self.sentences[self.sentence_index]

    def buffered_seconds(self) -> float:
        """Audio made but not yet taken by the client."""
        return (self.produced_samples - self.consumed_samples) / OUTPUT_SAMPLE_RATE

    def deliver_audio(self, wav: torch.Tensor) -> None:
        started = time.perf_counter()
        pcm = to_pcm16(wav)
        self.encode_s += time.perf_counter() - started
        self.produced_samples += len(pcm) // 2
        self._send(pcm)

    def deliver(self, item: object) -> None:
        self._send(item)

    def mark_released(self) -> None:
        self._call(self.released.set)

    def _send(self, item: object) -> None:
        self._call(self.outbox.put_nowait, item)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed (shutdown): nobody is listening any more
            pass


@dataclass
class StepOutput:
    """What one step produced for one stream."""

    chunks: list[torch.Tensor] = field(default_factory=list)
    """Waveform chunks (float, 24 kHz), in order."""
    sentence_done: bool = False


class Decoder(Protocol):
    """The model's part of a step (model thread only)."""

    def begin_sentence(self, work: StreamWork) -> None:
        """Prefill `work.sentence`; the stream joins the batch on its first sentence."""

    def step(self, works: list[StreamWork]) -> list[StepOutput]:
        """One token for each of `works` (all of them in the batch), in one forward pass."""
        ...

    def release(self, work: StreamWork) -> None:
        """The stream leaves the batch: free its cache."""


class BatchScheduler:
    """Decides, one model-thread step at a time, which streams advance; see the module's docstring."""

    def __init__(
        self, decoder: Decoder, submit: Callable[[Callable[[], None]], Future[None]], limits: BatchLimits
    ) -> None:
        self.decoder = decoder
        self.limits = limits
        self._submit = submit
        self._lock = threading.Lock()  # guards _pending and _step_queued (the event loop adds, the model thread takes)
        self._pending: list[StreamWork] = []
        self._step_queued = False
        self._running: list[StreamWork] = []  # model thread only
        self.steps = 0
        self.peak_batch = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def add(self, work: StreamWork) -> None:
        """From the event loop: the stream joins at the next step."""
        with self._lock:
            self._pending.append(work)
            self._queue_step()

    def wake(self) -> None:
        """From the event loop: something changed (a paused client read, a cancel): make sure a step comes."""
        with self._lock:
            self._queue_step()

    def close(self) -> None:
        """End every stream still here, once the model thread has stopped (engine shutdown)."""
        with self._lock:
            stranded, self._pending = self._running + self._pending, []
            self._running = []
        for work in stranded:
            work.decoding = None
            work.deliver(STREAM_END)
            work.mark_released()

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
                stranded, self._pending = self._running + self._pending, []
            for work in stranded:
                self._fail(work, error)
            return
        if more:
            self.wake()

    def _advance(self) -> bool:
        """One step. Returns whether another is needed now (someone can advance)."""
        for work in [work for work in self._running if work.cancel.is_set()]:
            self._leave(work)
        with self._lock:
            dropped = [work for work in self._pending if work.cancel.is_set()]
            room = self.limits.max_batch_size - len(self._running)
            joining = [work for work in self._pending if not work.cancel.is_set()][: max(room, 0)]
            self._pending = [work for work in self._pending if work not in dropped and work not in joining]
            waiting = bool(self._pending)
        for work in dropped:
            work.deliver(STREAM_END)
            work.mark_released()
        for work in joining:
            self._running.append(work)
            self._begin_sentence(work)
        self.peak_batch = max(self.peak_batch, len(self._running))

        stepping = [work for work in self._running if not self._pause(work)]
        if not stepping:
            return False
        starting = [work for work in stepping if self._starting(work)]
        if starting:
            stepping = starting
            for work in starting:
                work.steps_before_audio += 1
        try:
            outputs = self.decoder.step(stepping)
        except Exception as error:
            logger.exception("a batched GPT step failed; failing its %d streams", len(stepping))
            for work in stepping:
                self._fail(work, error)
            return bool(self._running) or waiting
        self.steps += 1
        for work, output in zip(stepping, outputs, strict=True):
            for chunk in output.chunks:
                work.deliver_audio(chunk)
            if output.sentence_done:
                work.deliver(SENTENCE_DONE)
                work.sentence_index += 1
                if work.sentence_index == len(work.sentences) or work.cancel.is_set():
                    self._leave(work)
                else:  # the next sentence, without leaving the batch
                    self._begin_sentence(work)
        return any(not work.paused for work in self._running) or waiting

    def _begin_sentence(self, work: StreamWork) -> None:
        try:
            self.decoder.begin_sentence(work)
        except Exception as error:
            logger.exception("prefill failed")
            self._fail(work, error)

    def _starting(self, work: StreamWork) -> bool:
        """Still waiting for its first chunk, within the priority it may take for it."""
        return work.produced_samples == 0 and work.steps_before_audio < self.limits.first_chunk_priority_steps

    def _pause(self, work: StreamWork) -> bool:
        # Paused first, then checked: a client that reads meanwhile either sees `paused` and wakes us,
        # or its read is seen here.
        work.paused = True
        if work.buffered_seconds() < self.limits.buffer_seconds:
            work.paused = False
        return work.paused

    def _fail(self, work: StreamWork, error: Exception) -> None:
        work.deliver(error)
        self._leave(work)

    def _leave(self, work: StreamWork) -> None:
        if work in self._running:
            self._running.remove(work)
            self.decoder.release(work)
        work.deliver(STREAM_END)
        work.mark_released()
