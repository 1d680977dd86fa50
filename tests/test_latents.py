"""Voice latents in every shape coqui's servers and saved files carry, normalised or refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.engine.latents import normalize_latents
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


def test_the_wire_form_round_trips() -> None:
    wire = normalize_latents(COND, EMBEDDING, 1024, 512).as_lists()
    assert np.array(wire["gpt_cond_latent"]).shape == (32, 1024) and len(wire["speaker_embedding"]) == 512
    again = normalize_latents(wire["gpt_cond_latent"], wire["speaker_embedding"], 1024, 512)
    assert torch.equal(again.gpt_cond_latent[0], torch.from_numpy(COND))


@pytest.mark.parametrize(
    ("cond", "embedding", "needle"),
    [
        (COND[:31], EMBEDDING, "[32, 1024]"),
        (COND.T, EMBEDDING, "[32, 1024]"),
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
