"""DNS rebinding: ALLOWED_HOSTS (api/middleware/allowed_hosts.py) and the origin guard's own-origin rule
(api/middleware/origin_guard.py), in-process and against a real uvicorn with the exact request a browser sends
after a name it was given has been re-pointed to 127.0.0.1.

A rebinding page on `http://attacker.example:PORT` sends `Host: attacker.example:PORT` and `Origin:
http://attacker.example:PORT`: they agree, so a guard that compares the two lets it through.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from api.middleware.allowed_hosts import AllowedHostsMiddleware, HostNames, split_host
from api.middleware.origin_guard import OriginGuardMiddleware
from config import Settings
from tests.conftest import LiveServer, app_client, app_settings, live_server
from tests.fakes import FakeEngine

ATTACKER = "attacker.example:8000"
REBOUND = {"Host": ATTACKER, "Origin": f"http://{ATTACKER}"}


def save_voice(client: TestClient, voice_id: str, **headers: str) -> None:
    latents = client.get("/studio_speakers").json()["Dummy Tenor"]
    answer = client.post(f"/save_voice/{voice_id}", json={**latents, "overwrite": True}, headers=headers)
    assert answer.status_code == 201, answer.text


def voice_ids(client: TestClient) -> set[str]:
    return {voice["voice_id"] for voice in client.get("/saved_voices").json()}


@pytest.fixture(scope="module")
def default_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """ALLOWED_HOSTS as by default (plus the TestClient's own `testserver`), keys off."""
    with app_client(FakeEngine(), app_settings(tmp_path_factory.mktemp("hosts"))) as client:
        yield client


# -- the check itself, in-process ---------------------------------------------------------------------------


@pytest.mark.app
def test_a_rebinding_delete_is_refused_and_the_voice_stays(default_hosts: TestClient) -> None:
    save_voice(default_hosts, "victim")
    refused = default_hosts.delete("/saved_voices/victim", headers=REBOUND)
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["error"] == "host_not_allowed" and "ALLOWED_HOSTS" in body["message"]
    assert body["details"] == {"host": ATTACKER}
    assert "victim" in voice_ids(default_hosts)
    # the same request for the server's own name (its /demo page) goes through: the 400 was the host's
    own = default_hosts.delete(
        "/saved_voices/victim", headers={"Host": "localhost:8000", "Origin": "http://localhost:8000"}
    )
    assert own.status_code == 200 and "victim" not in voice_ids(default_hosts)


@pytest.mark.app
def test_reads_and_every_api_family_are_refused_too(default_hosts: TestClient) -> None:
    """A rebound page could read as well as write (voices' latents, sessions, speech by GET)."""
    for path in ("/saved_voices", "/studio_speakers", "/demo", "/health", "/xtts-api/speakers"):
        answer = default_hosts.get(path, headers={"Host": ATTACKER})
        assert answer.status_code == 400 and answer.json()["error"] == "host_not_allowed", path
    openai = default_hosts.get("/v1/models", headers={"Host": ATTACKER})
    assert openai.status_code == 400 and openai.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.app
@pytest.mark.parametrize(
    "host",
    ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "[::1]", "localhost", "LocalHost.:8000", "[0:0::1]:8000",
     "testserver"],
)  # fmt: skip
def test_the_loopback_names_are_allowed_with_any_port(default_hosts: TestClient, host: str) -> None:
    assert default_hosts.get("/saved_voices", headers={"Host": host}).status_code == 200


@pytest.mark.app
@pytest.mark.parametrize(
    "host",
    ["localhost:abc", "localhost:", "localhost:99999", "[::1", "[::1]x", "local host", "evil.example@localhost",
     "127.0.0.2:8000", "0.0.0.0:8000", "localhost.attacker.example", "[::2]:8000", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_other_and_malformed_hosts_are_refused(default_hosts: TestClient, host: str) -> None:
    answer = default_hosts.get("/saved_voices", headers={"Host": host})
    assert answer.status_code == 400 and answer.json()["error"] == "host_not_allowed", host


@pytest.mark.app
def test_an_ipv6_literal_page_may_write(default_hosts: TestClient) -> None:
    """The /demo page opened as http://[::1]:8000/demo: Host and Origin name the loopback address."""
    own = {"Host": "[::1]:8000", "Origin": "http://[::1]:8000"}
    save_voice(default_hosts, "v6-voice", **own)
    assert default_hosts.delete("/saved_voices/v6-voice", headers=own).status_code == 200


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


@pytest.mark.parametrize(
    ("headers", "status"),
    [([], 400), ([(b"host", b"localhost"), (b"host", b"localhost")], 400), ([(b"host", b"localhost")], 200)],
    ids=["no-host", "two-hosts", "one-host"],
)
def test_a_request_without_exactly_one_host_is_refused(headers: list[tuple[bytes, bytes]], status: int) -> None:
    import asyncio

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""}
    asyncio.run(AllowedHostsMiddleware(_ok, HostNames.of(["localhost"]))(scope, receive, send))
    assert sent[0]["status"] == status


@pytest.mark.app
def test_an_allowed_lan_name_works_and_others_do_not(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, HOST="0.0.0.0", ALLOWED_HOSTS="tts.lan, 192.168.1.20,testserver")
    with app_client(FakeEngine(), settings) as client:
        lan = {"Host": "tts.lan:8000", "Origin": "http://tts.lan:8000"}  # the /demo page opened as tts.lan
        save_voice(client, "lan-voice", **lan)
        assert client.get("/saved_voices", headers={"Host": "192.168.1.20:8000"}).status_code == 200
        assert client.delete("/saved_voices/lan-voice", headers=REBOUND).status_code == 400
        assert client.delete("/saved_voices/lan-voice", headers=lan).status_code == 200
        assert client.get("/saved_voices", headers={"Host": "other.lan:8000"}).status_code == 400
        assert client.get("/saved_voices", headers={"Host": "localhost:8000"}).status_code == 200  # always


@pytest.mark.app
def test_a_star_turns_the_check_off_and_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with app_client(FakeEngine(), app_settings(tmp_path, ALLOWED_HOSTS="*")) as client:
        save_voice(client, "exposed")
        assert client.delete("/saved_voices/exposed", headers=REBOUND).status_code == 200
    assert "ALLOWED_HOSTS=*" in caplog.text and "DNS rebinding is no longer guarded" in caplog.text


@pytest.mark.app
def test_the_bind_address_is_allowed_and_every_interface_says_what_to_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with app_client(FakeEngine(), app_settings(tmp_path, HOST="192.168.1.5")) as client:
        assert client.get("/saved_voices", headers={"Host": "192.168.1.5:8000"}).status_code == 200
    assert "ALLOWED_HOSTS=" not in caplog.text
    everywhere = Settings(_env_file=None, HOST="0.0.0.0")  # type: ignore[call-arg]
    assert everywhere.allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    from main import create_app

    create_app(everywhere, engine=FakeEngine())
    assert "set ALLOWED_HOSTS to the names and addresses clients reach this server by" in caplog.text


@pytest.mark.app
def test_a_refused_host_is_logged_once_for_the_operator(
    default_hosts: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        default_hosts.get("/saved_voices", headers={"Host": "new-name.lan"})
    assert caplog.text.count("refused a request for Host 'new-name.lan'") == 1


@pytest.mark.parametrize("value", ["http://tts.lan", "tts.lan:8000", "tts.lan/path", "*.lan", "a b"])
def test_a_bad_allowed_hosts_entry_stops_start_up(value: str) -> None:
    with pytest.raises(ValueError, match="ALLOWED_HOSTS"):
        Settings(_env_file=None, ALLOWED_HOSTS=value)  # type: ignore[call-arg]


def test_split_host() -> None:
    assert split_host("Example.COM.:80") == ("example.com", 80)
    assert split_host("[::1]:8000") == ("::1", 8000)
    assert split_host("::1") == ("::1", None)
    assert split_host("[0:0:0:0:0:0:0:1]") == ("::1", None)
    assert split_host("localhost:+80") is None and split_host("") is None and split_host("[localhost]") is None


# -- sockets ------------------------------------------------------------------------------------------------


@pytest.mark.app
def test_a_socket_handshake_for_a_foreign_host_is_refused_before_accept(default_hosts: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused:
        with default_hosts.websocket_connect("/v1/tts/ws", headers=REBOUND):
            pass
    assert refused.value.code == 1008 and refused.value.reason == "host not allowed"
    with default_hosts.websocket_connect("/v1/tts/ws", headers={"Host": "localhost:8000"}):
        pass  # accepted


# -- the origin guard no longer takes Host as proof of sameness ---------------------------------------------


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        (ATTACKER, f"http://{ATTACKER}", False),  # rebinding: Host and Origin agree, and are the attacker's
        ("localhost:8000", "http://localhost:8000", True),  # the server's own page
        ("[::1]:8000", "http://[::1]:8000", True),
        ("localhost:8000", "http://localhost:3000", False),  # another port is another origin
        ("localhost:8000", "https://localhost:8000", True),  # TLS ended by a proxy in front: same host and port
        ("localhost", "https://localhost", True),
        ("localhost:8000", "http://localhost", False),
        ("localhost:8000", "null", False),
        ("localhost:8000", "http://app.example", True),  # in CORS_ALLOW_ORIGINS
        ("app.example", "http://app.example:8000", False),
    ],
)
def test_the_origin_guard_trusts_only_allowed_hosts(host: str, origin: str, allowed: bool) -> None:
    """The guard alone (no host check in front of it): sameness needs an allowed host, not just Host == Origin."""
    guard = OriginGuardMiddleware(_ok, origins=["http://app.example"], hosts=HostNames.of(["localhost", "::1"]))
    answer = TestClient(guard).delete("/anything", headers={"Host": host, "Origin": origin})
    assert (answer.status_code == 200) is allowed, answer.text


def test_the_origin_guard_under_a_star_compares_origin_with_host() -> None:
    guard = OriginGuardMiddleware(_ok, origins=[], hosts=HostNames.of(["*"]))
    client = TestClient(guard)
    assert client.delete("/x", headers=REBOUND).status_code == 200
    assert client.delete("/x", headers={"Host": ATTACKER, "Origin": "http://elsewhere.example"}).status_code == 403


# -- a real uvicorn on 127.0.0.1, raw bytes as a browser sends them -----------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Settings as a user runs them: ALLOWED_HOSTS unset (not even the TestClient's name)."""
    settings = app_settings(tmp_path_factory.mktemp("hosts-live"), ALLOWED_HOSTS="")
    with live_server(FakeEngine(), settings) as running:
        yield running


def raw_request(live: LiveServer, head: str) -> bytes:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.replace("PORT", port).encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and not head.startswith("DELETE"):
                break  # a handshake's answer: the head is all there is
        return received


@pytest.mark.live
def test_the_exact_rebinding_request_is_refused_by_a_real_server(live: LiveServer) -> None:
    with live.client() as client:
        latents = client.get("/studio_speakers").json()["Dummy Tenor"]
        assert client.post("/save_voice/victim", json=latents).status_code == 201
    answer = raw_request(
        live,
        "DELETE /saved_voices/victim HTTP/1.1\r\nHost: attacker.example:PORT\r\nOrigin: http://attacker.example:PORT\r\n"
        "User-Agent: Mozilla/5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b'"error":"host_not_allowed"' in answer
    with live.client() as client:
        assert client.get("/saved_voices/victim").status_code == 200  # still there


def handshake(host: str) -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /v1/tts/ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


@pytest.mark.live
def test_a_real_socket_handshake_for_a_foreign_host_is_refused(live: LiveServer) -> None:
    assert raw_request(live, handshake("attacker.example:PORT")).startswith(b"HTTP/1.1 403 ")
    assert raw_request(live, handshake("127.0.0.1:PORT")).startswith(b"HTTP/1.1 101 ")
    assert raw_request(live, handshake("[::1]:PORT")).startswith(b"HTTP/1.1 101 ")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.live
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_server_on_ipv6_loopback_answers_to_its_literal(tmp_path: Path) -> None:
    settings = app_settings(tmp_path, HOST="::1", ALLOWED_HOSTS="")
    with live_server(FakeEngine(), settings, host="::1") as running, running.client() as client:
        assert running.url.startswith("http://[::1]:")
        assert client.get("/saved_voices").status_code == 200  # Host: [::1]:PORT
        page = {"Origin": running.url}  # the /demo page opened at http://[::1]:PORT/demo
        assert client.post("/cache/clear", headers=page).status_code == 200
        assert (
            client.post("/cache/clear", headers={"Host": ATTACKER, "Origin": f"http://{ATTACKER}"}).status_code == 400
        )
