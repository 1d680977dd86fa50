"""A request's sentences as 16-bit PCM chunks, made by the batch scheduler on the model thread."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import torch

from services.engine.gpt_sampler import StepTimings
from services.engine.latents import VoiceLatents
from services.engine.scheduler import SENTENCE_DONE, STREAM_END, BatchScheduler, StreamWork
from services.engine.params import GenerationParams
from services.engine.text import Sentence


class SynthesisStream:
    """Iterate for PCM chunks; `cancel` (set by the owner) stops it within one chunk.

    Generation starts when iteration does: the stream joins the scheduler's batch and runs ahead of its
    reader by at most `BatchLimits.buffer_seconds` of audio, so a slow client pauses only its own stream.
    """

    def __init__(
        self,
        scheduler: BatchScheduler,
        device: torch.device,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> None:
        self.sentences_done = 0
        self._scheduler = scheduler
        self._device = device
        self._sentences = sentences
        self._voice = voice
        self._params = params
        self._cancel = cancel
        self._work: StreamWork | None = None
        self._timings = StepTimings()

    @property
    def timings(self) -> StepTimings:
        """Seconds spent per stage (a batched forward pass counts its share for each stream in it)."""
        return self._work.timings if self._work is not None else self._timings

    @property
    def encode_s(self) -> float:
        """Seconds spent turning waveforms into PCM bytes."""
        return self._work.encode_s if self._work is not None else 0.0

    @property
    def buffered_seconds(self) -> float:
        """Audio made and not yet taken by the reader."""
        return self._work.buffered_seconds() if self._work is not None else 0.0

    @property
    def audio_tokens(self) -> list[int]:
        """The GPT tokens sampled so far (read it once the stream has ended)."""
        return self._work.audio_tokens if self._work is not None else []

    @property
    def text_tokens(self) -> int:
        """Text tokens the GPT reads for this stream, every sentence together."""
        return sum(int(sentence.tokens.shape[-1]) for sentence in self._sentences)

    @property
    def complete(self) -> bool:
        """Every sentence has been spoken to its end and handed to the reader."""
        return self.sentences_done == len(self._sentences)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._cancel.is_set() or self._work is not None:
            return
        work = self._work = StreamWork(self._sentences, self._voice, self._params, self._cancel, self._device)
        self._scheduler.add(work)
        while True:
            item = await work.outbox.get()
            if isinstance(item, bytes):
                if self._cancel.is_set():
                    return
                work.consumed_samples += len(item) // 2
                if work.paused:
                    self._scheduler.wake()
                yield item
            elif item is SENTENCE_DONE:
                self.sentences_done += 1
            elif item is STREAM_END:
                return
            elif isinstance(item, BaseException):
                raise item

    async def wait_idle(self) -> None:
        """Wait until the model thread is done with this stream (call after setting `cancel`, or at the end)."""
        work = self._work
        if work is None:
            return
        if not work.released.is_set():
            self._scheduler.wake()  # a paused stream is noticed only when a step runs
            await work.released.wait()
        while not work.outbox.empty():  # drop audio nobody will read
            work.outbox.get_nowait()
