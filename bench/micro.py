"""Micro-benchmarks of the smaller wins, each against what it replaces."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from services.cache import SpeakerCache
from services.engine.batch_decoder import GptBatchDecoder
from services.engine.cloning import (
    CloneSettings,
    combine,
    conditioning_part,
    conditioning_windows,
    prepare_clip,
    speaker_embedding,
)
from services.engine.latents import VoiceLatents
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.pcm import to_pcm16
from services.engine.stream import SynthesisRequest
from services.engine.text import Sentence
from services.engine.tts import TTSEngine


def _median_s(work: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _old_to_pcm16(wav: torch.Tensor) -> bytes:
    samples = (wav.detach().clamp(-1.0, 1.0) * 32767).to(torch.int16)
    return samples.cpu().numpy().astype("<i2", copy=False).tobytes()


def _generate(engine: TTSEngine, voice: VoiceLatents, tokens: int) -> None:
    """One stream through the decoder, a batch of one, on the calling thread (the model thread here)."""
    text = torch.IntTensor(engine.model.tokenizer.encode("hello there.", "en")).unsqueeze(0).to(engine.device)
    params = GenerationParams(sampling=SamplingSettings(min_new_tokens=tokens, max_new_tokens=tokens))
    request = SynthesisRequest([Sentence("hello there.", text)], voice, params, threading.Event())
    decoder = GptBatchDecoder(engine.model, engine.device, engine.voice_prefix)
    decoder.join(request)
    decoder.prefill([(request, None)])
    while not decoder.step([request])[0].finished:
        pass
    decoder.leave(request)


def _clone(engine: TTSEngine, clips: list[np.ndarray]) -> None:
    """The steps of TTSEngine.clone_voice, on the calling thread (the model thread here)."""
    settings = CloneSettings()
    prepared = [prepare_clip(clip, settings) for clip in clips]
    embeddings = [speaker_embedding(engine.model, clip) for clip in prepared]
    joined = np.concatenate(prepared)
    windows = conditioning_windows(joined.size, settings, bool(engine.model.args.gpt_use_perceiver_resampler))
    combine([conditioning_part(engine.model, joined, window, settings) for window in windows], embeddings)


def smaller_wins(engine: TTSEngine, stock: Any, voice: VoiceLatents) -> dict[str, dict[str, float | str]]:
    """Each win as (before, after) seconds; the engine must be idle (this runs on the caller's thread)."""
    wins: dict[str, dict[str, float | str]] = {}
    latents = torch.randn(1, 100, engine.latent_dim, device=engine.device)
    with torch.inference_mode():
        before = _median_s(lambda: stock.hifigan_decoder(latents, g=voice.speaker_embedding))
        after = _median_s(lambda: engine.model.hifigan_decoder(latents, g=voice.speaker_embedding))
    wins["weight_norm_folded (vocoder, 100 latents)"] = {"before_s": before, "after_s": after}

    reference = [np.random.default_rng(0).standard_normal(22050 * 6).astype(np.float32) * 0.1]
    with torch.inference_mode():
        compute = _median_s(lambda: _clone(engine, reference), repeats=2)
    cache = SpeakerCache(10, 60)

    async def load() -> VoiceLatents:
        return voice

    async def hits() -> float:
        await cache.get_or_load("v", load)
        started = time.perf_counter()
        await cache.get_or_load("v", load)
        return time.perf_counter() - started

    wins["cached voice latents (6 s reference)"] = {"before_s": compute, "after_s": asyncio.run(hits())}

    with torch.no_grad():
        no_grad = _median_s(lambda: _generate(engine, voice, 24), repeats=2)
    with torch.inference_mode():
        inference = _median_s(lambda: _generate(engine, voice, 24), repeats=2)
    wins["inference_mode vs no_grad (24 tokens)"] = {"before_s": no_grad, "after_s": inference}

    chosen = torch.get_num_threads()
    torch.set_num_threads(max(1, chosen // 2) if chosen > 1 else 1)
    with torch.inference_mode():
        fewer = _median_s(lambda: _generate(engine, voice, 24), repeats=2)
    torch.set_num_threads(chosen)
    wins[f"threads: {max(1, chosen // 2)} vs {chosen} (physical cores)"] = {"before_s": fewer, "after_s": inference}

    chunk = torch.rand(24000 * 2) * 2 - 1
    before = _median_s(lambda: [_old_to_pcm16(chunk.clone()) for _ in range(1000)], repeats=5)
    after = _median_s(lambda: [to_pcm16(chunk.clone()) for _ in range(1000)], repeats=5)
    wins["pcm16 conversion in place (1000 x 2 s chunks)"] = {"before_s": before, "after_s": after}
    for row in wins.values():
        row["speedup"] = f"{float(row['before_s']) / max(float(row['after_s']), 1e-9):.2f}x"
    return wins
