"""The running cluster the tests in test_cluster.py share: `python -m cluster` (what `make cluster` runs) with
two replicas of the tiny model on a local Ray, reached through Serve's HTTP proxy on 127.0.0.1, and a raw-socket
stream that shows exactly how a body ends. Nothing here imports Ray: the process does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import BUILTIN_SPEAKER, REPO, free_port

REPLICAS = 2
START_TIMEOUT_S = 240
SENTENCE = "A sentence for the cluster to say."
SHORT_TEXT = " ".join([SENTENCE] * 2)
LONG_TEXT = " ".join([SENTENCE] * 40)  # minutes of work at these settings: it outlasts any test


@dataclass
class Cluster:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    voices_dir: Path
    data_dir: Path
    """DATA_DIR, shared by every replica: the job store (jobs.sqlite3) and the jobs' files."""
    replicas: set[str] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def until_other_replica(
        self, request: Callable[[httpx.Client], httpx.Response], not_replica: str, tries: int = 40
    ) -> httpx.Response:
        """Repeat a request until a replica other than `not_replica` answers it."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for _ in range(tries):
                response = request(client)
                if response.headers["x-replica"] != not_replica:
                    return response
        raise AssertionError(f"only replica {not_replica} answered {tries} requests")

    def answered_by(self, request: Callable[[httpx.Client], httpx.Response], replica: str) -> httpx.Response:
        """Repeat a request until `replica` answers it (with two replicas: until the other one does not)."""
        others = self.replicas - {replica}
        assert len(others) == 1, self.replicas
        return self.until_other_replica(request, next(iter(others)))


@contextmanager
def run_cluster(folder: Path) -> Iterator[Cluster]:
    """`python -m cluster` with REPLICAS replicas of the tiny model, until each answers /ready; stopped with
    SIGTERM (its whole process group killed if that takes over 90 s)."""
    port = free_port()
    env = {
        **os.environ,
        "DUMMY_MODEL": "tiny",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "VOICES_DIR": str(folder / "voices"),
        "DATA_DIR": str(folder / "data"),
        "REPLICAS": str(REPLICAS),
        "REPLICA_NUM_CPUS": "1",
        "MAX_CONCURRENT_REQUESTS": "4",
        "MAX_QUEUE_SIZE": "2",  # a burst that lands unevenly waits a moment rather than being refused
        "MAX_AUDIO_TOKENS": "40",
        "SHUTDOWN_TIMEOUT": "2",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = folder / "cluster.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cluster"], cwd=REPO, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    running = Cluster(f"http://127.0.0.1:{port}", process, log_path, folder / "voices", folder / "data")
    try:
        running.replicas = wait_for_replicas(running, REPLICAS)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_replicas(cluster: Cluster, count: int, not_in: AbstractSet[str] = frozenset()) -> set[str]:
    """Ready replicas (at least `count` seen answering /ready, none of `not_in`)."""
    seen: set[str] = set()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            raise RuntimeError(f"the cluster exited with {cluster.process.returncode}:\n{cluster.log()[-5000:]}")
        try:
            response = httpx.get(f"{cluster.url}/ready", timeout=5)
            if response.status_code == 200 and response.json()["replica"] not in not_in:
                seen.add(response.json()["replica"])
                if len(seen) >= count:
                    return seen
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{count} replicas not ready in {START_TIMEOUT_S} s (saw {seen}):\n{cluster.log()[-5000:]}")


def speech(text: str = SHORT_TEXT, **extra: object) -> dict[str, object]:
    return {"text": text, "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 7, **extra}


class RawStream:
    """A /tts_stream on a raw socket: the test sees exactly how the body ends."""

    def __init__(self, cluster: Cluster, body: dict[str, object]) -> None:
        self.sock = self.send(cluster, body)
        self.received = b""
        while b"\r\n\r\n" not in self.received:
            self.received += self._recv()
        head = self.received.split(b"\r\n\r\n", 1)[0].decode().lower().splitlines()
        self.status = int(head[0].split()[1])
        self.headers = dict(line.split(": ", 1) for line in head[1:])

    @staticmethod
    def send(cluster: Cluster, body: dict[str, object]) -> socket.socket:
        """The request sent, nothing read yet."""
        host, port = cluster.url.removeprefix("http://").split(":")
        payload = json.dumps(body).encode()
        sock = socket.create_connection((host, int(port)), timeout=60)
        sock.sendall(
            f"POST /tts_stream HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        return sock

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        assert chunk, "connection closed early"
        return chunk

    def read_some_audio(self, min_bytes: int = 4000) -> None:
        while len(self.received) < min_bytes:
            self.received += self._recv()

    def read_to_end(self) -> bytes:
        while chunk := self.sock.recv(65536):
            self.received += chunk
        self.sock.close()
        return self.received

    @property
    def complete(self) -> bool:
        """Ended with the chunked terminator: the server said the body was whole."""
        return self.received.endswith(b"0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()
