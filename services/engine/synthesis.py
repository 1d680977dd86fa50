"""One sentence from text tokens to waveform chunks: GPT steps feeding the incremental vocoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from TTS.tts.models.xtts import Xtts

from services.engine.gpt_sampler import PrefixKV, StepTimings, sample_audio_latents
from services.engine.params import GenerationParams
from services.engine.latents import VoiceLatents
from services.engine.vocoder import IncrementalVocoder


def stream_sentence(
    model: Xtts,
    tokens: torch.Tensor,
    voice: VoiceLatents,
    params: GenerationParams,
    cancel: threading.Event,
    timings: StepTimings,
    *,
    generator: torch.Generator | None = None,
    prefix_kv: PrefixKV | None = None,
) -> Iterator[torch.Tensor]:
    """Yield waveform chunks (float, [-1, 1], 24 kHz) of one sentence; stops early once `cancel` is set.

    `generator` carries the stream's random state across its sentences (None: torch's global one);
    `prefix_kv` is the voice's cached conditioning prefix. Must run inside `torch.inference_mode()` on the
    thread that owns the model.
    """
    schedule = params.schedule
    vocoder = IncrementalVocoder(model.hifigan_decoder, voice.speaker_embedding, params.speed)
    target_tokens = min(schedule.first_tokens, schedule.max_tokens)
    steps = sample_audio_latents(
        model.gpt, voice.gpt_cond_latent, tokens, params.sampling, generator, timings, prefix_kv
    )
    for _token, latent in steps:
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
