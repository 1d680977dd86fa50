"""One sentence from text tokens to waveform chunks: GPT steps feeding the incremental vocoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from TTS.tts.models.xtts import Xtts

from services.gpt_sampler import PrefixKV, SamplingSettings, StepTimings, sample_audio_latents
from services.vocoder import IncrementalVocoder


@dataclass(frozen=True)
class ChunkSchedule:
    """Chunk sizes in GPT tokens: a short first chunk for a fast start, then doubling up to `max_tokens`."""

    first_tokens: int = 1
    max_tokens: int = 20

    def after(self, tokens: int) -> int:
        return min(max(tokens * 2, 1), self.max_tokens)


def stream_sentence(
    model: Xtts,
    text_tokens: torch.Tensor,
    gpt_cond_latent: torch.Tensor,
    speaker_embedding: torch.Tensor,
    sampling: SamplingSettings,
    schedule: ChunkSchedule,
    speed: float,
    generator: torch.Generator | None,
    cancel: threading.Event,
    timings: StepTimings,
    prefix_kv: PrefixKV | None = None,
) -> Iterator[torch.Tensor]:
    """Yield waveform chunks (float, [-1, 1], 24 kHz) of one sentence; stops early once `cancel` is set.

    Must run inside `torch.inference_mode()` on the thread that owns the model.
    """
    vocoder = IncrementalVocoder(model.hifigan_decoder, speaker_embedding, speed)
    target_tokens = min(schedule.first_tokens, schedule.max_tokens)
    tokens = sample_audio_latents(model.gpt, gpt_cond_latent, text_tokens, sampling, generator, timings, prefix_kv)
    for _token, latent in tokens:
        if cancel.is_set():
            return
        vocoder.push(latent)
        if vocoder.pending_frames() >= target_tokens * vocoder.frames_per_latent:
            started = time.perf_counter()
            chunk = vocoder.decode_ready()
            timings.vocoder_s += time.perf_counter() - started
            target_tokens = schedule.after(target_tokens)
            yield chunk
    if cancel.is_set():
        return
    started = time.perf_counter()
    chunk = vocoder.finish()
    timings.vocoder_s += time.perf_counter() - started
    if chunk.numel():
        yield chunk
