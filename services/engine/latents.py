"""A voice as XTTS uses it, and the one place its tensor shapes are checked and normalised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.errors import InvalidLatents

# Latents as they arrive: nested lists from JSON, arrays, or tensors from a file.
LatentValues = Sequence | np.ndarray | torch.Tensor
# XTTS v2's perceiver always yields 32 conditioning vectors.
COND_LATENT_FRAMES = 32


@dataclass(frozen=True, eq=False)  # identity equality: the engine keys per-voice state on the object
class VoiceLatents:
    """GPT conditioning latents [1, 32, C] and the HiFi-GAN speaker embedding [1, D, 1]."""

    gpt_cond_latent: torch.Tensor
    speaker_embedding: torch.Tensor

    def to(self, device: torch.device) -> VoiceLatents:
        return VoiceLatents(self.gpt_cond_latent.to(device), self.speaker_embedding.to(device))

    def as_lists(self) -> dict[str, list]:
        """coqui xtts-streaming-server's wire form: squeezed nested float lists."""
        return {
            "gpt_cond_latent": self.gpt_cond_latent.detach().float().cpu().squeeze(0).tolist(),
            "speaker_embedding": self.speaker_embedding.detach().float().cpu().reshape(-1).tolist(),
        }


def normalize_latents(
    gpt_cond_latent: LatentValues,
    speaker_embedding: LatentValues,
    latent_dim: int,
    embedding_dim: int,
) -> VoiceLatents:
    """Accept latents squeezed or not (as any coqui server or saved file holds them) and return model shapes.

    gpt_cond_latent: any nesting of 32 x latent_dim values ([32, C], [1, 32, C], flat);
    speaker_embedding: any nesting of embedding_dim values ([D], [1, D], [D, 1], [1, D, 1]).
    """
    cond = _as_float_tensor(gpt_cond_latent, "gpt_cond_latent")
    expected_cond = COND_LATENT_FRAMES * latent_dim
    if cond.numel() != expected_cond or (cond.dim() >= 2 and cond.shape[-1] != latent_dim):
        raise InvalidLatents(
            f"gpt_cond_latent has shape {list(cond.shape)}; expected [{COND_LATENT_FRAMES}, {latent_dim}] "
            f"(or [1, {COND_LATENT_FRAMES}, {latent_dim}])",
            expected_shape=[COND_LATENT_FRAMES, latent_dim],
            received_shape=list(cond.shape),
        )
    embedding = _as_float_tensor(speaker_embedding, "speaker_embedding")
    if embedding.numel() != embedding_dim:
        raise InvalidLatents(
            f"speaker_embedding has shape {list(embedding.shape)}; expected [{embedding_dim}] "
            f"(or [1, {embedding_dim}, 1])",
            expected_shape=[embedding_dim],
            received_shape=list(embedding.shape),
        )
    return VoiceLatents(
        gpt_cond_latent=cond.reshape(1, COND_LATENT_FRAMES, latent_dim).contiguous(),
        speaker_embedding=embedding.reshape(1, embedding_dim, 1).contiguous(),
    )


def _as_float_tensor(values: LatentValues, name: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise InvalidLatents(f"{name} must be a rectangular nested list of numbers ({error})") from error
    if not torch.isfinite(tensor).all():
        raise InvalidLatents(f"{name} holds NaN or infinite values")
    return tensor
