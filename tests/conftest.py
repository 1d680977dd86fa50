"""Fixtures: the tiny random-weight model in-process, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.engine.model_loader import LoadedModel, ModelChoice, load_model
from services.engine.tts import TTSEngine

REPO = Path(__file__).resolve().parent.parent
BUILTIN_SPEAKER = "Dummy Alto"
START_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def tiny_loaded() -> LoadedModel:
    return load_model(ModelChoice(dummy="tiny", num_threads=2))


@pytest.fixture(scope="session")
def tiny_engine(tiny_loaded: LoadedModel) -> Iterator[TTSEngine]:
    engine = TTSEngine(tiny_loaded)
    yield engine
    engine.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A `python run.py` child process serving on 127.0.0.1."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp_path: Path, wait_ready: bool = True, **env_overrides: str) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "DUMMY_MODEL": "tiny",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "NUM_THREADS": "2",
        "VOICES_DIR": str(tmp_path / "voices"),
        "PYTHONUNBUFFERED": "1",
        "SHUTDOWN_TIMEOUT": "5",
    }
    env.update(env_overrides)
    log_path = tmp_path / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "run.py"], cwd=REPO, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT
    )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, env)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server not ready in {START_TIMEOUT_S} s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server for tests that need no special settings."""
    running = start_server(
        tmp_path_factory.mktemp("server"),
        MAX_TEXT_LENGTH="2000",
        MAX_UPLOAD_MB="2",
        OPENAI_VOICE_MAP="alloy=Dummy Bass",
    )
    yield running
    running.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http
