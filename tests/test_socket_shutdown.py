"""SIGTERM with /v1/tts/ws sockets open: a real server process (run.py's, with the fake engine: tests/fake_server.py)
gives a socket's segment in progress the grace HTTP streams get (SHUTDOWN_TIMEOUT), then closes it with 1012, and
records every session it cut off as a shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import BUILTIN_SPEAKER, REPO, Server, free_port, wait_until_ready

CONFIG = {"type": "config", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 7}


def start_fake_server(tmp_path: Path, **env_overrides: str) -> Server:
    """`python -m tests.fake_server` on 127.0.0.1 (settings from the environment, as run.py reads them)."""
    port = free_port()
    env = {
        **os.environ, "HOST": "127.0.0.1", "PORT": str(port), "NUM_THREADS": "1", "VOICES_DIR": str(tmp_path / "v"),
        "PYTHONUNBUFFERED": "1", **env_overrides,
    }  # fmt: skip
    log_path = tmp_path / f"fake-server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_server"], cwd=REPO, env=env, stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    wait_until_ready(server)
    return server


async def sigterm_mid_segment(server: Server, text: str, during_drain: list[Any]) -> dict[str, Any]:
    """Speak `text`; SIGTERM once the first segment's audio flows; read to the end. Times are from the signal."""
    frames: list[Any] = []
    async with websockets.connect(server.url.replace("http://", "ws://") + "/v1/tts/ws") as socket:
        await socket.send(json.dumps(CONFIG))
        await socket.recv()
        await socket.send(json.dumps({"type": "text", "text": text}))
        await socket.send(json.dumps({"type": "flush"}))
        while not any(isinstance(frame, bytes) for frame in frames):
            frame = await socket.recv()
            frames.append(frame if isinstance(frame, bytes) else json.loads(frame))
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for message in during_drain:
            await socket.send(json.dumps(message))
        ended_at: dict[str, float] = {}
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    frame = await socket.recv()
                    frames.append(frame if isinstance(frame, bytes) else json.loads(frame))
                    if isinstance(frame, str) and frames[-1]["type"] == "audio_end":
                        ended_at["audio_end"] = time.monotonic() - signalled
        closed_after_s = time.monotonic() - signalled
    return {
        "frames": frames, "close_code": socket.close_code, "close_reason": socket.close_reason,
        "audio_end_after_s": ended_at.get("audio_end"), "closed_after_s": closed_after_s,
    }  # fmt: skip


def stopped(server: Server) -> None:
    """It shut down in order, and said so with its exit status."""
    assert server.process.wait(30) == 0
    assert "Finished server process" in server.log()


def outcomes(log: str) -> dict[str, str]:
    """session id -> `outcome=... [error=...]`, from the server's one line per session."""
    return {match[1]: match[2] for match in re.finditer(r"session=(\S+) .*?(outcome=\S+(?: error='[^']*')?)", log)}


def test_sigterm_lets_a_sockets_segment_finish_then_closes_1012(tmp_path: Path) -> None:
    # 20 chunks of 0.1 s audio, 0.05 s each to make: a segment takes about 1 s
    server = start_fake_server(tmp_path, SHUTDOWN_TIMEOUT="20", FAKE_CHUNKS="20", FAKE_CHUNK_DELAY_S="0.05")
    text = "The segment in progress. The one generating ahead. And a third."
    new_text = {"type": "text", "text": "New text during the drain."}
    result = asyncio.run(sigterm_mid_segment(server, text, during_drain=[new_text]))
    stopped(server)
    frames = result["frames"]
    events = [frame for frame in frames if isinstance(frame, dict)]
    starts = [event for event in events if event["type"] == "audio_start"]
    assert [start["text"] for start in starts] == ["The segment in progress."]  # nothing new starts
    assert sum(len(frame) for frame in frames if isinstance(frame, bytes)) == 20 * 4800  # its whole audio
    ends = [event for event in events if event["type"] == "audio_end"]
    assert len(ends) == 1 and "interrupted" not in ends[0]
    refused = [event for event in events if event["type"] == "error"]
    assert [event["error"] for event in refused] == ["not_ready"]  # new work during the drain
    assert (result["close_code"], result["close_reason"]) == (1012, "server shutting down")
    assert result["closed_after_s"] < 10, "the socket waited for more than its segment"
    log = server.log()
    sessions = outcomes(log)
    assert sessions[starts[0]["session_id"]] == "outcome=completed"
    look_ahead = f"{starts[0]['session_id'].rsplit('-', 1)[0]}-1"
    assert sessions[look_ahead] == "outcome=cancelled error='server shutting down'"
    assert "client disconnected" not in log and "Exception in ASGI application" not in log


def test_sigterm_cuts_a_sockets_segment_off_when_shutdown_timeout_runs_out(tmp_path: Path) -> None:
    # 200 chunks at 0.05 s: 10 s to make, far more than SHUTDOWN_TIMEOUT=1
    server = start_fake_server(tmp_path, SHUTDOWN_TIMEOUT="1", FAKE_CHUNKS="200", FAKE_CHUNK_DELAY_S="0.05")
    result = asyncio.run(sigterm_mid_segment(server, "A segment far longer than the grace.", during_drain=[]))
    stopped(server)
    frames = result["frames"]
    audio_after_signal = sum(len(frame) for frame in frames[1:] if isinstance(frame, bytes))
    assert audio_after_signal > 4800, "no audio came during the grace"
    assert (result["close_code"], result["close_reason"]) == (1012, "server shutting down")
    assert 0.9 <= result["closed_after_s"] < 5
    session_id = next(frame for frame in frames if isinstance(frame, dict) and frame["type"] == "audio_start")[
        "session_id"
    ]
    assert outcomes(server.log())[session_id] == "outcome=cancelled error='server shutting down'"
