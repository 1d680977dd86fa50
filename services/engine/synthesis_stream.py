"""A request's sentences as 16-bit PCM chunks, each made by one job on the model thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING

import torch

from services.engine.gpt_sampler import StepTimings
from services.engine.latents import VoiceLatents
from services.engine.pcm import to_pcm16
from services.engine.synthesis import GenerationParams, stream_sentence
from services.engine.text import Sentence

if TYPE_CHECKING:
    from services.engine.tts import TTSEngine


class SynthesisStream:
    """Iterate for PCM chunks; `cancel` (set by the owner) stops it within one chunk.

    One model-thread job per chunk: the next chunk is made when this one has been taken, so a slow
    consumer pauses only its own stream, and streams take turns chunk by chunk. The running sentence's
    generator (KV cache, prompt, vocoder state) lives here, not on the model.
    """

    def __init__(
        self,
        engine: TTSEngine,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> None:
        self.timings = StepTimings()
        self.encode_s = 0.0
        """Seconds spent turning waveforms into PCM bytes."""
        self.sentences_done = 0
        self._engine = engine
        self._sentences = sentences
        self._voice = voice
        self._params = params
        self._cancel = cancel
        self._generator = (
            torch.Generator(device=engine.device).manual_seed(params.seed) if params.seed is not None else None
        )
        self._job: Future[bytes | None] | None = None
        self._sentence_chunks: Iterator[torch.Tensor] | None = None

    @property
    def complete(self) -> bool:
        """Every sentence has been spoken to its end."""
        return self.sentences_done == len(self._sentences)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for sentence in self._sentences:
            while not self._cancel.is_set():
                self._job = self._engine.submit(self._next_chunk, sentence)
                pcm = await asyncio.wrap_future(self._job)
                if pcm is None:
                    break
                yield pcm
            if self._cancel.is_set():
                return
            self.sentences_done += 1

    def _next_chunk(self, sentence: Sentence) -> bytes | None:
        """Model thread: the sentence's next PCM chunk, or None once it is done (or cancelled)."""
        if self._sentence_chunks is None:
            started = time.perf_counter()
            prefix = self._engine.voice_prefix(self._voice)  # once per voice, usually cached
            self.timings.prefill_s += time.perf_counter() - started
            self._sentence_chunks = stream_sentence(
                self._engine.model,
                sentence.tokens.to(self._engine.device),
                self._voice,
                self._params,
                self._cancel,
                self.timings,
                generator=self._generator,
                prefix_kv=prefix,
            )
        wav = next(self._sentence_chunks, None)
        if wav is None:
            self._sentence_chunks = None
            return None
        started = time.perf_counter()
        pcm = to_pcm16(wav)
        self.encode_s += time.perf_counter() - started
        return pcm

    async def wait_idle(self) -> None:
        """Wait until no job of this stream is queued or running, then free the sentence's state.

        Call after setting `cancel` (or at the end): a job already running finishes its chunk first.
        """
        job = self._job
        if job is not None and not job.done():
            loop = asyncio.get_running_loop()
            finished = loop.create_future()

            def set_finished() -> None:
                if not finished.done():
                    finished.set_result(None)

            def wake(_: object) -> None:
                loop.call_soon_threadsafe(set_finished)

            job.add_done_callback(wake)
            await finished
        self._sentence_chunks = None  # frees a cancelled sentence's KV cache now, not when this object goes
