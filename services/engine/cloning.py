"""Voice latents from reference audio, as coqui's `Xtts.get_conditioning_latents` computes them."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
import torch
from TTS.tts.models.xtts import Xtts

from services.engine.latents import VoiceLatents
from services.errors import InvalidAudio

CLONE_SAMPLE_RATE = 22050  # what XTTS's conditioning encoders expect


@dataclass(frozen=True)
class CloneSettings:
    """coqui's `get_conditioning_latents` knobs, with its defaults."""

    gpt_cond_len: int = 6
    gpt_cond_chunk_len: int = 6
    max_ref_length: int = 30
    sound_norm_refs: bool = False
    librosa_trim_db: float | None = None


def prepare_clip(samples: np.ndarray, settings: CloneSettings) -> np.ndarray:
    """One reference as coqui prepares it: cut to max_ref_length, loudness-normalised and trimmed if asked."""
    audio = samples[: CLONE_SAMPLE_RATE * settings.max_ref_length]
    if settings.sound_norm_refs:
        audio = audio / np.abs(audio).max() * 0.75
    if settings.librosa_trim_db is not None:
        audio = librosa.effects.trim(audio, top_db=settings.librosa_trim_db)[0]
    if audio.size < CLONE_SAMPLE_RATE // 2:
        raise InvalidAudio("a reference clip is under 0.5 s once silence is trimmed; lower librosa_trim_db")
    return np.ascontiguousarray(audio, dtype=np.float32)


def speaker_embedding(model: Xtts, clip: np.ndarray) -> torch.Tensor:
    """HiFi-GAN's speaker embedding of one prepared clip [1, D, 1]. Model thread only."""
    return model.get_speaker_embedding(torch.from_numpy(clip)[None].to(model.device), CLONE_SAMPLE_RATE)


def conditioning_windows(samples: int, settings: CloneSettings, perceiver: bool) -> list[tuple[int, int]]:
    """The spans of the joined references coqui's get_gpt_cond_latents reads: its first gpt_cond_len seconds in
    gpt_cond_chunk_len chunks (chunks under 0.33 s are skipped), or all of it at once without the perceiver."""
    if not perceiver:
        return [(0, samples)]
    end = min(samples, CLONE_SAMPLE_RATE * settings.gpt_cond_len)
    step = CLONE_SAMPLE_RATE * settings.gpt_cond_chunk_len
    windows = [(start, min(start + step, end)) for start in range(0, end, step)]
    return [(start, stop) for start, stop in windows if stop - start >= CLONE_SAMPLE_RATE * MIN_CHUNK_SECONDS]


MIN_CHUNK_SECONDS = 0.33  # coqui's MIN_AUDIO_SECONDS


@torch.inference_mode()
def conditioning_part(
    model: Xtts, joined: np.ndarray, window: tuple[int, int], settings: CloneSettings
) -> torch.Tensor:
    """GPT conditioning latents [1, N, C] of one window, by coqui's own code. Model thread only."""
    start, stop = window
    audio = torch.from_numpy(joined[start:stop])[None].to(model.device)
    length = settings.gpt_cond_chunk_len if model.args.gpt_use_perceiver_resampler else -1
    return model.get_gpt_cond_latents(audio, CLONE_SAMPLE_RATE, length=length, chunk_length=length)


def combine(parts: list[torch.Tensor], embeddings: list[torch.Tensor]) -> VoiceLatents:
    """coqui's averages: of the chunks' style embeddings, and of the clips' speaker embeddings."""
    if not parts:
        raise InvalidAudio("the references are too short to condition the GPT on (under 0.33 s)")
    cond = parts[0] if len(parts) == 1 else torch.stack(parts).mean(dim=0)
    return VoiceLatents(gpt_cond_latent=cond, speaker_embedding=torch.stack(embeddings).mean(dim=0))
