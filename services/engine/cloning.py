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


def compute_voice_latents(model: Xtts, clips: list[np.ndarray], settings: CloneSettings) -> VoiceLatents:
    """Speaker embedding per clip (averaged) and GPT latents over all clips joined. Model thread only."""
    audios = []
    embeddings = []
    for samples in clips:
        audio = samples[: CLONE_SAMPLE_RATE * settings.max_ref_length]
        if settings.sound_norm_refs:
            audio = audio / np.abs(audio).max() * 0.75
        if settings.librosa_trim_db is not None:
            audio = librosa.effects.trim(audio, top_db=settings.librosa_trim_db)[0]
        if audio.size < CLONE_SAMPLE_RATE // 2:
            raise InvalidAudio("a reference clip is under 0.5 s once silence is trimmed; lower librosa_trim_db")
        tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(model.device)
        embeddings.append(model.get_speaker_embedding(tensor, CLONE_SAMPLE_RATE))
        audios.append(tensor)
    cond_latent = model.get_gpt_cond_latents(
        torch.cat(audios, dim=-1),
        CLONE_SAMPLE_RATE,
        length=settings.gpt_cond_len,
        chunk_length=settings.gpt_cond_chunk_len,
    )
    return VoiceLatents(gpt_cond_latent=cond_latent, speaker_embedding=torch.stack(embeddings).mean(dim=0))
