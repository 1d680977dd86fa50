"""/v1/tts/ws keep-alive against uvicorn as run.py configures it (run.server_config): a client that stops reading is
paused by backpressure, not cut off by the keep-alive, and a client that is truly gone (its network down) is closed
and its work cancelled within WS_PING_INTERVAL + WS_PING_TIMEOUT + 1 s."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from config import Settings
from main import create_app
from run import PatientWebSocketProtocol, server_config
from tests.conftest import BUILTIN_SPEAKER, REPO, app_settings, free_port, wait_for
from tests.fakes import FakeEngine

CONFIG = {"type": "config", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 7, "output_format": "pcm"}
PING_INTERVAL_S, PING_TIMEOUT_S = 0.3, 0.5


@dataclass
class RunServer:
    url: str
    engine: FakeEngine
    app: Any


@contextmanager
def run_server(engine: FakeEngine, settings: Settings) -> Iterator[RunServer]:
    """The app served by uvicorn with run.py's options, from a thread of this process."""
    app = create_app(settings, engine=engine, request_exit=lambda: None)
    server = uvicorn.Server(server_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.PORT}"
    wait_for(lambda: server.started, what="uvicorn start")
    wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, what="ready")
    try:
        yield RunServer(url, engine, app)
    finally:
        server.should_exit = True
        thread.join(30)
        engine.shutdown()


def keepalive_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return app_settings(
        tmp_path, PORT=free_port(), WS_PING_INTERVAL=PING_INTERVAL_S, WS_PING_TIMEOUT=PING_TIMEOUT_S, **overrides
    )


def test_the_server_configures_its_keepalive_and_websocket_protocol_from_the_settings(tmp_path: Path) -> None:
    settings = keepalive_settings(tmp_path, SHUTDOWN_TIMEOUT=2.5)
    config = server_config(create_app(settings, engine=FakeEngine()), settings)
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (PING_INTERVAL_S, PING_TIMEOUT_S)
    assert config.ws is PatientWebSocketProtocol and config.timeout_graceful_shutdown == 3


def test_a_client_that_stops_reading_is_paused_not_cut_off_and_loses_no_audio(tmp_path: Path) -> None:
    # 8 segments of 20 chunks of 1 s of audio (48 kB each): 7.7 MB, more than the TCP buffers between the two
    # ends on this machine take, so the stream really waits for the reader (STREAM_BUFFER_SECONDS=2)
    engine = FakeEngine(chunks_per_sentence=20, chunk_seconds=1.0, chunk_delay_s=0.002)
    text = " ".join(f"Sentence number {index}." for index in range(8))
    pause_s = 4 * (PING_INTERVAL_S + PING_TIMEOUT_S)  # four unanswered keep-alive rounds

    async def pause_then_read(url: str) -> tuple[list[Any], int | None, list[int]]:
        async with websockets.connect(url, ping_interval=None, max_size=None) as socket:  # no keep-alive of its own
            await socket.send(json.dumps(CONFIG))
            await socket.recv()
            await socket.send(json.dumps({"type": "text", "text": text}))
            await socket.send(json.dumps({"type": "close"}))
            frames: list[Any] = [json.loads(await socket.recv())]
            paused_at, made = time.monotonic(), [engine.chunks_made]
            # pause at least pause_s, and until generation has stood still for a second (at most 20 s)
            while time.monotonic() - paused_at < 20:
                await asyncio.sleep(0.25)
                made.append(engine.chunks_made)
                if time.monotonic() - paused_at >= pause_s and len(set(made[-5:])) == 1:
                    break
            async for frame in socket:  # ends when the server closes
                frames.append(frame if isinstance(frame, bytes) else json.loads(frame))
            return frames, socket.close_code, made

    with run_server(engine, keepalive_settings(tmp_path, STREAM_BUFFER_SECONDS=2)) as server:
        url = server.url.replace("http://", "ws://") + "/v1/tts/ws"
        frames, close_code, made_while_paused = asyncio.run(pause_then_read(url))
    events = [frame for frame in frames if isinstance(frame, dict)]
    assert close_code == 1000 and events[-1] == {"type": "done", "context_id": "default"}
    ends = [event for event in events if event["type"] == "audio_end"]
    assert len(ends) == 8 and not any(event.get("interrupted") for event in ends)
    assert sum(len(frame) for frame in frames if isinstance(frame, bytes)) == 8 * 20 * 48000  # every byte
    # backpressure held generation while the client did not read (not everything was made before it read)
    assert len(set(made_while_paused[-5:])) == 1 and made_while_paused[-1] < 8 * 20


def test_a_client_whose_network_goes_away_is_cancelled_within_the_bound(tmp_path: Path) -> None:
    """In a network namespace of its own (tests/vanishing_client.py), the loopback goes down under a client that
    was reading: no FIN, no RST, nothing acknowledged any more, as when a laptop sleeps or Wi-Fi drops."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare -n` (root, or a user namespace) to take a network away")
    result = subprocess.run(
        [unshare, "-n", sys.executable, "-m", "tests.vanishing_client", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["state"], report["error"]) == ("cancelled", "client disconnected")
    bound_s = report["ping_interval_s"] + report["ping_timeout_s"] + PatientWebSocketProtocol.recheck_s
    assert report["cancelled_after_s"] <= bound_s + 1.0, report  # a second's leeway for a loaded machine
    assert report["in_flight"] == 0
