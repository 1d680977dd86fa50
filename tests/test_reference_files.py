"""`audio_file_path` (the seed's clients send it in /tts, /tts_stream and clone bodies): refused with 403 before any
model work unless the file lies inside REFERENCE_AUDIO_DIR, and then read like an upload. In-process, fake engine."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.state import app_state
from config import Settings
from tests.audio_checks import make_clip
from tests.conftest import BUILTIN_SPEAKER, app_client, app_settings
from tests.fakes import FakeEngine

pytestmark = pytest.mark.app
NOT_OFFERED = "reading server paths is not offered"


class _Planted:
    """Unpickling this writes a marker file: proof that a .pth in the folder was never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "unpickled"))  # type: ignore[return-value]


@dataclass
class Served:
    client: TestClient
    engine: FakeEngine
    folder: Path  # REFERENCE_AUDIO_DIR
    outside: Path  # a valid clip next to the folder, not in it
    marker: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("references")
    folder, outside_dir = root / "refs", root / "outside"
    (folder / "sub").mkdir(parents=True)
    outside_dir.mkdir()
    clip = make_clip(folder, "wav")
    clip.rename(folder / "clip.wav")
    outside = make_clip(outside_dir, "wav", seconds=2.0)
    (folder / "escape.wav").symlink_to(outside)  # inside by name, outside once resolved
    (folder / "sub" / "inner.wav").symlink_to(folder / "clip.wav")  # inside both ways
    marker = root / "unpickled.txt"
    (folder / "voice.pth").write_bytes(pickle.dumps(_Planted(marker)))
    engine = FakeEngine()
    settings = app_settings(root / "app", REFERENCE_AUDIO_DIR=folder)
    with app_client(engine, settings) as client:
        yield Served(client, engine, folder, outside, marker)


def _speech(path: str) -> dict[str, object]:
    return {"text": "Hello there.", "language": "en", "audio_file_path": path}


def _post(client: TestClient, route: str, path: str):  # type: ignore[no-untyped-def]
    if route == "/clone_speaker":
        return client.post("/clone_speaker", data={"audio_file_path": path})
    if route == "seed":  # the seed's test client: FastAPI's embedded body, to /tts_stream
        return client.post("/tts_stream", json={"request": _speech(path), "options": {"stream_chunk_size": 20}})
    return client.post(route, json=_speech(path))


ROUTES = ["/tts_stream", "/tts", "seed", "/clone_speaker"]


@pytest.mark.parametrize("route", ROUTES)
def test_without_reference_audio_dir_a_path_is_refused_before_any_model_work(
    fake_client: TestClient, tmp_path: Path, route: str
) -> None:
    clip = make_clip(tmp_path, "wav")  # a real clip the server could read
    state = app_state(fake_client.app)  # type: ignore[arg-type]
    assert state is not None and state.model is not None and isinstance(state.model.engine, FakeEngine)
    engine = state.model.engine
    clones, jobs = engine.clones, engine.jobs_submitted
    response = _post(fake_client, route, str(clip))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "server_path_refused"
    assert NOT_OFFERED in response.json()["message"]
    assert (engine.clones, engine.jobs_submitted) == (clones, jobs)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", ["clip.wav", "sub/../clip.wav", "sub/inner.wav", "{folder}/clip.wav"])
def test_a_clip_inside_the_folder_is_cloned_and_speaks(served: Served, route: str, name: str) -> None:
    response = _post(served.client, route, name.format(folder=served.folder))
    assert response.status_code == 200, response.text
    if route == "/clone_speaker":
        assert len(response.json()["speaker_embedding"]) == 512
    else:
        assert len(response.content) > 1000


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "name", ["../outside/{outside_name}", "{outside}", "escape.wav", "sub/../../outside/{outside_name}", "/etc/passwd"]
)
def test_a_path_leading_outside_the_folder_is_refused_before_any_model_work(
    served: Served, route: str, name: str
) -> None:
    clones, jobs = served.engine.clones, served.engine.jobs_submitted
    response = _post(served.client, route, name.format(outside=served.outside, outside_name=served.outside.name))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "server_path_refused"
    assert "outside REFERENCE_AUDIO_DIR" in response.json()["message"]
    assert (served.engine.clones, served.engine.jobs_submitted) == (clones, jobs)


@pytest.mark.parametrize("route", ROUTES)
def test_a_missing_file_in_the_folder_is_404(served: Served, route: str) -> None:
    clones = served.engine.clones
    response = _post(served.client, route, "nobody.wav")
    assert response.status_code == 404, response.text
    assert "no file 'nobody.wav' in REFERENCE_AUDIO_DIR" in response.json()["message"]
    assert served.engine.clones == clones


def test_a_file_that_is_not_audio_is_415_and_never_unpickled(served: Served) -> None:
    clones = served.engine.clones
    response = _post(served.client, "/tts_stream", "voice.pth")
    assert response.status_code == 415, response.text
    assert not served.marker.exists()
    assert served.engine.clones == clones


def test_a_path_with_a_voice_or_with_a_wav_file_is_refused(served: Served) -> None:
    body = {**_speech("clip.wav"), "speaker_id": BUILTIN_SPEAKER}
    assert served.client.post("/tts", json=body).status_code == 422
    both = served.client.post(
        "/clone_speaker", data={"audio_file_path": "clip.wav"}, files={"wav_file": ("a.wav", b"RIFF")}
    )
    assert both.status_code == 400
    assert served.client.post("/clone_speaker", data={"options": json.dumps({})}).status_code == 422


def test_reference_audio_dir_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for value in (tmp_path / "file", tmp_path / "missing"):
        with pytest.raises(ValidationError, match="REFERENCE_AUDIO_DIR"):
            Settings(_env_file=None, REFERENCE_AUDIO_DIR=value)  # type: ignore[call-arg]
    assert Settings(_env_file=None, REFERENCE_AUDIO_DIR="").REFERENCE_AUDIO_DIR is None  # type: ignore[call-arg]


def test_the_socket_config_takes_a_path_inside_and_refuses_one_outside(served: Served) -> None:
    config = {"type": "config", "language": "en", "audio_file_path": "sub/inner.wav"}
    with served.client.websocket_connect("/v1/tts/ws") as socket:
        socket.send_json(config)
        assert socket.receive_json()["type"] == "ready"
    with served.client.websocket_connect("/v1/tts/ws") as socket:
        socket.send_json({**config, "audio_file_path": "escape.wav"})
        assert socket.receive_json()["error"] == "server_path_refused"
