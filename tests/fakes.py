"""A fake engine behind the Engine protocol: the serving layer's tests run without a model.

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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from services.engine.cloning import CloneSettings
from services.engine.languages import XTTS_LANGUAGES
from services.engine.latents import LatentValues, VoiceLatents, normalize_latents
from services.engine.params import GenerationParams
from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.engine.plan import BatchLimits
from services.engine.scheduler import BatchScheduler, RowOutput
from services.engine.stream import StepTimings, StreamReport, SynthesisRequest
from services.engine.synthesis_stream import SynthesisStream
from services.engine.text import Sentence
from services.errors import InvalidInput, InvalidLatents

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


@dataclass(frozen=True)
class FakeModelFacts:
    """What /health reports of the fake's (absent) model."""

    device: torch.device
    source: str = "fake"
    dummy: bool = True
    load_seconds: float = 0.01
    gpt_precision: str = "float32"
    vocoder_precision: str = "float32"
    gpt_precision_reason: str = "set"
    cpu: str = "fake CPU"
    vocoder_backend: str = "torch"
    vocoder_reason: str = "set"
    gpt_kernels: str = "torch-float32"
    gpt_kernels_reason: str = "fake"


@dataclass
class FakeRow:
    """The fake decoder's state for one stream."""

    generator: torch.Generator | None
    sentence_index: int = 0
    chunks_made: int = 0
    """Chunks made of the current sentence."""
    needs_prompt: bool = True
    """Its first sentence, or the next one after a sentence ended, is not prefilled yet (one position)."""
    timings: StepTimings = field(default_factory=StepTimings)


class FakeDecoder:
    """The scheduler's decoder with the model replaced by seeded noise: each step gives every stream one
    chunk, and a sentence is `chunks_per_sentence` chunks."""

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine
        self._rows: dict[SynthesisRequest, FakeRow] = {}

    def join(self, request: SynthesisRequest) -> None:
        seed = request.params.seed
        self._rows[request] = FakeRow(torch.Generator().manual_seed(seed) if seed is not None else None)

    def prompt_left(self, request: SynthesisRequest) -> tuple[int, int]:
        row = self._rows.get(request)
        return (1 if row is None or row.needs_prompt else 0), 0

    def prefill(self, chunks: Sequence[tuple[SynthesisRequest, int | None]]) -> None:
        seeds = [request.params.seed for request, _ in chunks]
        self._engine.calls.append(("prefill", seeds))
        if self._engine.fail_prefill_seed in seeds:
            raise RuntimeError("the fake prefill failed")
        time.sleep(self._engine.prefill_delay_s)
        for request, _ in chunks:
            row = self._rows[request]
            row.chunks_made = 0
            row.needs_prompt = False

    def step(self, requests: list[SynthesisRequest]) -> list[RowOutput]:
        engine = self._engine
        engine.batches.append([request.params.seed for request in requests])
        engine.calls.append(("step", engine.batches[-1]))
        engine.chunks_made += len(requests)
        if engine.fail_at_chunk is not None and engine.chunks_made >= engine.fail_at_chunk:
            raise RuntimeError("the fake model failed")
        engine.making = True
        time.sleep(engine.chunk_delay_s)
        engine.making = False
        samples = int(OUTPUT_SAMPLE_RATE * engine.chunk_seconds)
        outputs = []
        for request in requests:
            row = self._rows[request]
            row.chunks_made += 1
            if request.params.seed == engine.fail_row_seed and row.chunks_made == engine.fail_row_at_chunk:
                outputs.append(RowOutput(error=InvalidLatents("the fake row's numbers went bad")))
                continue
            row.timings.tokens += 1
            chunk = torch.rand(samples, generator=row.generator) * 0.2 - 0.1
            done = row.chunks_made == engine.chunks_per_sentence
            row.sentence_index += done
            finished = row.sentence_index == len(request.sentences)
            row.needs_prompt = done and not finished
            outputs.append(RowOutput([chunk], sentence_done=done, finished=finished))
        return outputs

    def leave(self, request: SynthesisRequest) -> StreamReport:
        return StreamReport(self._rows.pop(request).timings)


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
        fail_row_seed: int | None = None,
        fail_row_at_chunk: int = 1,
        hold_warm_up: threading.Event | None = None,
        fail_prefill_seed: int | None = None,
        prefill_delay_s: float = 0.0,
    ) -> None:
        self.prefill_delay_s = prefill_delay_s
        self.calls: list[tuple[str, list[int | None]]] = []
        """("prefill" or "step", the seeds of its streams), call by call."""
        self.chunks_per_sentence = chunks_per_sentence
        self.fail_prefill_seed = fail_prefill_seed
        """A prefill that includes the stream with this seed raises (as a forward pass that failed)."""
        self.chunk_seconds = chunk_seconds
        self.chunk_delay_s = chunk_delay_s
        self.warm_up_s = warm_up_s
        self.fail_at_chunk = fail_at_chunk
        self.clone_delay_s = clone_delay_s
        self.fail_row_seed = fail_row_seed
        """The stream with this seed fails alone (as a row whose numbers went bad) at its fail_row_at_chunk-th chunk."""
        self.fail_row_at_chunk = fail_row_at_chunk
        self.hold_warm_up = hold_warm_up
        """When given, the warm-up lasts until it is set (a test looks at the server while it loads)."""
        self.clones_finished = 0
        self.chunks_made = 0
        self.batches: list[list[int | None]] = []
        """The seeds of the streams in each step's batch, step by step."""
        self.making = False  # a chunk is being made on the model thread right now
        self.device = torch.device("cpu")
        self.loaded = FakeModelFacts(device=self.device)
        self.latent_dim = LATENT_DIM
        self.embedding_dim = EMBEDDING_DIM
        self.languages = list(XTTS_LANGUAGES)
        self.builtin_speakers = {name: fake_latents(index) for index, name in enumerate(FAKE_SPEAKERS)}
        self.jobs_submitted = 0
        self.clones = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-model")
        self.scheduler = BatchScheduler(FakeDecoder(self), self.submit, limits or BatchLimits())

    @property
    def prefills(self) -> list[list[int | None]]:
        """The seeds of the streams in each prefill call, call by call."""
        return [seeds for kind, seeds in self.calls if kind == "prefill"]

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
        self,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        cancel: threading.Event,
        background: bool = False,
    ) -> SynthesisStream:
        return SynthesisStream(self.scheduler, SynthesisRequest(sentences, voice, params, cancel, background))

    async def clone_voice(self, clips: list[np.ndarray], settings: CloneSettings) -> VoiceLatents:
        self.clones += 1
        digest = hashlib.sha256(b"".join(clip.tobytes() for clip in clips)).digest()
        await asyncio.sleep(self.clone_delay_s)
        self.clones_finished += 1
        return fake_latents(int.from_bytes(digest[:4], "little"))

    def warm_up(self) -> float:
        if self.hold_warm_up is not None:
            self.hold_warm_up.wait(60)
        time.sleep(self.warm_up_s)
        return self.warm_up_s

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.scheduler.close()
