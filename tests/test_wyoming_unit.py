"""Wyoming's pieces without the app: answers while the model loads, request parsing, the mDNS record, layering."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping
from wyoming.server import AsyncTcpServer
from wyoming.tts import Synthesize, SynthesizeStart

from api.wyoming.handler import WyomingHandler
from api.wyoming.server import SERVICE_TYPE, advertised_address, service_info
from api.wyoming.voices import VoiceRequest, seed_of, voice_request
from services.errors import InvalidInput
from tests.conftest import REPO

pytestmark = pytest.mark.unit


async def answers(state: Any, *events: Event) -> list[Event]:
    """One connection to a handler over `state`: each event's first answer."""
    server = AsyncTcpServer("127.0.0.1", 0)
    await server.start(lambda reader, writer: WyomingHandler(reader, writer, state, "test"))
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    replies = []
    try:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for event in events:
                await client.write_event(event)
                reply = await asyncio.wait_for(client.read_event(), 5)
                assert reply is not None
                replies.append(reply)
    finally:
        await server.stop()
    return replies


def test_while_the_model_loads_every_request_gets_a_not_ready_error_and_the_connection_stays() -> None:
    loading = SimpleNamespace(model=None, status="loading", settings=None)
    replies = asyncio.run(
        answers(loading, Describe().event(), Synthesize(text="Hi.").event(), SynthesizeStart().event(), Ping().event())
    )
    assert [reply.type for reply in replies] == ["error", "error", "error", "pong"]
    assert {Error.from_event(reply).code for reply in replies[:3]} == {"not_ready"}
    assert "loading" in Error.from_event(replies[0]).text


def test_a_draining_server_says_it_is_shutting_down() -> None:
    draining = SimpleNamespace(model=object(), status="draining", settings=None)
    [reply] = asyncio.run(answers(draining, Describe().event()))
    assert Error.from_event(reply).code == "not_ready" and "shutting down" in Error.from_event(reply).text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, VoiceRequest()),
        ({"voice": None}, VoiceRequest()),
        ({"voice": {"name": "my-voice", "speaker": "x"}}, VoiceRequest("my-voice")),
        ({"voice": {"name": "my-voice", "language": "de"}}, VoiceRequest("my-voice", "de")),
        ({"voice": {"language": "fr"}}, VoiceRequest(None, "fr")),
    ],
)
def test_the_voice_of_a_request(data: dict[str, Any], expected: VoiceRequest) -> None:
    assert voice_request(data) == expected


@pytest.mark.parametrize("data", [{"voice": "name"}, {"voice": {"name": 5}}, {"voice": {"language": ["en"]}}])
def test_a_voice_of_the_wrong_shape_is_invalid_input(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        voice_request(data)


@pytest.mark.parametrize("seed", [True, -1, 2**63, "7", 1.5])
def test_a_bad_seed_is_invalid_input(seed: object) -> None:
    with pytest.raises(InvalidInput):
        seed_of({"seed": seed})
    assert seed_of({"seed": 7}) == 7 and seed_of({}) is None


def test_the_mdns_record_is_what_home_assistant_browses_for() -> None:
    info = service_info(10200, "192.168.1.20")
    assert info.type == SERVICE_TYPE == "_wyoming._tcp.local."
    assert info.name.endswith("._wyoming._tcp.local.") and info.name.startswith("xtts-")
    assert info.port == 10200 and info.parsed_addresses() == ["192.168.1.20"]
    assert advertised_address("10.0.0.5") == "10.0.0.5" and advertised_address("localhost") == "127.0.0.1"


ROUTERS = ("api.speech", "api.openai_compat", "api.tts_socket", "api.xtts_api_server", "api.voices", "api.system",
           "api.sessions", "api.routes", "api.demo")  # fmt: skip


@pytest.mark.parametrize("path", sorted((REPO / "api" / "wyoming").glob("*.py")), ids=lambda path: path.name)
def test_the_wyoming_adapter_imports_no_http_router(path: Path) -> None:
    imported = [
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    ]
    assert [name for name in imported if name.startswith(ROUTERS)] == []
