"""The TTS engine: one XTTS model, the one thread that runs it, and audio streams out of it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import torch

from services.audio import pcm_seconds, to_pcm16
from services.gpt_sampler import PrefixKV, SamplingSettings, StepTimings, conditioning_prefix
from services.latents import VoiceLatents, normalize_latents
from services.model_loader import LoadedModel
from services.sessions import SessionRegistry, StreamSession, StreamState
from services.synthesis import ChunkSchedule, stream_sentence
from services.text import Sentence, plan_sentences

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class GenerationParams:
    """Everything about how to speak, besides what and in whose voice."""

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    speed: float = 1.0
    schedule: ChunkSchedule = field(default_factory=ChunkSchedule)
    seed: int | None = None


class TTSEngine:
    """Owns the XTTS model; every torch call on it runs on one dedicated thread, one job at a time.

    coqui's own generation parks the prompt on the model (`gpt_inference.store_prefix_emb`), so two of
    its generations must never interleave. This engine never uses that path: its sampler keeps the
    prompt, KV cache and random generator in each stream's own generator object, and nothing on the
    model changes during generation. So streams can take turns a chunk at a time on the one thread
    (tested: interleaved streams give byte-identical audio to the same streams run alone), and a new
    request waits at most one chunk of another stream before its own first chunk.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xtts-model")
        self.jobs_submitted = 0
        args = self.model.args
        self.latent_dim: int = args.gpt_n_model_channels
        self.embedding_dim: int = args.d_vector_dim
        self.max_text_tokens: int = args.gpt_max_text_tokens
        self.languages: list[str] = list(self.model.config.languages)
        self._builtin = self._load_builtin_speakers()
        # Each voice's conditioning KV prefix, computed on first use on the model thread; entries go
        # when the voice's latents do (evicted from the cache, request with explicit latents over).
        self._prefixes: weakref.WeakKeyDictionary[VoiceLatents, PrefixKV] = weakref.WeakKeyDictionary()

    def _load_builtin_speakers(self) -> dict[str, VoiceLatents]:
        manager = getattr(self.model, "speaker_manager", None)
        speakers = getattr(manager, "speakers", None) or {}
        return {
            name: normalize_latents(
                values["gpt_cond_latent"], values["speaker_embedding"], self.latent_dim, self.embedding_dim
            ).to(self.device)
            for name, values in speakers.items()
        }

    @property
    def builtin_speakers(self) -> dict[str, VoiceLatents]:
        """Speakers shipped with the checkpoint (speakers_xtts.pth), by name."""
        return self._builtin

    def voice_prefix(self, voice: VoiceLatents) -> PrefixKV:
        """Model thread only: the voice's conditioning KV prefix (see gpt_sampler.conditioning_prefix)."""
        prefix = self._prefixes.get(voice)
        if prefix is None:
            prefix = self._prefixes[voice] = conditioning_prefix(self.model.gpt, voice.gpt_cond_latent)
        return prefix

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn` on the model thread, under inference mode (which is per thread)."""
        self.jobs_submitted += 1
        return self._executor.submit(_in_inference_mode, fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the model thread and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    async def plan(self, text: str, language: str, split: bool) -> list[Sentence]:
        """Split and tokenise off the event loop, on a general worker thread (no model state involved)."""
        return await anyio.to_thread.run_sync(
            plan_sentences, self.model.tokenizer, text, language, split, self.max_text_tokens
        )

    def warm_up(self) -> float:
        """One short generation, so the first request pays no lazy initialisation. Returns seconds."""
        started = time.perf_counter()
        # A long text, so the English sentence splitter loads now rather than in the first request.
        sentences = plan_sentences(self.model.tokenizer, "Warm up. " * 40, "en", True, self.max_text_tokens)
        voice = next(iter(self._builtin.values()), None) or VoiceLatents(
            torch.zeros(1, 32, self.latent_dim, device=self.device),
            torch.zeros(1, self.embedding_dim, 1, device=self.device),
        )
        sampling = SamplingSettings(max_new_tokens=12)

        def generate() -> None:
            for _ in stream_sentence(
                self.model,
                sentences[0].tokens.to(self.device),
                voice.gpt_cond_latent,
                voice.speaker_embedding,
                sampling,
                ChunkSchedule(),
                1.0,
                None,
                threading.Event(),
                StepTimings(),
            ):
                pass

        self.submit(generate).result()
        return time.perf_counter() - started

    def open_stream(
        self,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        session: StreamSession,
        registry: SessionRegistry,
        release: Callable[[], None],
    ) -> AudioStream:
        """A stream of 16-bit PCM chunks; the caller must `close()` it (which calls `release`)."""
        return AudioStream(self, sentences, voice, params, session, registry, release)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _in_inference_mode(fn: Callable[..., T], *args: Any) -> T:
    with torch.inference_mode():
        return fn(*args)


class AudioStream:
    """One request's audio as 16-bit PCM chunks, made a chunk at a time on the model thread."""

    def __init__(
        self,
        engine: TTSEngine,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        session: StreamSession,
        registry: SessionRegistry,
        release: Callable[[], None],
    ) -> None:
        self.session = session
        self.seed = params.seed if params.seed is not None else secrets.randbits(63)
        self._engine = engine
        self._sentences = sentences
        self._voice = voice
        self._params = params
        self._registry = registry
        self._release: Callable[[], None] | None = release
        self._timings = StepTimings()
        self._generator = torch.Generator(device=engine.device).manual_seed(self.seed)
        self._job: Future[bytes | None] | None = None
        # The running sentence's generator: KV cache, prompt and vocoder state live here, not on the model.
        self._sentence_chunks: Iterator[torch.Tensor] | None = None
        self._encode_s = 0.0
        self._closed: asyncio.Future[None] | None = None
        session.chunks_total = len(sentences)
        session.state = StreamState.GENERATING
        session.started_at = time.time()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        # One model-thread job per chunk: the next chunk is generated when this one has been taken,
        # so a slow client pauses only its own stream, and streams take turns chunk by chunk.
        for sentence in self._sentences:
            while not self.session.cancel_event.is_set():
                self._job = self._engine.submit(self._next_chunk, sentence)
                pcm = await asyncio.wrap_future(self._job)
                if pcm is None:
                    break
                if self.session.first_audio_at is None:
                    self.session.first_audio_at = time.time()
                self.session.audio_seconds += pcm_seconds(len(pcm))
                if logger.isEnabledFor(logging.DEBUG):
                    timings = self._timings
                    logger.debug(
                        "session=%s chunk audio=%.3fs total=%.2fs at=%.3fs prefill=%.3fs gpt=%.3fs vocoder=%.3fs",
                        self.session.id, pcm_seconds(len(pcm)), self.session.audio_seconds,
                        time.time() - self.session.created_at, timings.prefill_s, timings.gpt_steps_s,
                        timings.vocoder_s,
                    )  # fmt: skip
                yield pcm
            if self.session.cancel_event.is_set():
                return
            self.session.chunks_done += 1

    def _next_chunk(self, sentence: Sentence) -> bytes | None:
        """Model thread: the sentence's next PCM chunk, or None once it is done (or cancelled)."""
        if self._sentence_chunks is None:
            started = time.perf_counter()
            prefix = self._engine.voice_prefix(self._voice)  # once per voice, usually cached
            self._timings.prefill_s += time.perf_counter() - started
            self._sentence_chunks = stream_sentence(
                self._engine.model,
                sentence.tokens.to(self._engine.device),
                self._voice.gpt_cond_latent,
                self._voice.speaker_embedding,
                self._params.sampling,
                self._params.schedule,
                self._params.speed,
                self._generator,
                self.session.cancel_event,
                self._timings,
                prefix,
            )
        wav = next(self._sentence_chunks, None)
        if wav is None:
            self._sentence_chunks = None
            return None
        started = time.perf_counter()
        pcm = to_pcm16(wav)
        self._encode_s += time.perf_counter() - started
        return pcm

    async def close(self, error: BaseException | None = None) -> None:
        """Stop generating if still going and record the outcome; the slot is freed once the model
        thread is done with this stream (not before), even if this coroutine is itself cancelled."""
        if self._closed is not None:
            return await asyncio.shield(self._closed)
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        session = self.session
        completed = error is None and session.chunks_done == session.chunks_total
        if not completed:
            session.cancel_event.set()
        job = self._job

        def finalize(_: object = None) -> None:
            if job is not None and not job.cancelled() and job.exception() is not None and error is None:
                self._finish(job.exception(), completed=False)
            else:
                self._finish(error, completed)
            assert self._closed is not None
            self._closed.set_result(None)

        if job is None or job.done():
            finalize()
        else:
            job.add_done_callback(lambda _: loop.call_soon_threadsafe(finalize))
        await asyncio.shield(self._closed)

    def _finish(self, error: BaseException | None, completed: bool) -> None:
        self._sentence_chunks = None  # frees a cancelled sentence's KV cache now, not when this object goes
        if self._release is not None:
            self._release()
            self._release = None
        session = self.session
        timings = self._timings
        for stage, seconds in (
            ("prefill", timings.prefill_s),
            ("gpt_steps", timings.gpt_steps_s),
            ("vocoder", timings.vocoder_s),
            ("encode", self._encode_s),
        ):
            session.add_timing(stage, seconds)
        if error is not None and not isinstance(error, asyncio.CancelledError):
            self._registry.finish(session, StreamState.FAILED, f"{error.__class__.__name__}: {error}")
        elif completed:
            self._registry.finish(session, StreamState.COMPLETED)
        else:
            self._registry.finish(session, StreamState.CANCELLED, session.error)
