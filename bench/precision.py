"""GPT and vocoder precisions against float32: one stream's speed, and fidelity on the same tokens.

Fidelity is measured teacher-forced: float32 samples the tokens once (seeded), then every precision reads
that same sequence, so the figures show what the weights' precision changes (latents, the next-token
choice, the waveform) without sampling's chaos. Random weights cannot say how speech sounds: on a real
checkpoint, `make compare-precision` writes each precision's WAV to listen to.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from services.engine.gpt_sampler import teacher_forced
from services.engine.latents import VoiceLatents
from services.engine.model_loader import LoadedModel
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.precision import (
    GptPrecision,
    VocoderPrecision,
    apply_gpt_precision,
    apply_vocoder_precision,
)
from services.engine.tts import TTSEngine
from services.engine.vocoder import IncrementalVocoder


def variants(device: torch.device) -> list[tuple[GptPrecision, VocoderPrecision]]:
    """(GPT, vocoder) precisions worth measuring on this device."""
    if device.type == "cuda":
        return [("float32", "float32"), ("float16", "float32"), ("bfloat16", "float32"), ("bfloat16", "bfloat16")]
    return [("float32", "float32"), ("bfloat16", "float32"), ("int8", "float32"), ("int8", "bfloat16")]


def label(gpt_precision: str, vocoder_precision: str) -> str:
    return f"gpt={gpt_precision} vocoder={vocoder_precision}"


def variant(loaded: LoadedModel, gpt_precision: GptPrecision, vocoder_precision: VocoderPrecision) -> LoadedModel:
    """A copy of a float32 model in other precisions (the float32 one itself when nothing changes)."""
    if (gpt_precision, vocoder_precision) == ("float32", "float32"):
        return loaded
    model = copy.deepcopy(loaded.model)
    apply_gpt_precision(model.gpt, gpt_precision, loaded.device)
    apply_vocoder_precision(model.hifigan_decoder, vocoder_precision)
    return LoadedModel(
        model, loaded.source, loaded.dummy, loaded.device, loaded.load_seconds, gpt_precision, vocoder_precision
    )


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    noise = (signal.float() - reference.float()).pow(2).sum().clamp_min(1e-20)
    return float(10 * torch.log10(reference.float().pow(2).sum() / noise))


def decode(model: Any, latents: torch.Tensor, voice: VoiceLatents) -> torch.Tensor:
    """The whole waveform of a latent sequence, through the vocoder as streaming runs it."""
    vocoder = IncrementalVocoder(model.hifigan_decoder, voice.speaker_embedding)
    for latent in latents:
        vocoder.push(latent)
    return vocoder.finish()


def reference_tokens(
    engine: TTSEngine, voice: VoiceLatents, text: str, tokens: int, seed: int
) -> tuple[torch.Tensor, list[int]]:
    """Text tokens and `tokens` audio tokens sampled through `engine` (float32). Call it off the model thread."""
    sentences = asyncio.run(engine.plan(text, "en", False))
    settings = SamplingSettings(repetition_penalty=5.0, min_new_tokens=tokens, max_new_tokens=tokens)
    params = GenerationParams(sampling=settings, seed=seed)

    async def sample() -> list[int]:
        stream = engine.synthesize(sentences[:1], voice, params, threading.Event())
        async for _ in stream:
            pass
        await stream.wait_idle()
        return list(stream.audio_tokens)

    return sentences[0].tokens.to(engine.device), asyncio.run(sample())


def fidelity(
    reference: Any, model: Any, voice: VoiceLatents, text_tokens: torch.Tensor, audio: list[int]
) -> dict[str, float]:
    """Latent SNR, top-1 agreement and waveform SNR of `model` against float32 `reference`, teacher-forced."""
    with torch.inference_mode():
        reference_latents, reference_logits = teacher_forced(reference.gpt, voice.gpt_cond_latent, text_tokens, audio)
        latents, logits = teacher_forced(model.gpt, voice.gpt_cond_latent, text_tokens, audio)
        reference_wave = decode(reference, reference_latents, voice)
        wave = decode(model, latents, voice)
    return {
        "latent_snr_db": round(snr_db(latents, reference_latents), 2),
        "top1_agreement": round(float((logits.argmax(-1) == reference_logits.argmax(-1)).float().mean()), 4),
        "waveform_snr_db": round(snr_db(wave, reference_wave), 2),
    }


def precision_table(
    loaded: LoadedModel,
    voice: VoiceLatents,
    text: str,
    tokens: int,
    seed: int,
    measure: Callable[[TTSEngine], dict[str, Any]],
    thread: ThreadPoolExecutor,
) -> dict[str, dict[str, Any]]:
    """Per variant: `measure`'s figures for one stream (rtf, total_s, ...) and fidelity against float32.

    Everything runs on `thread`, the model thread, as in the server (see TTSEngine.start).
    """
    text_tokens, audio = reference_tokens(TTSEngine(loaded, thread), voice, text, tokens, seed)
    rows: dict[str, dict[str, Any]] = {}
    for gpt_precision, vocoder_precision in variants(loaded.device):
        print(f"  precision {label(gpt_precision, vocoder_precision)} ...", flush=True)
        model = thread.submit(variant, loaded, gpt_precision, vocoder_precision).result()
        engine = TTSEngine(model, thread)
        engine.warm_up()
        speed = measure(engine)
        rows[label(gpt_precision, vocoder_precision)] = {
            **speed,
            **thread.submit(fidelity, loaded.model, model.model, voice, text_tokens, audio).result(),
            "tokens": len(audio),
        }
    baseline = rows[label("float32", "float32")]["total_s"]
    for row in rows.values():
        row["speedup_vs_float32"] = round(baseline / row["total_s"], 3)
    return rows


def print_precision_table(rows: dict[str, dict[str, Any]]) -> None:
    columns = ("total", 8), ("RTF", 6), ("speedup", 8), ("latent SNR", 11), ("top-1", 7), ("wave SNR", 9)
    print(f"\n{'precision':34s} " + " ".join(f"{name:>{width}s}" for name, width in columns))
    for name, row in rows.items():
        print(
            f"{name:34s} {row['total_s']:7.2f}s {row['rtf']:6.2f} {row['speedup_vs_float32']:7.2f}x "
            f"{row['latent_snr_db']:9.1f}dB {row['top1_agreement']:7.3f} {row['waveform_snr_db']:7.1f}dB"
        )
