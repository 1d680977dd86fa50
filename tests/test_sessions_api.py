"""Stream sessions (api/sessions.py): status, cancellation, disconnects, overload and shutdown.

A real uvicorn on 127.0.0.1 serves the fake engine (chunks made at a pace the test sets) for the
lifecycle; `python run.py` children with the tiny model take the signals; what needs neither (unknown and
proposed session ids) runs in-process.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import BUILTIN_SPEAKER, LiveServer, Server, app_settings, live_server, start_server, wait_for
from tests.fakes import FakeEngine

LONG_TEXT = " ".join(
    f"This is sentence number {index}, which is long enough that the splitter keeps it as a piece of its own."
    for index in range(12)
)


def speech(text: str = LONG_TEXT, **extra: object) -> dict[str, object]:
    return {"text": text, "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 1, **extra}


def open_raw_stream(server: Server | LiveServer, body: dict[str, object], path: str = "/tts_stream") -> socket.socket:
    """POST on a raw socket, so the test decides exactly when the client goes away."""
    host, port = server.url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def read_until_audio(sock: socket.socket, min_bytes: int = 2000) -> bytes:
    received = b""
    while len(received) < min_bytes:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        received += chunk
    return received


def status(client: httpx.Client, session_id: str) -> dict[str, object]:
    response = client.get(f"/stream_status/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Ten slots; 20 ms a chunk, 8 chunks a sentence (LONG_TEXT lasts about 2 s)."""
    engine = FakeEngine(chunks_per_sentence=8, chunk_delay_s=0.02)
    with live_server(engine, app_settings(tmp_path_factory.mktemp("paced"))) as running:
        yield running


@pytest.fixture
def client(paced: LiveServer) -> Iterator[httpx.Client]:
    with paced.client() as http:
        yield http


@pytest.fixture(scope="module")
def single_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One slot, a queue of two, a short queue timeout."""
    engine = FakeEngine(chunks_per_sentence=8, chunk_delay_s=0.02)
    settings = app_settings(
        tmp_path_factory.mktemp("single"), MAX_CONCURRENT_REQUESTS=1, MAX_QUEUE_SIZE=2, QUEUE_TIMEOUT=4
    )
    with live_server(engine, settings) as running:
        yield running


def test_status_follows_a_stream_to_completion(client: httpx.Client) -> None:
    with client.stream("POST", "/tts_stream", json=speech("One sentence. Then another one.")) as response:
        session_id = response.headers["x-session-id"]
        live = status(client, session_id)
        assert live["state"] == "generating" and live["chunks_total"] >= 1
        body = response.read()
    final = status(client, session_id)
    assert final["state"] == "completed"
    assert final["chunks_done"] == final["chunks_total"]
    assert final["bytes_sent"] == len(body)
    assert final["audio_seconds"] == pytest.approx((len(body) - 44) / 48000, abs=0.01)
    assert final["first_audio_at"] >= final["created_at"] and final["finished_at"] >= final["first_audio_at"]
    assert final["time_to_first_audio_s"] > 0 and final["error"] is None
    assert {"queue", "latents", "prefill", "gpt_steps", "vocoder", "encode", "send"} <= set(final["timings_s"])


def test_cancel_stops_the_stream_within_a_chunk_and_frees_the_slot(client: httpx.Client) -> None:
    received = 0
    with client.stream("POST", "/tts_stream", json=speech(stream_chunk_size=8)) as response:
        session_id = response.headers["x-session-id"]
        chunks = response.iter_raw()
        while received < 20000:
            received += len(next(chunks))
        at_cancel = status(client, session_id)["audio_seconds"]
        cancelled_at = time.monotonic()
        answer = client.delete(f"/stream_cancel/{session_id}")
        assert answer.status_code == 200
        # the HTTP stream ends by itself, without its terminating chunk: it must not look finished
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in chunks:
                pass
        ended_after_s = time.monotonic() - cancelled_at
    assert ended_after_s < 5
    final = status(client, session_id)
    # audio handed to the response after the cancel: at most the chunk in flight (8 tokens, about 0.37 s),
    # and one more if the response took it between the status read and the cancel; not the seconds of audio
    # the engine had made ahead of the client (STREAM_BUFFER_SECONDS), which are dropped
    assert isinstance(at_cancel, float) and isinstance(final["audio_seconds"], float)
    assert final["audio_seconds"] - at_cancel <= 0.8
    assert final["state"] == "cancelled" and final["error"] == "cancelled by request"
    assert final["chunks_done"] < final["chunks_total"]
    wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="slot release")
    again = client.delete(f"/stream_cancel/{session_id}")
    assert again.status_code == 409 and again.json()["error"] == "session_conflict"


def test_curl_sees_a_cancelled_stream_as_incomplete_and_a_finished_one_as_complete(
    paced: LiveServer, client: httpx.Client, tmp_path: Path
) -> None:
    def curl(body: dict[str, object]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["curl", "-sS", "--fail-with-body", "-o", str(tmp_path / "out.wav"), "-H", "Content-Type: application/json",
             "-d", json.dumps(body), f"{paced.url}/tts_stream"],
            stderr=subprocess.PIPE,
        )  # fmt: skip

    finished = curl(speech("One short sentence."))
    assert finished.wait(30) == 0, finished.stderr.read() if finished.stderr else ""

    cancelled = curl(speech(session_id="curl-cancelled"))
    wait_for(lambda: client.get("/stream_status/curl-cancelled").json().get("bytes_sent", 0) > 0, what="audio")
    assert client.delete("/stream_cancel/curl-cancelled").status_code == 200
    assert cancelled.wait(30) == 18  # CURLE_PARTIAL_FILE: the body ended before its last chunk
    assert status(client, "curl-cancelled")["error"] == "cancelled by request"


def test_unknown_session_is_404(fake_client: TestClient) -> None:
    client = fake_client
    assert client.get("/stream_status/nope").status_code == 404
    assert client.delete("/stream_cancel/nope").status_code == 404
    assert client.get("/stream_status/bad%20id").status_code == 422


def test_client_proposed_session_id_and_duplicates(fake_client: TestClient) -> None:
    client = fake_client
    response = client.post("/tts_stream", json=speech("Short.", session_id="my-session-1"))
    assert response.status_code == 200 and response.headers["x-session-id"] == "my-session-1"
    duplicate = client.post("/tts_stream", json=speech("Short.", session_id="my-session-1"))
    assert duplicate.status_code == 409
    assert client.post("/tts_stream", json=speech("Short.", session_id="../x")).status_code == 422


def test_disconnect_mid_stream_stops_generation_and_frees_the_slot(client: httpx.Client, paced: LiveServer) -> None:
    sock = open_raw_stream(paced, speech(session_id="leaver-1"))
    head = read_until_audio(sock)
    assert b"200 OK" in head
    assert client.get("/health").json()["requests"]["in_flight"] == 1
    sock.close()
    wait_for(lambda: status(client, "leaver-1")["state"] == "cancelled", what="cancelled state")
    final = status(client, "leaver-1")
    assert final["error"] == "client disconnected"
    assert final["chunks_done"] < final["chunks_total"]
    wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="slot release")
    jobs = client.get("/health").json()["requests"]["model_jobs"]
    time.sleep(0.3)  # a stream still generating would keep submitting chunks (one every 20 ms)
    assert client.get("/health").json()["requests"]["model_jobs"] == jobs


def test_tts_client_that_leaves_mid_generation_is_cancelled(client: httpx.Client, paced: LiveServer) -> None:
    sock = open_raw_stream(paced, speech(session_id="tts-leaver"), path="/tts")
    wait_for(lambda: client.get("/stream_status/tts-leaver").status_code == 200, what="session")
    wait_for(lambda: status(client, "tts-leaver")["audio_seconds"] > 0, what="generation")
    sock.close()
    wait_for(lambda: status(client, "tts-leaver")["state"] == "cancelled", what="cancelled state")
    assert status(client, "tts-leaver")["error"] == "client disconnected"
    wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="slot release")


def test_queued_request_that_disconnects_never_reaches_the_model(single_slot: LiveServer) -> None:
    with single_slot.client() as client:
        busy = open_raw_stream(single_slot, speech(session_id="holder"))
        read_until_audio(busy)
        waiting = open_raw_stream(single_slot, speech(session_id="waiter"))
        wait_for(lambda: client.get("/health").json()["requests"]["queued"] == 1, what="queued request")
        assert status(client, "waiter")["state"] == "queued"
        waiting.close()
        wait_for(lambda: status(client, "waiter")["state"] == "cancelled", what="queued cancel")
        waiter = status(client, "waiter")
        assert waiter["started_at"] is None and "prefill" not in waiter["timings_s"]
        assert waiter["error"] == "client disconnected while queued"
        busy.close()
        wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="slot release")
        assert client.get("/health").json()["requests"]["queued"] == 0


def test_a_burst_gets_only_200s_and_429s_and_capacity_returns(single_slot: LiveServer) -> None:
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def one_request() -> None:
        with single_slot.client() as client:
            response = client.post("/tts_stream", json=speech("A short burst request."))
            with lock:
                outcomes.append((response.status_code, response.headers.get("retry-after")))

    threads = [threading.Thread(target=one_request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    codes = sorted(code for code, _ in outcomes)
    assert len(codes) == 20
    assert set(codes) <= {200, 429}, codes
    assert 200 in codes and 429 in codes
    assert all(retry_after and int(retry_after) >= 1 for code, retry_after in outcomes if code == 429)
    with single_slot.client() as client:
        wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="capacity back")
        health = client.get("/health").json()["requests"]
        assert (health["queued"], health["capacity"]) == (0, 1)
        assert client.post("/tts_stream", json=speech("After the burst.")).status_code == 200


def test_overload_response_is_json_with_retry_after(single_slot: LiveServer) -> None:
    with single_slot.client() as client:
        holder = open_raw_stream(single_slot, speech())
        read_until_audio(holder)
        queued = [open_raw_stream(single_slot, speech()) for _ in range(2)]
        wait_for(lambda: client.get("/health").json()["requests"]["queued"] == 2, what="full queue")
        refused = client.post("/tts_stream", json=speech("No room."))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "overloaded"
        health_started = time.monotonic()
        assert client.get("/health").status_code == 200
        assert time.monotonic() - health_started < 1.0  # health stays fast under load
        for sock in (holder, *queued):
            sock.close()
        wait_for(lambda: client.get("/health").json()["requests"]["in_flight"] == 0, what="release")


def test_a_failure_after_the_first_byte_does_not_look_complete(tmp_path: Path) -> None:
    with live_server(FakeEngine(fail_at_chunk=3), app_settings(tmp_path)) as failing, failing.client() as client:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", "/tts_stream", json=speech()) as response:
            assert response.status_code == 200
            session_id = response.headers["x-session-id"]
            for chunk in response.iter_raw():
                received += chunk
        assert len(received) > 44  # audio had gone out before the failure
        final = status(client, session_id)
        assert final["state"] == "failed" and final["error"] == "RuntimeError: the fake model failed"
        assert client.get("/health").json()["requests"]["in_flight"] == 0


def test_sigterm_lets_a_running_stream_finish(tmp_path: Path) -> None:
    server = start_server(tmp_path, SHUTDOWN_TIMEOUT="60")
    text = "First words of a stream. And a second sentence to say after the signal arrives."
    sock = open_raw_stream(server, speech(text))
    received = read_until_audio(sock)
    server.process.send_signal(signal.SIGTERM)
    while chunk := sock.recv(65536):
        received += chunk
    assert received.endswith(b"0\r\n\r\n"), "the chunked response did not complete"
    assert server.process.wait(60) == 0, "the server did not exit cleanly on SIGTERM"
    assert "Finished server process" in server.log()


def test_sigterm_cancels_streams_still_running_after_shutdown_timeout(tmp_path: Path) -> None:
    # 5 s: long enough that a loaded machine (CI's, 2x slower at times) still makes audio within it; twelve
    # sentences last far longer
    server = start_server(tmp_path, SHUTDOWN_TIMEOUT="5")
    sock = open_raw_stream(server, speech(session_id="cut-off"))
    read_until_audio(sock)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    sock.settimeout(30)
    after = b""
    while chunk := sock.recv(65536):
        after += chunk
    ended_after_s = time.monotonic() - signalled
    sock.close()
    assert ended_after_s >= 4.5, "the stream did not get its grace period"
    assert len(after) > 8000, "no audio came during the grace period"  # more than the next chunk
    assert not after.endswith(b"0\r\n\r\n"), "a cut-off stream must not look complete"
    assert server.process.wait(60) == 0, "the server did not exit cleanly on SIGTERM"
    assert time.monotonic() - signalled < 20
    assert "session=cut-off" in server.log() and "outcome=cancelled" in server.log()
