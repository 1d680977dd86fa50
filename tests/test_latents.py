"""Voice latents in every shape coqui's servers and saved files carry, normalised or refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.engine.latents import MAX_COND_LATENT_FRAMES, normalize_latents
from services.errors import InvalidLatents

RNG = np.random.default_rng(0)
COND = RNG.standard_normal((32, 1024)).astype(np.float32)
EMBEDDING = RNG.standard_normal(512).astype(np.float32)


@pytest.mark.parametrize(
    "cond",
    [COND, COND[None], COND.ravel(), COND.tolist(), torch.from_numpy(COND)],
    ids=["2d", "3d", "flat", "lists", "tensor"],
)
@pytest.mark.parametrize(
    "embedding", [EMBEDDING, EMBEDDING[None], EMBEDDING[:, None], EMBEDDING[None, :, None], EMBEDDING.tolist()],
    ids=["1d", "row", "column", "3d", "list"],
)  # fmt: skip
def test_any_of_coquis_shapes_becomes_the_models(cond: object, embedding: object) -> None:
    latents = normalize_latents(cond, embedding, 1024, 512)  # type: ignore[arg-type]
    assert latents.gpt_cond_latent.shape == (1, 32, 1024) and latents.speaker_embedding.shape == (1, 512, 1)
    assert torch.equal(latents.gpt_cond_latent[0], torch.from_numpy(COND))
    assert torch.equal(latents.speaker_embedding.reshape(-1), torch.from_numpy(EMBEDDING))


@pytest.mark.parametrize("frames", [1, 7, 31, 33, 100, MAX_COND_LATENT_FRAMES])
@pytest.mark.parametrize("form", ["2d", "3d", "flat"])
def test_latents_of_any_frame_count_keep_every_frame(frames: int, form: str) -> None:
    """coqui's server reshapes latents to (-1, 1024): clones made without the perceiver carry N != 32 frames."""
    cond = RNG.standard_normal((frames, 1024)).astype(np.float32)
    sent = {"2d": cond, "3d": cond[None], "flat": cond.ravel()}[form]
    latents = normalize_latents(sent, EMBEDDING, 1024, 512)
    assert latents.gpt_cond_latent.shape == (1, frames, 1024)
    assert torch.equal(latents.gpt_cond_latent[0], torch.from_numpy(cond))


def test_the_wire_form_round_trips() -> None:
    wire = normalize_latents(COND, EMBEDDING, 1024, 512).as_lists()
    assert np.array(wire["gpt_cond_latent"]).shape == (32, 1024) and len(wire["speaker_embedding"]) == 512
    again = normalize_latents(wire["gpt_cond_latent"], wire["speaker_embedding"], 1024, 512)
    assert torch.equal(again.gpt_cond_latent[0], torch.from_numpy(COND))


@pytest.mark.parametrize(
    ("cond", "embedding", "needle"),
    [
        (COND.T, EMBEDDING, "[N, 1024]"),
        (COND.ravel()[:-1], EMBEDDING, "[N, 1024]"),
        (np.stack([COND, COND]), EMBEDDING, "[N, 1024]"),
        (np.zeros((0, 1024)), EMBEDDING, "[N, 1024]"),
        (np.zeros((MAX_COND_LATENT_FRAMES + 1, 1024)), EMBEDDING, f"at most {MAX_COND_LATENT_FRAMES}"),
        (COND, EMBEDDING[:500], "[512]"),
        ([[1.0, 2.0], [3.0]], EMBEDDING, "rectangular"),
        (np.full((32, 1024), np.nan), EMBEDDING, "NaN"),
        (COND, np.full(512, np.inf), "infinite"),
        ("not numbers", EMBEDDING, "rectangular"),
    ],
)
def test_unusable_latents_are_refused_saying_what_was_expected(cond: object, embedding: object, needle: str) -> None:
    with pytest.raises(InvalidLatents) as refused:
        normalize_latents(cond, embedding, 1024, 512)  # type: ignore[arg-type]
    assert needle in refused.value.message
