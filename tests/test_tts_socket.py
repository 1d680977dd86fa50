"""/v1/tts/ws with the `websockets` client against real uvicorns: text in, audio out, barge-in, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.audio_checks import pcm_snr_db
from tests.conftest import BUILTIN_SPEAKER, LiveServer, Server, app_settings, live_server
from tests.fakes import FakeEngine

MIN_SNR_DB = 60  # as tests/test_batching.py: a batched stream equals its solo run to about 1 LSB
CONFIG = {"type": "config", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 7}


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/v1/tts/ws"


@pytest.fixture(scope="module")
def fake_socket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    engine = FakeEngine(chunks_per_sentence=6, chunk_delay_s=0.03)
    settings = app_settings(
        tmp_path_factory.mktemp("ws"), MAX_TEXT_LENGTH=500, WS_IDLE_TIMEOUT=2, WS_MAX_WAIT_SECONDS=0.5
    )
    with live_server(engine, settings) as running:
        yield running


async def collect(socket: Any, until: str = "done", timeout_s: float = 60) -> list[Any]:
    """Frames (dicts for events, bytes for audio) until an event of type `until`."""
    frames: list[Any] = []
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await socket.recv()
            frames.append(frame if isinstance(frame, bytes) else json.loads(frame))
            if isinstance(frames[-1], dict) and frames[-1]["type"] in {until, "error"}:
                return frames


def audio_of(frames: list[Any], context_id: str | None = None) -> bytes:
    audio, current = b"", None
    for frame in frames:
        if isinstance(frame, dict) and frame["type"] == "audio_start":
            current = frame["context_id"]
        elif isinstance(frame, bytes) and (context_id is None or current == context_id):
            audio += frame
    return audio


def test_first_audio_arrives_while_the_text_is_still_being_written(server: Server) -> None:
    async def run() -> tuple[list[Any], float, float, int | None]:
        async with websockets.connect(ws_url(server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            assert json.loads(await socket.recv())["type"] == "ready"
            for token in ["Hello", " there", ", this is", " the first sentence.", " And the second"]:
                await socket.send(json.dumps({"type": "text", "text": token}))
            first = await collect(socket, until="audio_start")
            audio = await socket.recv()  # audio of the first sentence, before `close` has been sent
            first_audio_at = time.perf_counter()
            assert isinstance(audio, bytes) and len(audio) > 0
            await socket.send(json.dumps({"type": "text", "text": " one, spoken after it."}))
            await socket.send(json.dumps({"type": "close"}))
            closed_at = time.perf_counter()
            rest = await collect(socket)
            with pytest.raises(websockets.ConnectionClosedOK):
                await socket.recv()
            return [*first, audio, *rest], first_audio_at, closed_at, socket.close_code

    frames, first_audio_at, closed_at, close_code = asyncio.run(run())
    assert first_audio_at < closed_at and close_code == 1000
    starts = [frame for frame in frames if isinstance(frame, dict) and frame["type"] == "audio_start"]
    assert [start["text"] for start in starts] == [
        "Hello there, this is the first sentence.",
        "And the second one, spoken after it.",
    ]
    assert starts[1]["offset_s"] > 0 and frames[-1] == {"type": "done", "context_id": "default"}
    with httpx.Client(base_url=server.url) as client:  # each segment is a session
        assert client.get(f"/stream_status/{starts[0]['session_id']}").json()["state"] == "completed"


def test_socket_audio_equals_tts_stream_with_the_same_seed(server: Server) -> None:
    sentences = ["Hello there, how are you today?", "I am fine, thank you for asking."]

    async def run() -> list[Any]:
        async with websockets.connect(ws_url(server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            await socket.send(json.dumps({"type": "text", "text": " ".join(sentences), "context_id": "answer"}))
            await socket.send(json.dumps({"type": "flush", "context_id": "answer"}))
            return await collect(socket)

    frames = asyncio.run(run())
    segments: list[bytes] = []
    for frame in frames:
        if isinstance(frame, dict) and frame["type"] == "audio_start":
            segments.append(b"")
        elif isinstance(frame, bytes):
            segments[-1] += frame
    assert len(segments) == 2
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for index, (sentence, audio) in enumerate(zip(sentences, segments, strict=True)):
            body = {"text": sentence, "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 7 + index,
                    "output_format": "pcm"}  # fmt: skip
            alone = client.post("/tts_stream", json=body).content  # segment n is seeded seed + n
            # the same tokens; the waveform as alone's to float rounding, since segment 1 was made (ahead) in one
            # batch with segment 0 (what every batched stream gets: tests/test_batching.py)
            assert len(audio) == len(alone) and pcm_snr_db(audio, alone) > MIN_SNR_DB


def test_clear_stops_the_context_and_the_next_answer_follows(fake_socket_server: LiveServer) -> None:
    long_text = " ".join(f"Sentence number {index} of a long answer." for index in range(12))

    async def run() -> tuple[list[Any], list[Any]]:
        async with websockets.connect(ws_url(fake_socket_server.url)) as socket:
            await socket.send(json.dumps({**CONFIG, "output_format": "pcm"}))
            await socket.recv()
            await socket.send(json.dumps({"type": "text", "text": long_text, "context_id": "a1"}))
            before = await collect(socket, until="audio_start")
            before.append(await socket.recv())
            await socket.send(json.dumps({"type": "clear", "context_id": "a1"}))
            await socket.send(json.dumps({"type": "text", "text": "The next answer.", "context_id": "a2"}))
            await socket.send(json.dumps({"type": "flush", "context_id": "a2"}))
            return before, await collect(socket)

    engine = fake_socket_server.engine
    before, after = asyncio.run(run())
    events = [frame for frame in after if isinstance(frame, dict)]
    assert {"type": "cleared", "context_id": "a1"} in events
    a1_end = next(event for event in events if event["type"] == "audio_end" and event["context_id"] == "a1")
    assert a1_end.get("interrupted") is True
    # within one chunk: at most the chunk in flight reaches the client after the clear
    a1_end_at = after.index(a1_end)
    assert sum(isinstance(frame, bytes) for frame in after[:a1_end_at]) <= 1
    assert not any(event["type"] == "audio_start" and event["context_id"] == "a1" for event in events)
    assert [event["text"] for event in events if event["type"] == "audio_start"] == ["The next answer."]
    assert events[-1] == {"type": "done", "context_id": "a2"}
    session_id = next(frame for frame in before if isinstance(frame, dict))["session_id"]
    with httpx.Client(base_url=fake_socket_server.url) as client:
        status = client.get(f"/stream_status/{session_id}").json()
        assert status["state"] == "cancelled" and status["error"] == "cleared by the client"
        assert client.get("/health").json()["requests"]["in_flight"] == 0
    made = engine.chunks_made
    time.sleep(0.5)
    assert engine.chunks_made == made  # no model work goes on for the cleared context


async def speak_turn(socket: Any, text: str, context_id: str = "default") -> list[Any]:
    await socket.send(json.dumps({"type": "text", "text": text, "context_id": context_id}))
    await socket.send(json.dumps({"type": "flush", "context_id": context_id}))
    return await collect(socket)


def test_a_context_speaks_turn_after_turn_and_again_after_a_clear(fake_socket_server: LiveServer) -> None:
    async def run() -> list[list[Any]]:
        async with websockets.connect(ws_url(fake_socket_server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            turns = [await speak_turn(socket, "The first turn. Two sentences."), await speak_turn(socket, "Again.")]
            await socket.send(json.dumps({"type": "text", "text": "Cut short by a barge-in. " * 4}))
            turns.append(await collect(socket, until="audio_start"))
            await socket.send(json.dumps({"type": "clear"}))
            turns.append(await collect(socket, until="cleared"))
            turns.append(await speak_turn(socket, "Spoken after the clear."))
            return turns

    first, second, cut, cleared, after_clear = asyncio.run(run())
    assert cleared[-1] == {"type": "cleared", "context_id": "default"}
    for turn in (first, second, after_clear):
        assert not [frame for frame in turn if isinstance(frame, dict) and frame["type"] == "error"]
        assert turn[-1] == {"type": "done", "context_id": "default"} and len(audio_of(turn)) > 0
    starts = [
        frame for turn in (first, second, cut, after_clear) for frame in turn
        if isinstance(frame, dict) and frame["type"] == "audio_start"
    ]  # fmt: skip
    assert [start["segment"] for start in starts] == [0, 1, 0, 0, 0]  # each turn counts its segments from 0
    assert len({start["session_id"] for start in starts}) == 5  # every segment a session of its own
    with httpx.Client(base_url=fake_socket_server.url) as client:
        states = [client.get(f"/stream_status/{start['session_id']}").json()["state"] for start in starts]
    assert states == ["completed", "completed", "completed", "cancelled", "completed"]


def test_two_sockets_at_once(fake_socket_server: LiveServer) -> None:
    async def one(text: str) -> list[Any]:
        async with websockets.connect(ws_url(fake_socket_server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            await socket.send(json.dumps({"type": "text", "text": text}))
            await socket.send(json.dumps({"type": "close"}))
            return await collect(socket)

    async def both() -> list[list[Any]]:
        return list(await asyncio.gather(one("First socket speaks."), one("Second socket speaks too.")))

    for frames in asyncio.run(both()):
        assert frames[-1]["type"] == "done" and len(audio_of(frames)) > 0


def test_text_without_punctuation_is_spoken_after_the_maximum_wait(fake_socket_server: LiveServer) -> None:
    async def run() -> float:
        async with websockets.connect(ws_url(fake_socket_server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            sent = time.perf_counter()
            await socket.send(json.dumps({"type": "text", "text": "no punctuation here at all"}))
            await collect(socket, until="audio_start", timeout_s=10)
            return time.perf_counter() - sent

    waited = asyncio.run(run())
    assert 0.4 <= waited < 3  # WS_MAX_WAIT_SECONDS=0.5


async def error_then_close(url: str, *frames: Any, config: bool = True) -> tuple[list[Any], int | None, str]:
    async with websockets.connect(url) as socket:
        if config:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
        for frame in frames:
            await socket.send(frame)
        received: list[Any] = []
        try:
            async with asyncio.timeout(10):
                while True:
                    frame = await socket.recv()
                    received.append(frame if isinstance(frame, bytes) else json.loads(frame))
                    if isinstance(received[-1], dict) and received[-1]["type"] == "error":
                        break
            await socket.send(json.dumps({"type": "text", "text": "Still here."}))
            await socket.send(json.dumps({"type": "close"}))
            received += await collect(socket)
        except websockets.ConnectionClosed:
            pass
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await socket.recv()
        return received, socket.close_code, socket.close_reason or ""


@pytest.mark.parametrize(
    ("frames", "error", "close_code"),
    [
        (["{not json"], "invalid_input", 1000),  # reported; the socket goes on and finishes normally
        ([json.dumps({"type": "shout"})], "invalid_input", 1000),
        ([json.dumps({"type": "text", "text": "x" * 501})], "invalid_input", 1000),
        ([json.dumps({"type": "text", "text": "hi", "context_id": "../bad"})], "invalid_input", 1000),
        ([b"\x00\x01binary"], "unsupported_data", 1003),
        ([json.dumps(CONFIG)], "invalid_input", 1000),  # a second config
    ],
    ids=["malformed-json", "unknown-type", "text-too-long", "bad-context-id", "binary", "second-config"],
)
def test_bad_input_gets_an_error_event(
    fake_socket_server: LiveServer, frames: list[Any], error: str, close_code: int
) -> None:
    received, code, _reason = asyncio.run(error_then_close(ws_url(fake_socket_server.url), *frames))
    errors = [frame for frame in received if isinstance(frame, dict) and frame["type"] == "error"]
    assert errors and errors[0]["error"] == error and errors[0]["message"]
    assert code == close_code
    if close_code == 1000:
        assert received[-1] == {"type": "done", "context_id": "default"}  # it kept serving this socket


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ({"type": "text", "text": "no config"}, "invalid_input"),
        ({**CONFIG, "speaker_id": "nobody"}, "voice_not_found"),
        ({**CONFIG, "language": "xx"}, "invalid_input"),
    ],
)
def test_a_bad_start_is_refused_with_1008(fake_socket_server: LiveServer, first: dict[str, Any], error: str) -> None:
    received, code, _reason = asyncio.run(
        error_then_close(ws_url(fake_socket_server.url), json.dumps(first), config=False)
    )
    assert received[0]["type"] == "error" and received[0]["error"] == error
    assert code == 1008


def test_an_idle_socket_is_closed(fake_socket_server: LiveServer) -> None:
    async def run() -> tuple[list[Any], int | None]:
        async with websockets.connect(ws_url(fake_socket_server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            frames = [json.loads(await socket.recv())]  # nothing sent for WS_IDLE_TIMEOUT=2 s
            with pytest.raises(websockets.ConnectionClosed):
                await socket.recv()
            return frames, socket.close_code

    frames, code = asyncio.run(run())
    assert frames[0]["error"] == "idle_timeout" and code == 1000


def test_a_socket_that_goes_away_cancels_its_work(fake_socket_server: LiveServer) -> None:
    long_text = " ".join(f"Sentence {index} keeps it busy." for index in range(10))

    async def run() -> None:
        async with websockets.connect(ws_url(fake_socket_server.url)) as socket:
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            await socket.send(json.dumps({"type": "text", "text": long_text}))
            await collect(socket, until="audio_start")

    asyncio.run(run())
    with httpx.Client(base_url=fake_socket_server.url) as client:
        deadline = time.monotonic() + 15  # within a step or two; generous for a loaded 2-core machine
        while client.get("/health").json()["requests"]["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").json()["requests"]["in_flight"] == 0
