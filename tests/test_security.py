"""Safe to expose: API keys and their admin scope, session ownership, the cross-site write guard, closed metric
labels, well-formed Unicode, 413 for chunked bodies, and a deadline for slow request heads."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.state import app_state
from tests.audio_checks import make_clip
from tests.conftest import BUILTIN_SPEAKER, LiveServer, app_client, app_settings, live_server, start_server, wait_for
from tests.fakes import FakeEngine

USER, OTHER, ADMIN = "user-key-0123456789", "other-key-0123456789", "admin-key-0123456789"
SPEECH = {"text": "Hello there.", "language": "en", "speaker_id": BUILTIN_SPEAKER}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("keyed")
    keys_file = folder / "keys.txt"
    keys_file.write_text(f"# one key per line\n{OTHER}\n\n")
    settings = app_settings(folder, API_KEYS=USER, API_KEYS_FILE=str(keys_file), ADMIN_API_KEYS=ADMIN)
    with app_client(FakeEngine(), settings) as client:
        yield client


def latents(client: TestClient, key: str = USER) -> dict[str, object]:
    return client.get("/studio_speakers", headers=bearer(key)).json()["Dummy Tenor"]  # type: ignore[no-any-return]


def test_without_a_key_only_health_ready_and_docs_answer(keyed: TestClient) -> None:
    for path in ("/health", "/ready", "/", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    closed = [("POST", "/tts_stream"), ("GET", "/saved_voices"), ("GET", "/metrics"), ("GET", "/v1/models"),
              ("GET", "/xtts-api/speakers"), ("GET", "/stream_status/abc")]  # fmt: skip
    for method, path in closed:
        answer = keyed.request(method, path, json=SPEECH)
        assert answer.status_code == 401, (method, path)
        assert answer.headers["www-authenticate"] == 'Bearer realm="xtts-server"'
    wrong = keyed.post("/tts_stream", json=SPEECH, headers=bearer("not-a-key"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    openai_shape = keyed.post("/v1/audio/speech", json={"input": "Hi.", "voice": "alloy"})
    assert openai_shape.status_code == 401 and openai_shape.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers", [bearer(USER), {"X-API-Key": USER}, bearer(OTHER), {"authorization": f"bearer {ADMIN}"}]
)
def test_a_key_in_either_header_is_accepted(keyed: TestClient, headers: dict[str, str]) -> None:
    answer = keyed.post("/tts_stream", json=SPEECH, headers=headers)
    assert answer.status_code == 200 and answer.headers["x-session-id"]


def test_deleting_overwriting_and_clearing_need_an_admin_key(keyed: TestClient) -> None:
    body = {**latents(keyed), "name": "Mine"}
    assert keyed.post("/save_voice/users-voice", json=body, headers=bearer(USER)).status_code == 201
    for method, path, payload in (
        ("DELETE", "/saved_voices/users-voice", None),
        ("POST", "/save_voice/users-voice", {**body, "overwrite": True}),
        ("POST", "/cache/clear", None),
    ):
        refused = keyed.request(method, path, json=payload, headers=bearer(USER))
        assert refused.status_code == 403 and "admin" in refused.json()["message"], (method, path)
        assert keyed.request(method, path, json=payload, headers=bearer(ADMIN)).status_code in (200, 201)
    clone = keyed.post("/clone_speaker", files={"wav_file": ("a.wav", b"RIFF")},
                       data={"options": '{"response_format": "save", "save_id": "x", "overwrite": true}'},
                       headers=bearer(USER))  # fmt: skip
    assert clone.status_code == 403


def test_a_session_belongs_to_the_key_that_started_it(keyed: TestClient) -> None:
    started = keyed.post("/tts_stream", json={**SPEECH, "session_id": "shared-name"}, headers=bearer(USER))
    session_id = started.headers["x-session-id"]
    assert keyed.get(f"/stream_status/{session_id}", headers=bearer(USER)).status_code == 200
    assert keyed.get(f"/stream_status/{session_id}", headers=bearer(OTHER)).status_code == 404  # as if unknown
    assert keyed.delete(f"/stream_cancel/{session_id}", headers=bearer(OTHER)).status_code == 404
    assert keyed.get(f"/stream_status/{session_id}", headers=bearer(ADMIN)).status_code == 200
    # the same proposed id under another key is that key's own session: nobody can squat another's ids
    theirs = keyed.post("/tts_stream", json={**SPEECH, "session_id": "shared-name"}, headers=bearer(OTHER))
    assert theirs.status_code == 200
    again = keyed.post("/tts_stream", json={**SPEECH, "session_id": "shared-name"}, headers=bearer(OTHER))
    assert again.status_code == 409


def test_keys_never_reach_the_log(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    keyed.post("/tts_stream", json=SPEECH, headers=bearer(USER))
    keyed.post("/tts_stream", json=SPEECH, headers=bearer("a-wrong-key-to-log"))
    assert USER not in caplog.text and "a-wrong-key-to-log" not in caplog.text


def test_metrics_and_docs_are_configurable(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, API_KEYS=USER, METRICS_NEED_KEY=False, DOCS_NEED_KEY=True)
    with app_client(FakeEngine(), settings) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 401 and client.get("/").status_code == 401
        assert client.get("/openapi.json", headers=bearer(USER)).status_code == 200


# -- cross-site writes (no keys needed to be safe from them) ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "POST",
            "/clone_speaker",
            {"files": {"wav_file": ("a.wav", b"RIFF")}, "data": {"options": '{"overwrite": true}'}},
        ),
        ("DELETE", "/saved_voices/victim", {}),
        ("POST", "/cache/clear", {}),
        ("DELETE", "/stream_cancel/some-session", {}),
        ("POST", "/tts_stream", {"content": '{"text": "hi"}', "headers": {"Content-Type": "text/plain"}}),
    ],
)
def test_a_foreign_page_cannot_change_anything(fake_client: TestClient, method: str, path: str, kwargs: dict) -> None:  # type: ignore[type-arg]
    headers = {"Origin": "http://evil.example", **kwargs.pop("headers", {})}
    refused = fake_client.request(method, path, headers=headers, **kwargs)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert "CORS_ALLOW_ORIGINS" in refused.json()["message"]


def test_the_servers_own_pages_and_allowed_origins_may_write(fake_client: TestClient, tmp_path: Path) -> None:
    own = fake_client.post("/tts_stream", json=SPEECH, headers={"Origin": "http://testserver"})  # /demo's origin
    assert own.status_code == 200
    assert fake_client.post("/tts_stream", json=SPEECH).status_code == 200  # curl, SDKs: no Origin at all
    assert fake_client.post("/cache/clear", headers={"Origin": "null"}).status_code == 403
    with app_client(FakeEngine(), app_settings(tmp_path, CORS_ALLOW_ORIGINS="http://app.example")) as client:
        assert client.post("/tts_stream", json=SPEECH, headers={"Origin": "http://app.example"}).status_code == 200
        assert client.get("/health", headers={"Origin": "http://evil.example"}).status_code == 200  # reads are fine


# -- faults a stress run found -----------------------------------------------------------------------------


def test_metric_labels_come_from_a_closed_set(fake_client: TestClient) -> None:
    for index in range(30):
        fake_client.request(f"RND{index}", "/health")
        fake_client.get(f"/no/such/path/{index}")
    families = {family.name: family for family in text_string_to_metric_families(fake_client.get("/metrics").text)}
    samples = families["xtts_http_requests"].samples
    assert {sample.labels["method"] for sample in samples} <= {"GET", "POST", "DELETE", "OPTIONS", "HEAD", "other"}
    assert not any("/no/such" in sample.labels["route"] for sample in samples)
    assert any(sample.labels["method"] == "other" for sample in samples)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tts_stream", {**SPEECH, "text": "Hi \ud800 there."}),
        ("/tts", {**SPEECH, "text": "Hi \udfff."}),
        ("/tts_stream", {**SPEECH, "speaker_id": "bad\ud800id"}),
        ("/v1/audio/speech", {"input": "Hi \ud800 there.", "voice": "alloy"}),
        ("/v1/audio/speech", {"input": "Hi.", "voice": "\ud800"}),
        ("/xtts-api/tts_to_audio/", {"text": "Hi \ud800.", "speaker_wav": BUILTIN_SPEAKER, "language": "en"}),
        ("/save_voice/unicode-voice", {"gpt_cond_latent": [[0.5] * 1024] * 32, "speaker_embedding": [1.0] * 512,
                                       "name": "\ud800"}),
    ],
)  # fmt: skip
def test_lone_surrogates_are_422_not_500(fake_client: TestClient, path: str, body: dict[str, object]) -> None:
    raw = json.dumps(body)  # ASCII with \\ud800 escapes: what a client sends
    answer = fake_client.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "unicode" in answer.text.lower()


def test_a_chunked_upload_over_the_limit_is_413(fake_client: TestClient) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        boundary = b'--b\r\nContent-Disposition: form-data; name="wav_file"; filename="a.wav"\r\n\r\n'
        yield boundary
        for _ in range(40):
            yield b"\0" * 100_000  # 4 MB > MAX_UPLOAD_MB=2
        yield b"\r\n--b--\r\n"

    answer = fake_client.post(
        "/clone_speaker", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    assert fake_client.get("/health").status_code == 200


def test_a_slow_request_head_is_cut_off(tmp_path: Path) -> None:
    server = start_server(tmp_path, HEADER_TIMEOUT="1")
    host, port = server.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port))) for _ in range(5)]
    for sock in slow:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    time.sleep(2.5)
    for sock in slow:
        sock.settimeout(5)
        assert sock.recv(1024) == b"", "a connection with an unfinished head was still open"
        sock.close()
    with server.client() as client:  # the server is fine, and a normal request still gets its answer
        assert client.get("/health").status_code == 200
    server.stop()


# -- cloning is admitted and bounded like speech ------------------------------------------------------------


def test_too_many_reference_files_or_seconds_are_refused_before_decoding(fake_client: TestClient) -> None:
    engine = app_state(fake_client.app).model.engine  # type: ignore[arg-type,union-attr]
    before = engine.clones
    junk = [("wav_file", (f"f{index}.wav", b"not audio at all")) for index in range(11)]
    many = fake_client.post("/clone_speaker", files=junk)
    assert many.status_code == 400 and "MAX_CLONE_FILES" in many.json()["message"]  # not 415: nothing decoded
    long = fake_client.post("/clone_speaker", files=junk[:5], data={"options": json.dumps({"max_ref_length": 120})})
    assert long.status_code == 400 and "MAX_CLONE_SECONDS" in long.json()["message"]
    assert engine.clones == before


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engine = FakeEngine(clone_delay_s=3.0, chunks_per_sentence=8, chunk_delay_s=0.02)
    settings = app_settings(tmp_path_factory.mktemp("one-slot"), MAX_CONCURRENT_REQUESTS=1, MAX_QUEUE_SIZE=0)
    with live_server(engine, settings) as running:
        yield running


def clone_files(tmp_path: Path) -> dict[str, tuple[str, bytes]]:
    return {"wav_file": ("voice.wav", make_clip(tmp_path, "wav").read_bytes())}


def test_a_clone_takes_a_slot_and_a_full_server_answers_429(one_slot: LiveServer, tmp_path: Path) -> None:
    files = clone_files(tmp_path)
    with one_slot.client() as client, ThreadPoolExecutor(1) as pool:
        cloning = pool.submit(client.post, "/clone_speaker", files=files)
        wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 1, what="clone admitted")
        speech = client.post("/tts_stream", json=SPEECH)
        assert speech.status_code == 429 and int(speech.headers["retry-after"]) >= 1
        other_clone = client.post("/clone_speaker", files={"wav_file": ("b.wav", files["wav_file"][1] + b"\0\0")})
        assert other_clone.status_code == 429
        assert cloning.result(30).status_code == 200
        assert client.get("/health").json()["requests"]["in_flight"] == 0


def test_a_clone_whose_client_leaves_stops_and_frees_its_slot(one_slot: LiveServer, tmp_path: Path) -> None:
    engine = one_slot.engine
    assert isinstance(engine, FakeEngine)
    finished = engine.clones_finished
    data = clone_files(tmp_path)["wav_file"][1] + b"\0\0\0\0"  # other bytes: not a cached clone
    boundary = "xb"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="wav_file"; filename="v.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    host, port = one_slot.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST /clone_speaker HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with one_slot.client() as client:
        wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 1, what="clone admitted")
        sock.close()
        left = time.monotonic()
        wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="slot freed")
        assert time.monotonic() - left < 2.5  # before the 3 s clone would have finished
    time.sleep(3.5)
    assert engine.clones_finished == finished  # the clone was stopped, not left to run


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [("0.0.0.0", "", True), ("192.168.1.5", "", True), ("0.0.0.0", USER, False), ("127.0.0.1", "", False),
     ("::1", "", False), ("localhost", "", False)],
)  # fmt: skip
def test_listening_beyond_loopback_without_keys_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, keys: str, warned: bool
) -> None:
    from main import create_app

    create_app(app_settings(tmp_path, HOST=host, API_KEYS=keys), engine=FakeEngine())
    assert ("with no API keys" in caplog.text) is warned


def test_the_default_bind_is_loopback() -> None:
    from config import Settings

    assert Settings(_env_file=None).HOST == "127.0.0.1"  # type: ignore[call-arg]


def test_a_websocket_needs_a_key_and_a_trusted_origin(tmp_path: Path) -> None:
    import asyncio

    import websockets

    config = json.dumps({"type": "config", "language": "en", "speaker_id": BUILTIN_SPEAKER})

    async def opens(url: str, **headers: str) -> bool:
        try:
            async with websockets.connect(url, additional_headers=headers) as socket:
                await socket.send(config)
                return json.loads(await socket.recv())["type"] == "ready"
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 403
            return False

    settings = app_settings(tmp_path, API_KEYS=USER)
    with live_server(FakeEngine(), settings) as server:
        url = server.url.replace("http://", "ws://") + "/v1/tts/ws"
        assert not asyncio.run(opens(url))
        assert not asyncio.run(opens(url, Authorization="Bearer not-a-key"))
        assert asyncio.run(opens(url, Authorization=f"Bearer {USER}"))
        assert asyncio.run(opens(url, **{"X-API-Key": USER, "Origin": server.url}))  # its own page
        assert not asyncio.run(opens(url, **{"X-API-Key": USER, "Origin": "http://evil.example"}))


def test_every_operation_documents_the_statuses_it_can_answer(fake_client: TestClient) -> None:
    """Clients generated from the OpenAPI document (and schemathesis in `make stress`) trust this list."""
    paths = fake_client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            listed = set(operation["responses"])
            assert {"401", "403", "404", "413", "422", "429", "500", "503"} <= listed, (method, path, listed)
    speech = paths["/v1/audio/speech"]["post"]["responses"]
    assert speech["400"]["content"]["application/json"]["schema"]["$ref"].endswith("OpenAIErrorBody")
