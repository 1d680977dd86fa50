"""The TTS engine: one XTTS model and the one thread that runs it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import anyio
import numpy as np
import torch

from services.engine.batch_decoder import GptBatchDecoder
from services.engine.cloning import (
    CloneSettings,
    combine,
    conditioning_part,
    conditioning_windows,
    prepare_clip,
    speaker_embedding,
)
from services.engine.gpt_sampler import PrefixKV, conditioning_prefix
from services.engine.latents import LatentValues, VoiceLatents, normalize_latents
from services.engine.model_loader import LoadedModel, ModelChoice, load_model
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.plan import BatchLimits
from services.engine.scheduler import BatchScheduler
from services.engine.stream import SynthesisRequest
from services.engine.synthesis_stream import SynthesisStream
from services.engine.text import Sentence, plan_sentences

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TTSEngine:
    """Owns the XTTS model; every torch call on it runs on one dedicated thread, one job at a time.

    coqui's own generation parks the prompt on the model (`gpt_inference.store_prefix_emb`), so two of
    its generations must never interleave. This engine never uses that path: each stream's prompt,
    KV cache row, sampling state and random generator are its own, and nothing on the model changes
    during generation. So the streams that are generating advance together, one token each per batched
    step (see scheduler.py; tested: a stream in a batch gives the same tokens and audio as alone), and a
    new request joins between two steps.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        thread: ThreadPoolExecutor | None = None,
        owns_thread: bool | None = None,
        limits: BatchLimits | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self._owns_thread = thread is None if owns_thread is None else owns_thread
        self.thread = thread or model_thread()
        """The one thread that runs torch on the model (shared when given; then its owner shuts it down)."""
        self.jobs_submitted = 0
        args = self.model.args
        self.latent_dim: int = args.gpt_n_model_channels
        self.embedding_dim: int = args.d_vector_dim
        self.max_text_tokens: int = args.gpt_max_text_tokens
        self.languages: list[str] = list(self.model.config.languages)
        self.builtin_speakers: dict[str, VoiceLatents] = self._load_builtin_speakers()
        """Speakers shipped with the checkpoint (speakers_xtts.pth), by name; they never change."""
        # Each voice's conditioning KV prefix, computed on first use on the model thread; entries go
        # when the voice's latents do (evicted from the cache, request with explicit latents over).
        self._prefixes: weakref.WeakKeyDictionary[VoiceLatents, PrefixKV] = weakref.WeakKeyDictionary()
        self.scheduler = BatchScheduler(
            GptBatchDecoder(self.model, self.device, self.voice_prefix), self.submit, limits or BatchLimits()
        )

    def _load_builtin_speakers(self) -> dict[str, VoiceLatents]:
        manager = getattr(self.model, "speaker_manager", None)
        speakers = getattr(manager, "speakers", None) or {}
        return {
            name: self.normalize_latents(values["gpt_cond_latent"], values["speaker_embedding"])
            for name, values in speakers.items()
        }

    def normalize_latents(self, gpt_cond_latent: LatentValues, speaker_embedding: LatentValues) -> VoiceLatents:
        """Latents in any of coqui's shapes, checked against this model and put on its device."""
        return normalize_latents(gpt_cond_latent, speaker_embedding, self.latent_dim, self.embedding_dim).to(
            self.device
        )

    def voice_prefix(self, voice: VoiceLatents) -> PrefixKV:
        """Model thread only: the voice's conditioning KV prefix (see gpt_sampler.conditioning_prefix)."""
        prefix = self._prefixes.get(voice)
        if prefix is None:
            prefix = self._prefixes[voice] = conditioning_prefix(self.model.gpt, voice.gpt_cond_latent)
        return prefix

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn` on the model thread, under inference mode (which is per thread)."""
        self.jobs_submitted += 1
        return self.thread.submit(_in_inference_mode, fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the model thread and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    async def plan(self, text: str, language: str, split: bool) -> list[Sentence]:
        """Split and tokenise off the event loop, on a general worker thread (no model state involved)."""
        return await anyio.to_thread.run_sync(
            plan_sentences, self.model.tokenizer, text, language, split, self.max_text_tokens
        )

    def synthesize(
        self,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        cancel: threading.Event,
        background: bool = False,
    ) -> SynthesisStream:
        """The sentences' audio as 16-bit PCM chunks, made on the model thread; stops once `cancel` is set.

        `background`: a long-form job's work, below live speech (plan.py); it may end in `Preempted`."""
        return SynthesisStream(self.scheduler, SynthesisRequest(sentences, voice, params, cancel, background))

    async def clone_voice(self, clips: list[np.ndarray], settings: CloneSettings) -> VoiceLatents:
        """Voice latents from reference clips (mono float at 22050 Hz), as coqui computes them.

        The model work goes to the model thread as one job per clip (its speaker embedding) and per
        conditioning chunk, so streams being decoded wait at most one such job between two of their
        steps; cancelling the caller's task stops it between jobs.
        """
        prepared = [await anyio.to_thread.run_sync(prepare_clip, samples, settings) for samples in clips]
        embeddings = [await self.run(speaker_embedding, self.model, clip) for clip in prepared]
        joined = np.concatenate(prepared)
        windows = conditioning_windows(joined.size, settings, bool(self.model.args.gpt_use_perceiver_resampler))
        parts = [await self.run(conditioning_part, self.model, joined, window, settings) for window in windows]
        return combine(parts, embeddings)

    def warm_up(self) -> float:
        """One short generation, so the first request pays no lazy initialisation. Returns seconds.

        Blocks: call it from a worker thread (it runs its own event loop to read the stream).
        """
        started = time.perf_counter()
        # A long text, so the English sentence splitter loads now rather than in the first request; its
        # pieces pack to 246 characters, under coqui's 250 (it warns of truncation above that).
        sentences = plan_sentences(self.model.tokenizer, "Warm up the model. " * 40, "en", True, self.max_text_tokens)
        voice = next(iter(self.builtin_speakers.values()), None) or VoiceLatents(
            torch.zeros(1, 32, self.latent_dim, device=self.device),
            torch.zeros(1, self.embedding_dim, 1, device=self.device),
        )

        async def generate() -> None:  # through the scheduler and batched decoder, as requests go
            params = GenerationParams(sampling=SamplingSettings(max_new_tokens=12))
            async for _ in self.synthesize(sentences[:1], voice, params, threading.Event()):
                pass

        asyncio.run(generate())  # called from a worker thread, never the server's event loop
        return time.perf_counter() - started

    @classmethod
    def start(cls, choice: ModelChoice, limits: BatchLimits | None = None) -> TTSEngine:
        """Load the model on a new model thread and return the engine that owns both (blocks until loaded).

        Loading there rather than on the caller's thread keeps every torch computation of the process on one
        thread: each thread that runs a parallel region gets its own OpenMP team, and once there are more
        OpenMP threads than cores libgomp throttles their spin-waiting, so every small parallel region then
        waits for a sleeping worker (measured: an int8 GPT step 45 instead of 29 ms, float32 106 instead
        of 98 ms, full size on 2 cores).
        """
        thread = model_thread()
        try:
            loaded = thread.submit(load_model, choice).result()
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(loaded, thread, owns_thread=True, limits=limits)

    def shutdown(self) -> None:
        if self._owns_thread:
            self.thread.shutdown(wait=True, cancel_futures=True)
            self.scheduler.close()  # its queued step may have been cancelled: nobody waits for it in vain


def model_thread() -> ThreadPoolExecutor:
    """A one-worker executor to run the model on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="xtts-model")


def _in_inference_mode(fn: Callable[..., T], *args: Any) -> T:
    with torch.inference_mode():
        return fn(*args)
