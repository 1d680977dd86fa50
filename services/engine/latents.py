"""A voice as XTTS uses it, and the one place its tensor shapes are checked and normalised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.errors import InvalidLatents

# Latents as they arrive: nested lists from JSON, arrays, or tensors from a file.
LatentValues = Sequence | np.ndarray | torch.Tensor
# XTTS v2's perceiver yields 32 conditioning vectors; latents made without it (older clones, other
# conditioning settings) carry one per mel frame. coqui's server reshapes them to (-1, C), so any count works.
COND_LATENT_FRAMES = 32
# Each frame is one more prompt position for every sentence of the voice (30 layers x 2 x C floats of KV
# cache: 0.24 MB in float32 at C=1024), so the count is bounded: 512 frames is about 6 s of mel frames.
MAX_COND_LATENT_FRAMES = 512
# Real latents are normalised where they are made (the perceiver resampler ends in an RMSNorm, the speaker
# encoder's embedding is L2-normalised), so their values are of order one. Far larger values pass a
# finite-number check yet drive the GPT's attention or the vocoder to infinities: refuse them at the door.
MAX_LATENT_MAGNITUDE = 1000.0


@dataclass(frozen=True, eq=False)  # identity equality: the engine keys per-voice state on the object
class VoiceLatents:
    """GPT conditioning latents [1, N, C] (N = 32 from XTTS v2's perceiver) and the HiFi-GAN speaker embedding
    [1, D, 1]."""

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

    gpt_cond_latent: N frames of latent_dim values, 1 <= N <= MAX_COND_LATENT_FRAMES ([N, C], [1, N, C], or
    flat N * C values, as coqui's server reshapes them to (-1, C));
    speaker_embedding: any nesting of embedding_dim values ([D], [1, D], [D, 1], [1, D, 1]).
    """
    cond = _as_float_tensor(gpt_cond_latent, "gpt_cond_latent")
    frames = cond.numel() // latent_dim
    well_shaped = (
        cond.numel() > 0
        and cond.numel() % latent_dim == 0
        and (cond.dim() <= 1 or cond.shape[-1] == latent_dim)
        and all(size == 1 for size in cond.shape[:-2])
    )
    if not well_shaped:
        raise InvalidLatents(
            f"gpt_cond_latent has shape {list(cond.shape)}; expected [N, {latent_dim}] or [1, N, {latent_dim}] "
            f"(N conditioning frames, {COND_LATENT_FRAMES} from XTTS v2's cloning)",
            expected_shape=["N", latent_dim],
            received_shape=list(cond.shape),
        )
    if frames > MAX_COND_LATENT_FRAMES:
        raise InvalidLatents(
            f"gpt_cond_latent has {frames} frames; at most {MAX_COND_LATENT_FRAMES} are accepted",
            expected_shape=[f"N <= {MAX_COND_LATENT_FRAMES}", latent_dim],
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
        gpt_cond_latent=cond.reshape(1, frames, latent_dim).contiguous(),
        speaker_embedding=embedding.reshape(1, embedding_dim, 1).contiguous(),
    )


def _as_float_tensor(values: LatentValues, name: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError) as error:
        raise InvalidLatents(f"{name} must be a rectangular nested list of numbers ({error})") from error
    if not torch.isfinite(tensor).all():
        raise InvalidLatents(f"{name} holds NaN or infinite values", field=name)
    if tensor.numel() and (largest := float(tensor.abs().max())) > MAX_LATENT_MAGNITUDE:
        raise InvalidLatents(
            f"{name} holds a value of magnitude {largest:.3g}; latents stay within ±{MAX_LATENT_MAGNITUDE:g}",
            field=name,
            max_magnitude=MAX_LATENT_MAGNITUDE,
        )
    return tensor
