"""A fake engine behind TTSEngine's interface: the serving layer's tests run without a model.

Each sentence becomes `chunks_per_sentence` chunks of seeded noise, one per batched step on a worker
thread, made by the real scheduler and SynthesisStream (only the model's part, the decoder, is
replaced), so admission, batching, backpressure, cancellation, disconnects and ordering behave as with
the real engine, in milliseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from services.engine.cloning import CloneSettings
from services.engine.languages import XTTS_LANGUAGES
from services.engine.latents import LatentValues, VoiceLatents, normalize_latents
from services.engine.model_loader import LoadedModel
from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.engine.scheduler import BatchLimits, BatchScheduler, StepOutput, StreamWork
from services.engine.params import GenerationParams
from services.engine.synthesis_stream import SynthesisStream
from services.engine.text import Sentence
from services.errors import InvalidInput

T = TypeVar("T")
LATENT_DIM = 1024
EMBEDDING_DIM = 512
# "narrator" is a valid saved-voice id too: a saved voice of that name must shadow it.
FAKE_SPEAKERS = ("Dummy Alto", "Dummy Bass", "Dummy Tenor", "narrator")


def fake_latents(seed: int) -> VoiceLatents:
    generator = torch.Generator().manual_seed(seed)
    return VoiceLatents(
        torch.randn(1, 32, LATENT_DIM, generator=generator), torch.randn(1, EMBEDDING_DIM, 1, generator=generator)
    )


class FakeDecoder:
    """The scheduler's decoder with the model replaced by seeded noise: each step gives every stream one
    chunk, and a sentence is `chunks_per_sentence` chunks."""

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine

    def begin_sentence(self, work: StreamWork) -> None:
        work.decoding = 0  # chunks made of the current sentence

    def step(self, works: list[StreamWork]) -> list[StepOutput]:
        engine = self._engine
        engine.batches.append([work.params.seed for work in works])
        engine.chunks_made += len(works)
        if engine.fail_at_chunk is not None and engine.chunks_made >= engine.fail_at_chunk:
            raise RuntimeError("the fake model failed")
        engine.making = True
        time.sleep(engine.chunk_delay_s)
        engine.making = False
        samples = int(OUTPUT_SAMPLE_RATE * engine.chunk_seconds)
        outputs = []
        for work in works:
            work.decoding += 1
            work.timings.tokens += 1
            chunk = torch.rand(samples, generator=work.generator) * 0.2 - 0.1
            outputs.append(StepOutput([chunk], sentence_done=work.decoding == engine.chunks_per_sentence))
        return outputs

    def release(self, work: StreamWork) -> None:
        work.decoding = None


class FakeEngine:
    """What the serving layer uses of TTSEngine, without torch models."""

    def __init__(
        self,
        chunks_per_sentence: int = 3,
        chunk_seconds: float = 0.1,
        chunk_delay_s: float = 0.0,
        warm_up_s: float = 0.0,
        fail_at_chunk: int | None = None,
        limits: BatchLimits | None = None,
        clone_delay_s: float = 0.0,
    ) -> None:
        self.chunks_per_sentence = chunks_per_sentence
        self.chunk_seconds = chunk_seconds
        self.chunk_delay_s = chunk_delay_s
        self.warm_up_s = warm_up_s
        self.fail_at_chunk = fail_at_chunk
        self.clone_delay_s = clone_delay_s
        self.clones_finished = 0
        self.chunks_made = 0
        self.batches: list[list[int | None]] = []
        """The seeds of the streams in each step's batch, step by step."""
        self.making = False  # a chunk is being made on the model thread right now
        self.device = torch.device("cpu")
        self.loaded = LoadedModel(model=None, source="fake", dummy=True, device=self.device, load_seconds=0.01)  # type: ignore[arg-type]
        self.latent_dim = LATENT_DIM
        self.embedding_dim = EMBEDDING_DIM
        self.languages = list(XTTS_LANGUAGES)
        self.builtin_speakers = {name: fake_latents(index) for index, name in enumerate(FAKE_SPEAKERS)}
        self.jobs_submitted = 0
        self.clones = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-model")
        self.scheduler = BatchScheduler(FakeDecoder(self), self.submit, limits or BatchLimits())

    def normalize_latents(self, gpt_cond_latent: LatentValues, speaker_embedding: LatentValues) -> VoiceLatents:
        return normalize_latents(gpt_cond_latent, speaker_embedding, self.latent_dim, self.embedding_dim)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        self.jobs_submitted += 1
        return self._executor.submit(fn, *args)

    async def plan(self, text: str, language: str, split: bool) -> list[Sentence]:
        pieces = re.split(r"(?<=[.!?。])\s+", text.strip()) if split else [text.strip()]
        sentences = [Sentence(piece, torch.zeros(1, len(piece), dtype=torch.int32)) for piece in pieces if piece]
        if not sentences:
            raise InvalidInput("text has nothing to speak")
        return sentences

    def synthesize(
        self, sentences: list[Sentence], voice: VoiceLatents, params: GenerationParams, cancel: threading.Event
    ) -> SynthesisStream:
        return SynthesisStream(self.scheduler, self.device, sentences, voice, params, cancel)

    async def clone_voice(self, clips: list[np.ndarray], settings: CloneSettings) -> VoiceLatents:
        self.clones += 1
        digest = hashlib.sha256(b"".join(clip.tobytes() for clip in clips)).digest()
        await asyncio.sleep(self.clone_delay_s)
        self.clones_finished += 1
        return fake_latents(int.from_bytes(digest[:4], "little"))

    def warm_up(self) -> float:
        time.sleep(self.warm_up_s)
        return self.warm_up_s

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.scheduler.close()
