"""Cloning, saved voices and the cache, in-process: real cloning with the tiny model, the rest with the fake."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.state import app_state
from tests.audio_checks import FORMATS, assert_pcm_wav, make_clip
from tests.conftest import app_client, app_settings
from tests.fakes import FakeEngine


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture
def client(fake_client: TestClient) -> TestClient:
    """Here the shared in-process app with the fake engine (cloning tests ask for the tiny model)."""
    return fake_client


def clone(client: TestClient, *paths: Path, **options: object):  # type: ignore[no-untyped-def]
    files = [("wav_file", (path.name, path.read_bytes())) for path in paths]
    data = {"options": json.dumps(options)} if options else {}
    return client.post("/clone_speaker", files=files, data=data)


def voices_dir(client: TestClient) -> Path:
    state = app_state(client.app)  # type: ignore[arg-type]
    assert state is not None
    return state.settings.VOICES_DIR


@pytest.mark.parametrize("extension", sorted(FORMATS))
def test_clone_from_each_format_returns_coqui_shaped_latents(
    tiny_client: TestClient, clips: Path, extension: str
) -> None:
    response = clone(tiny_client, make_clip(clips, extension))
    assert response.status_code == 200, response.text
    latents = response.json()
    assert np.array(latents["gpt_cond_latent"]).shape == (32, 1024)
    assert np.array(latents["speaker_embedding"]).shape == (512,)


def test_seed_readme_flow_clone_save_then_stream_by_id(tiny_client: TestClient, clips: Path) -> None:
    client = tiny_client
    response = clone(
        client,
        make_clip(clips, "wav"),
        response_format="save",
        save_id="my-voice",
        name="My voice",
        description="a test voice",
        overwrite=True,
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["voice_id"] == "my-voice" and record["name"] == "My voice" and record["size_bytes"] > 100_000
    stream = client.post("/tts_stream", json={"text": "Hello world.", "language": "en", "speaker_id": "my-voice"})
    assert stream.status_code == 200
    assert_pcm_wav(stream.content)
    listed = {voice["voice_id"]: voice for voice in client.get("/saved_voices").json()}
    assert listed["my-voice"]["description"] == "a test voice" and listed["my-voice"]["created_at"]
    one = client.get("/saved_voices/my-voice").json()
    assert np.array(one["gpt_cond_latent"]).shape == (32, 1024)


def test_several_files_make_one_voice(tiny_client: TestClient, clips: Path) -> None:
    client = tiny_client
    one = clone(client, make_clip(clips, "wav")).json()
    both = clone(client, make_clip(clips, "wav"), make_clip(clips, "flac", seconds=2.0)).json()
    assert both["speaker_embedding"] != one["speaker_embedding"]


def test_saving_over_an_existing_id_is_409_unless_overwrite(client: TestClient) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Bass"]
    assert client.post("/save_voice/dup-voice", json={**latents, "overwrite": True}).status_code == 201
    conflict = client.post("/save_voice/dup-voice", json=latents)
    assert conflict.status_code == 409 and conflict.json()["error"] == "voice_exists"
    assert client.post("/save_voice/dup-voice", json={**latents, "name": "Again", "overwrite": True}).status_code == 201
    assert client.get("/saved_voices/dup-voice").json()["name"] == "Again"


def test_latents_round_trip_through_coqui_shapes(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    cond = rng.standard_normal((32, 1024)).astype(np.float32)
    embedding = rng.standard_normal(512).astype(np.float32)
    for voice_id, body in {
        "squeezed": {"gpt_cond_latent": cond.tolist(), "speaker_embedding": embedding.tolist()},
        "unsqueezed": {"gpt_cond_latent": cond[None].tolist(), "speaker_embedding": embedding[None, :, None].tolist()},
    }.items():
        assert client.post(f"/save_voice/{voice_id}", json={**body, "overwrite": True}).status_code == 201
        saved = client.get(f"/saved_voices/{voice_id}").json()
        np.testing.assert_allclose(saved["gpt_cond_latent"], cond, rtol=1e-6)
        np.testing.assert_allclose(saved["speaker_embedding"], embedding, rtol=1e-6)
        stream = client.post("/tts_stream", json={"text": "Hi.", "language": "en", "speaker_id": voice_id})
        assert stream.status_code == 200


def test_deleted_voice_is_not_served_from_cache(client: TestClient) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Tenor"]
    client.post("/save_voice/short-lived", json={**latents, "overwrite": True})
    speak = {"text": "Hi.", "language": "en", "speaker_id": "short-lived"}
    assert client.post("/tts_stream", json=speak).status_code == 200  # now cached
    assert client.delete("/saved_voices/short-lived").status_code == 200
    assert client.post("/tts_stream", json=speak).status_code == 404
    assert client.get("/saved_voices/short-lived").status_code == 404
    assert client.delete("/saved_voices/short-lived").status_code == 404


def test_cache_counts_hits_and_misses_and_clears(client: TestClient) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Alto"]
    client.post("/save_voice/cached-voice", json={**latents, "overwrite": True})
    client.post("/cache/clear")
    before = client.get("/cache/stats").json()
    speak = {"text": "Hi.", "language": "en", "speaker_id": "cached-voice"}
    for _ in range(3):
        assert client.post("/tts_stream", json=speak).status_code == 200
    after = client.get("/cache/stats").json()
    assert after["misses"] - before["misses"] == 1
    assert after["hits"] - before["hits"] == 2
    assert after["size"] >= 1 and after["max_size"] == 100 and after["ttl_s"] == 3600
    assert 0 < after["hit_rate"] <= 1
    assert client.post("/cache/clear").json()["cleared"] >= 1
    assert client.get("/cache/stats").json()["size"] == 0


@pytest.mark.parametrize(
    ("make", "status", "needle"),
    [
        (lambda folder: folder / "notes.txt", 415, "not a supported audio file"),
        (lambda folder: folder / "picture.png", 415, "not a supported audio file"),
        (lambda folder: folder / "broken.wav", 400, "could not be decoded"),
        (lambda folder: make_clip(folder, "wav", seconds=0.4), 400, "at least"),
        (lambda folder: make_clip(folder, "wav", silent=True), 400, "silent"),
        (lambda folder: folder / "video-only.mp4", 415, "no audio stream"),
    ],
)
def test_unusable_uploads_get_a_clear_4xx(
    client: TestClient, clips: Path, make: object, status: int, needle: str
) -> None:
    (clips / "notes.txt").write_text("hello, I am not audio\n" * 100)
    (clips / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    (clips / "broken.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEfmt " + bytes(range(256)) * 40)
    if not (clips / "video-only.mp4").exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=32x32:d=1",
                        "-c:v", "mpeg4", str(clips / "video-only.mp4")], check=True)  # fmt: skip
    response = clone(client, make(clips))  # type: ignore[operator]
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]


def test_forged_wav_header_does_not_hang_or_exhaust(client: TestClient) -> None:
    # claims 4 GB of 8-channel 384 kHz audio, holds 1 kB
    forged = (
        b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x08\x00\x00\xdc\x05\x00"
        b"\x00\x00\x00\x00\x10\x00\x10\x00data\xff\xff\xff\xff" + bytes(1000)
    )
    response = clone(client, _write(client, forged))
    assert response.status_code == 400
    assert client.get("/health").status_code == 200


def _write(client: TestClient, data: bytes) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "forged.wav"
    path.write_bytes(data)
    return path


def test_upload_over_max_upload_mb_is_413(client: TestClient) -> None:
    limit = 2 * 1_000_000  # SHARED_SETTINGS' MAX_UPLOAD_MB
    response = client.post("/clone_speaker", files={"wav_file": ("big.wav", b"\0" * int(limit + 10))})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ('{"response_format": "save"}', "save_id"),
        ('{"response_format": "bogus"}', "response_format"),
        ("{not json", "options"),
        ('{"max_ref_length": 0}', "max_ref_length"),
        ('{"gpt_cond_len": 3, "gpt_cond_chunk_len": 6}', "gpt_cond_chunk_len"),
    ],
)
def test_bad_clone_options_are_422(client: TestClient, clips: Path, options: str, needle: str) -> None:
    clip = make_clip(clips, "wav")
    response = client.post(
        "/clone_speaker", files={"wav_file": (clip.name, clip.read_bytes())}, data={"options": options}
    )
    assert response.status_code == 422, response.text
    assert needle in response.text


TRAVERSAL_IDS = ["../x", "..", "/etc/passwd", "a\0b", "x" * 300, "stimme-ä", "a b", "x.safetensors", "C:\\x"]


@pytest.mark.parametrize("voice_id", TRAVERSAL_IDS)
def test_traversal_ids_are_refused_and_write_nothing(client: TestClient, clips: Path, voice_id: str) -> None:
    root = voices_dir(client)
    outside_before = sorted(path.name for path in root.parent.iterdir())
    inside_before = sorted(path.name for path in root.iterdir())
    latents = client.get("/studio_speakers").json()["Dummy Alto"]
    # encoded so the client cannot normalise it away: the server sees the id as sent
    segment = quote(voice_id, safe="").replace(".", "%2E")
    answers = [
        client.post(f"/save_voice/{segment}", json=latents),
        client.get(f"/saved_voices/{segment}"),
        client.delete(f"/saved_voices/{segment}"),
        clone(client, make_clip(clips, "wav"), response_format="save", save_id=voice_id),
    ]
    for response in answers:
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text)
    assert sorted(path.name for path in root.parent.iterdir()) == outside_before
    assert sorted(path.name for path in root.iterdir()) == inside_before


def test_percent_encoded_traversal_is_refused(client: TestClient) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Alto"]
    for raw in ("/save_voice/%2e%2e%2fescaped", "/save_voice/..%2fescaped", "/save_voice/%2e%2e"):
        response = client.post(raw, json=latents)
        assert 400 <= response.status_code < 500, (raw, response.status_code)
    assert not (voices_dir(client).parent / "escaped.safetensors").exists()


class _Planted:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/xtts-test-pickle-ran")


def test_planted_pickle_file_is_never_executed(client: TestClient) -> None:
    payload = pickle.dumps(_Planted())
    MARKER.unlink(missing_ok=True)
    pickle.loads(payload)  # the payload is live: unpickling it runs the command
    assert MARKER.exists()
    MARKER.unlink()
    (voices_dir(client) / "evil.safetensors").write_bytes(payload)  # where a saved voice lives
    try:
        speak = client.post("/tts_stream", json={"text": "Hi.", "language": "en", "speaker_id": "evil"})
        fetch = client.get("/saved_voices/evil")
        for response in (speak, fetch):
            assert response.status_code == 500 and response.json()["error"] == "voice_unreadable", response.text
        assert "evil" not in [voice["voice_id"] for voice in client.get("/saved_voices").json()]
        assert not MARKER.exists(), "a planted pickle was executed"
    finally:
        (voices_dir(client) / "evil.safetensors").unlink()


def test_voice_survives_restart_and_leftovers_are_cleaned(
    tmp_path: Path, clips: Path, caplog: pytest.LogCaptureFixture
) -> None:
    latents = {"gpt_cond_latent": np.ones((32, 1024)).tolist(), "speaker_embedding": np.ones(512).tolist()}
    with app_client(FakeEngine(), app_settings(tmp_path)) as first:
        assert first.post("/save_voice/keeper", json={**latents, "name": "Keeper"}).status_code == 201
    leftover = tmp_path / "voices" / ".tmp-crashed.safetensors"
    leftover.write_bytes(b"half a voice")
    with app_client(FakeEngine(), app_settings(tmp_path, PRELOAD_VOICES="keeper,not-a-voice")) as second:
        assert [(voice["voice_id"], voice["name"]) for voice in second.get("/saved_voices").json()] == [
            ("keeper", "Keeper")
        ]
        assert second.get("/cache/stats").json()["size"] == 1  # preloaded
        stream = second.post("/tts_stream", json={"text": "Still here.", "language": "en", "speaker_id": "keeper"})
        assert stream.status_code == 200
        assert_pcm_wav(stream.content)
    assert not leftover.exists()
    assert "not-a-voice" in caplog.text  # warned, not crashed


@pytest.mark.parametrize("frames", [1, 60])  # one frame, and more than the 32 of coqui's perceiver
def test_latents_of_any_frame_count_speak_and_save(tiny_client: TestClient, frames: int) -> None:
    """coqui's server reshapes latents to (-1, 1024): clones made without its perceiver carry N != 32 frames."""
    rng = np.random.default_rng(frames)
    cond = (rng.standard_normal((frames, 1024)) * 0.5).astype(np.float32)
    embedding = rng.standard_normal(512).astype(np.float32)
    flat = {"gpt_cond_latent": cond.ravel().tolist(), "speaker_embedding": embedding.tolist()}
    nested = {"gpt_cond_latent": cond[None].tolist(), "speaker_embedding": embedding.tolist()}
    request = {"text": "Hi.", "language": "en", "seed": 3}
    streamed = tiny_client.post("/tts_stream", json={**request, **flat})
    assert streamed.status_code == 200
    assert_pcm_wav(streamed.content)
    whole = tiny_client.post("/tts", json={**request, **nested}, headers={"Accept": "audio/wav"})
    assert whole.status_code == 200 and whole.content[44:] == streamed.content[44:]

    voice_id = f"frames-{frames}"
    assert tiny_client.post(f"/save_voice/{voice_id}", json={**flat, "overwrite": True}).status_code == 201
    saved = tiny_client.get(f"/saved_voices/{voice_id}").json()
    np.testing.assert_allclose(saved["gpt_cond_latent"], cond, rtol=1e-6)
    by_id = tiny_client.post("/tts_stream", json={**request, "speaker_id": voice_id})
    assert by_id.status_code == 200 and by_id.content[44:] == streamed.content[44:]


def test_latents_over_the_frame_cap_are_422(client: TestClient) -> None:
    too_many = {"gpt_cond_latent": [[0] * 1024] * 513, "speaker_embedding": [1] * 512}  # compact: under 2 MB
    for response in (
        client.post("/save_voice/too-long", json=too_many),
        client.post("/tts_stream", json={"text": "Hi.", "language": "en", **too_many}),
    ):
        assert response.status_code == 422
        assert "at most 512" in response.json()["message"]
