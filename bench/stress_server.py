"""The server each `make stress` part attacks: its own `python run.py` with the tiny random-weight model on
127.0.0.1, a free port, a scratch folder for its voices and log, and short generations."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
SPEECH = {"text": "A short stress test sentence.", "language": "en", "speaker_id": "Dummy Alto"}
READY_TIMEOUT_S = 180


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    folder: Path
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(folder: Path, **settings: str) -> Server:
    """Start a server with these settings on top of the stress defaults; return once /ready answers 200."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "DUMMY_MODEL": "tiny",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "NUM_THREADS": "2",
        "VOICES_DIR": str(folder / "voices"),
        "MAX_AUDIO_TOKENS": "8",
        "SHUTDOWN_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    log_path = folder / f"server-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "run.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, folder, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server did not become ready within {READY_TIMEOUT_S} s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def held(attack: Callable[[], dict[str, object]]) -> dict[str, object]:
    """An attack's row; one that raised (a client library error, a server that went away) is a failed row, so the
    attacks after it on the same server still run."""
    try:
        return attack()
    except Exception as error:  # whatever it was, the row says so and the run exits 1
        return {"problems": [f"the attack crashed: {error!r}"], "ok": False}
