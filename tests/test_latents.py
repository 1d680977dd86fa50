"""Voice latents in every shape coqui's servers and saved files carry, normalised or refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from services.engine.latents import MAX_COND_LATENT_FRAMES, MAX_LATENT_MAGNITUDE, VoiceLatents, normalize_latents
from services.errors import InvalidLatents, ServiceError
from services.voice_store import VoiceStore

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


@pytest.mark.parametrize(
    ("cond", "embedding", "field"),
    [(COND * 1e20, EMBEDDING, "gpt_cond_latent"), (COND, EMBEDDING * 1e4, "speaker_embedding")],
    ids=["cond", "embedding"],
)
def test_absurd_but_finite_latents_are_refused_naming_the_field(cond: object, embedding: object, field: str) -> None:
    """Finite values far beyond any real latents pass a NaN check yet drive the model to infinities."""
    with pytest.raises(InvalidLatents) as refused:
        normalize_latents(cond, embedding, 1024, 512)  # type: ignore[arg-type]
    assert refused.value.details["field"] == field and f"±{MAX_LATENT_MAGNITUDE:g}" in refused.value.message
    edge = np.full((32, 1024), MAX_LATENT_MAGNITUDE, dtype=np.float32)
    assert normalize_latents(edge, EMBEDDING, 1024, 512).gpt_cond_latent.abs().max() == MAX_LATENT_MAGNITUDE


def test_poisoned_latents_get_a_422_before_any_audio_and_are_not_saved(fake_client: TestClient) -> None:
    poisoned = {"gpt_cond_latent": (COND * 1e20).tolist(), "speaker_embedding": EMBEDDING.tolist()}
    speech = fake_client.post("/tts_stream", json={"text": "Hello.", "language": "en", **poisoned})
    assert speech.status_code == 422 and speech.json()["error"] == "invalid_latents"
    assert speech.json()["details"]["field"] == "gpt_cond_latent"
    saved = fake_client.post("/save_voice/poisoned", json=poisoned)
    assert saved.status_code == 422 and saved.json()["error"] == "invalid_latents"
    assert "poisoned" not in {voice["voice_id"] for voice in fake_client.get("/saved_voices").json()}


def test_a_stored_voice_with_absurd_latents_is_refused_when_loaded(tmp_path: Path) -> None:
    """A file planted in (or corrupted on) the voices folder is checked as a request is."""
    store = VoiceStore(tmp_path, 1024, 512)
    planted = VoiceLatents(torch.from_numpy(COND * 1e20)[None], torch.from_numpy(EMBEDDING).reshape(1, 512, 1))
    store.save("planted", planted, "planted", "", overwrite=False)
    with pytest.raises(ServiceError) as refused:
        store.load("planted")
    assert "±1000" in refused.value.message
