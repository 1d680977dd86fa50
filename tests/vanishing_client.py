"""`unshare -n python -m tests.vanishing_client TMP`: in a network namespace of its own, serve the app as run.py does
(run.server_config, the fake engine), start a socket speaking, then take the loopback down under the client, as a
network that goes away would (no FIN, no RST: nothing is acknowledged any more). Prints, as the last line, JSON: how
long after that the server had cancelled the segment, and its recorded outcome."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import websockets

from api.state import app_state
from tests.fakes import FakeEngine
from tests.test_socket_keepalive import CONFIG, PING_INTERVAL_S, PING_TIMEOUT_S, keepalive_settings, run_server


def set_loopback(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True)


async def vanish(url: str) -> tuple[float, str]:
    """Speak, read a little, then lose the network; the time it went, and the session it left."""
    socket = await websockets.connect(url, ping_interval=None)
    await socket.send(json.dumps(CONFIG))
    await socket.recv()
    await socket.send(json.dumps({"type": "text", "text": "A long sentence that keeps the server busy."}))
    session_id = json.loads(await socket.recv())["session_id"]  # audio_start
    for _ in range(4):
        await socket.recv()  # audio: it is reading
    set_loopback("down")
    return time.monotonic(), session_id


def main() -> int:
    set_loopback("up")
    engine = FakeEngine(chunks_per_sentence=1000, chunk_delay_s=0.02)  # 20 s to make: it is cut off long before
    with run_server(engine, keepalive_settings(Path(sys.argv[1]))) as server:
        state = app_state(server.app)
        assert state is not None
        gone_at, session_id = asyncio.run(vanish(server.url.replace("http://", "ws://") + "/v1/tts/ws"))
        deadline = gone_at + 30
        while state.sessions.live() and time.monotonic() < deadline:
            time.sleep(0.02)
        cancelled_after_s = time.monotonic() - gone_at
        session = state.sessions.get(session_id)
        in_flight = state.gate.in_flight
        set_loopback("up")  # let the server stop cleanly
    report = {
        "cancelled_after_s": round(cancelled_after_s, 3), "state": session.state.value, "error": session.error,
        "ping_interval_s": PING_INTERVAL_S, "ping_timeout_s": PING_TIMEOUT_S, "in_flight": in_flight,
    }  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
