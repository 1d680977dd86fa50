"""`make stress`, issue 21's shutdown attack: SIGTERM while a /v1/tts/ws socket is in the middle of a segment.
The segment must finish (within SHUTDOWN_TIMEOUT), the socket then close with 1012, the server's log record its
sessions as ended by the shutdown, and new work during the drain get 503 (or find the port closed)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.stress_server import SPEECH, Server, start
from bench.stress_sockets import CONFIG, open_socket

Row = dict[str, object]
SHUTDOWN_TIMEOUT_S = 60  # far more than the segment needs: one that is cut short was not given its grace
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
TEXT = "A long first sentence that is still playing when the server is told to stop. A second one waits."
PROBE_AFTER_S = 0.2  # the drain has begun (run.py marks it in the signal handler) but the segment is still playing


def shutdown_during_socket(folder: Path) -> Row:
    # 24 tokens a sentence in chunks of 4: the first chunk comes early, the segment goes on for five more.
    server = start(folder, MAX_AUDIO_TOKENS="24", SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT_S))
    try:
        row, problems, socket_id = asyncio.run(sigterm_mid_segment(server))
        server.process.wait(SHUTDOWN_TIMEOUT_S + 30)
    finally:
        server.stop()
    outcomes, log_problems = logged_outcomes(server, socket_id)
    problems += log_problems
    return {**row, "logged_outcomes": outcomes, "problems": problems, "ok": not problems}


async def sigterm_mid_segment(server: Server) -> tuple[Row, list[str], str]:
    """The row's figures, its problems, and the socket's id (its sessions' ids begin with it)."""
    client = await open_socket(server.ws_url, {**CONFIG, "stream_chunk_size": 4})
    await client.send(json.dumps({"type": "text", "text": TEXT}))
    await client.send(json.dumps({"type": "flush"}))
    playing: str | None = None  # the segment between its audio_start and audio_end
    socket_id = ""
    finished: list[str] = []
    while True:  # to the first audio of the first segment
        frame = await client.recv()
        if isinstance(frame, bytes):
            break
        event = json.loads(frame)
        if event.get("type") == "audio_start":
            playing, socket_id = str(event["segment"]), str(event["session_id"]).split("-", 1)[0]
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    probes = asyncio.create_task(probe_drain(server))
    audio_after = 0
    try:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT_S + 30):
            async for frame in client:
                if isinstance(frame, bytes):
                    audio_after += len(frame)
                    continue
                event = json.loads(frame)
                if event.get("type") == "audio_end" and not event.get("interrupted"):
                    finished.append(str(event["segment"]))
    except (ConnectionClosed, TimeoutError):
        pass
    closed_after_s = time.monotonic() - signalled
    http_status, socket_answer = await probes
    problems = []
    if client.close_code != SERVICE_RESTART:
        problems.append(f"closed with {client.close_code} {client.close_reason!r}, not {SERVICE_RESTART}")
    if playing not in finished and closed_after_s < SHUTDOWN_TIMEOUT_S - 1:  # closed before its grace ran out
        problems.append(f"segment {playing}, playing at SIGTERM, did not finish ({audio_after} bytes after it)")
    if closed_after_s > SHUTDOWN_TIMEOUT_S + 5:
        problems.append(f"closed {closed_after_s:.1f} s after SIGTERM (SHUTDOWN_TIMEOUT {SHUTDOWN_TIMEOUT_S})")
    if http_status not in ("503", "refused"):
        problems.append(f"a new request during the drain: {http_status}")
    if socket_answer not in (str(TRY_AGAIN_LATER), "503", "refused"):
        problems.append(f"a new socket during the drain: {socket_answer}")
    row: Row = {
        "close_s_after_sigterm": round(closed_after_s, 2),
        "close_code": client.close_code,
        "segment_finished": playing in finished,
        "audio_bytes_after_sigterm": audio_after,
        "new_request_during_drain": http_status,
        "new_socket_during_drain": socket_answer,
    }
    return row, problems, socket_id


async def probe_drain(server: Server) -> tuple[str, str]:
    """A new HTTP request and a new socket shortly after SIGTERM: their status, close code or `refused`."""
    await asyncio.sleep(PROBE_AFTER_S)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            http_status = str((await http.post(f"{server.url}/tts_stream", json=SPEECH)).status_code)
    except httpx.ConnectError:
        http_status = "refused"
    except httpx.HTTPError as error:
        http_status = type(error).__name__
    try:
        client = await open_socket(server.ws_url)
        socket_answer = "accepted"
        await client.close()
    except ConnectionClosed as closed:
        socket_answer = str(closed.rcvd.code if closed.rcvd else "closed")
    except InvalidStatus as refused:
        socket_answer = str(refused.response.status_code)
    except OSError:
        socket_answer = "refused"
    return http_status, socket_answer


def logged_outcomes(server: Server, socket_id: str) -> tuple[list[str], list[str]]:
    """Each of the socket's sessions as the server logged it, and the problems: each must have completed or been
    ended by the shutdown; never `client disconnected`, which hides the shutdown from whoever reads the log."""
    lines = [line for line in server.log().splitlines() if socket_id and f"session={socket_id}-" in line]
    outcomes = [re.sub(r".*outcome=", "", line) for line in lines]
    wrong = [
        outcome
        for outcome in outcomes
        if "disconnected" in outcome or not (outcome.startswith("completed") or "shutting down" in outcome)
    ]
    problems = [f"no session of socket {socket_id!r} in the log"] if not lines else []
    return outcomes, problems + [f"logged as {outcome}" for outcome in wrong]
