"""`make stress`: the server under load and attack, on 127.0.0.1 only, bounded in count and time.

Each part starts its own `python run.py` with the tiny random-weight model (short generations), attacks it,
and checks what a user relies on:

- schemathesis: generated requests for every operation in the OpenAPI document; no 5xx, every status and
  body as documented;
- load: N clients at once against MAX_CONCURRENT_REQUESTS slots and MAX_QUEUE_SIZE places: only 200 and
  429 (with Retry-After), /health answering fast meanwhile (p99);
- disconnect storm: clients that leave mid-stream; nothing in flight or queued afterwards;
- soak: many requests one after another in a few lanes; the server's RSS at request 100 and at the last;
- SIGKILL during saves: the server killed while clients save voices; after a restart no temporary file is
  left, every listed voice loads, none is half-written.

Prints a table and writes bench/results/stress.json (`--short` for CI's quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "stress.json"
SPEECH = {"text": "A short stress test sentence.", "language": "en", "speaker_id": "Dummy Alto"}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    folder: Path

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
    log = (folder / f"server-{port}.log").open("ab")
    process = subprocess.Popen([sys.executable, "run.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, folder)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError("the server did not become ready within 180 s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def schemathesis_run(folder: Path, max_examples: int) -> dict[str, object]:
    """Every operation, `max_examples` generated requests each: no server errors, statuses and bodies as documented."""
    server = start(folder, MAX_UPLOAD_MB="2")
    report = folder / "schemathesis.xml"
    try:
        started = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
                "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance",
                "--max-examples", str(max_examples), "--request-timeout", "60", "--workers", "1",
                "--report", "junit", "--report-junit-path", str(report), "--seed", "1",
                "--suppress-health-check", "all",
            ],
            capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    tail = run.stdout[-3000:]
    summary = [line for line in run.stdout.splitlines() if "passed" in line or "failed" in line or "error" in line]
    return {
        "exit_code": run.returncode,
        "seconds": round(seconds, 1),
        "max_examples_per_operation": max_examples,
        "summary": summary[-8:],
        "server_errors": run.stdout.count("Server error"),
        "ok": run.returncode == 0,
        "output_tail": tail if run.returncode else "",
    }


def load(folder: Path, clients: int) -> dict[str, object]:
    """`clients` streams at once against 4 slots and a queue of 8: only 200 and 429; /health stays fast."""
    server = start(folder, MAX_CONCURRENT_REQUESTS="4", MAX_QUEUE_SIZE="8", QUEUE_TIMEOUT="20")
    statuses: Counter[int] = Counter()
    retry_after_ok = True
    health_ms: list[float] = []
    stop = threading.Event()

    def one(index: int) -> None:
        nonlocal retry_after_ok
        with httpx.Client(base_url=server.url, timeout=120) as client:
            response = client.post("/tts_stream", json={**SPEECH, "seed": index})
            statuses[response.status_code] += 1
            if response.status_code == 429 and not response.headers.get("retry-after", "").isdigit():
                retry_after_ok = False

    def watch_health() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get("/health")
                health_ms.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(clients)))
        seconds = time.perf_counter() - started
        stop.set()
        watcher.join()
        after = httpx.get(f"{server.url}/health").json()["requests"]
    finally:
        stop.set()
        server.stop()
    only_200_429 = set(statuses) <= {200, 429}
    return {
        "clients": clients,
        "seconds": round(seconds, 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "health_p50_ms": round(percentile(health_ms, 0.5), 1),
        "health_p99_ms": round(percentile(health_ms, 0.99), 1),
        "in_flight_after": after["in_flight"],
        "ok": only_200_429 and retry_after_ok and after["in_flight"] == 0 and percentile(health_ms, 0.99) < 1000,
    }


def disconnect_storm(folder: Path, clients: int) -> dict[str, object]:
    """Clients that start a long stream and leave after its first bytes: nothing left in flight or queued."""
    server = start(folder, MAX_CONCURRENT_REQUESTS="8", MAX_QUEUE_SIZE="64", MAX_AUDIO_TOKENS="40")
    long_text = " ".join(f"Sentence {index} keeps this stream going for a while." for index in range(8))
    host, port = server.url.removeprefix("http://").split(":")
    payload = json.dumps({**SPEECH, "text": long_text}).encode()

    def leave_early(index: int) -> bool:
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(
                b"POST /tts_stream HTTP/1.1\r\nHost: stress\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            if index % 3:  # two in three wait for audio first; the rest leave while queued
                sock.recv(4096)
            return True

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(leave_early, range(clients)))
        deadline = time.monotonic() + 30
        health = httpx.get(f"{server.url}/health").json()["requests"]
        while (health["in_flight"] or health["queued"]) and time.monotonic() < deadline:
            time.sleep(0.2)
            health = httpx.get(f"{server.url}/health").json()["requests"]
        settled_s = time.perf_counter() - started
        still_serves = httpx.post(f"{server.url}/tts_stream", json=SPEECH, timeout=60).status_code == 200
    finally:
        server.stop()
    return {
        "clients": clients,
        "seconds_until_idle": round(settled_s, 1),
        "in_flight_after": health["in_flight"],
        "queued_after": health["queued"],
        "still_serves": still_serves,
        "ok": health["in_flight"] == 0 and health["queued"] == 0 and still_serves,
    }


def soak(folder: Path, requests: int) -> dict[str, object]:
    """`requests` requests of every kind in 4 lanes; the server's RSS at request 100 and at the end."""
    server = start(folder, MAX_CONCURRENT_REQUESTS="4")
    process = psutil.Process(server.process.pid)
    latents = httpx.get(f"{server.url}/studio_speakers").json()["Dummy Bass"]
    statuses: Counter[int] = Counter()
    rss_mb: dict[int, float] = {}
    done = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal done
        kind = index % 5
        with httpx.Client(base_url=server.url, timeout=120) as client:
            if kind == 0:
                response = client.post("/tts_stream", json={**SPEECH, "seed": index})
            elif kind == 1:
                response = client.post("/v1/audio/speech", json={"input": "Hi there.", "voice": "alloy",
                                                                  "response_format": "mp3"})  # fmt: skip
            elif kind == 2:
                response = client.post(f"/save_voice/soak-{index % 20}", json={**latents, "overwrite": True})
            elif kind == 3:
                response = client.post("/tts", json={**SPEECH, "speaker_id": f"soak-{(index - 1) % 20}"})
                if response.status_code == 404:  # not saved yet in this lane order
                    response = client.get("/saved_voices")
            else:
                response = client.post("/tts_stream", json={"text": "", "language": "en"})  # a 422
        with lock:
            statuses[response.status_code] += 1
            done += 1
            if done in (100, requests):
                rss_mb[done] = process.memory_info().rss / 1e6

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(requests)))
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    growth = rss_mb.get(requests, 0.0) - rss_mb.get(100, 0.0)
    return {
        "requests": requests,
        "seconds": round(seconds, 1),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "rss_mb_at_100": round(rss_mb.get(100, 0.0), 1),
        "rss_mb_at_end": round(rss_mb.get(requests, 0.0), 1),
        "rss_growth_mb": round(growth, 1),
        "ok": growth < 50 and not any(code >= 500 for code in statuses),
    }


def save_until_stopped(url: str, latents: dict[str, object], lane: int, stop: threading.Event) -> int:
    """Save voices (three ids per lane, overwritten in turn) until stopped or the server is gone."""
    count = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            try:
                body = {**latents, "name": f"v{lane}-{count}", "overwrite": True}
                client.post(f"/save_voice/kill-{lane}-{count % 3}", json=body)
                count += 1
            except httpx.HTTPError:
                return count
    return count


def sigkill_during_saves(folder: Path, rounds: int) -> dict[str, object]:
    """Kill the server (SIGKILL) while clients save voices; after each restart every voice is whole."""
    voices_dir = folder / "voices"
    problems: list[str] = []
    saved_total = 0
    rng = random.Random(1)
    latents: dict[str, object] = {}
    for round_index in range(rounds):
        server = start(folder)
        listed = httpx.get(f"{server.url}/saved_voices").json()
        for voice in listed:  # what survived the last kill loads whole
            if httpx.get(f"{server.url}/saved_voices/{voice['voice_id']}").status_code != 200:
                problems.append(f"round {round_index}: {voice['voice_id']} does not load")
        leftovers = [path.name for path in voices_dir.glob(".tmp-*")]
        if leftovers:
            problems.append(f"round {round_index}: temporary files left: {leftovers}")
        if not latents:
            latents = httpx.get(f"{server.url}/studio_speakers").json()["Dummy Tenor"]
        stop = threading.Event()

        with ThreadPoolExecutor(4) as pool:
            lanes = [pool.submit(save_until_stopped, server.url, latents, lane, stop) for lane in range(4)]
            time.sleep(0.5 + rng.random())
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            stop.set()
            saved_total += sum(lane.result() for lane in lanes)
    server = start(folder)  # the last restart cleans up and serves what is there
    try:
        for voice in httpx.get(f"{server.url}/saved_voices").json():
            if httpx.get(f"{server.url}/saved_voices/{voice['voice_id']}").status_code != 200:
                problems.append(f"after all: {voice['voice_id']} does not load")
        leftovers = [path.name for path in voices_dir.glob(".tmp-*")]
        if leftovers:
            problems.append(f"after all: temporary files left: {leftovers}")
        voices = len(httpx.get(f"{server.url}/saved_voices").json())
    finally:
        server.stop()
    return {
        "rounds": rounds,
        "saves_attempted": saved_total,
        "voices_after": voices,
        "problems": problems,
        "ok": not problems and voices > 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI's quick run: fewer requests, rounds and examples")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = (
        {"examples": 5, "load": 30, "storm": 30, "soak": 200, "kills": 3}
        if args.short
        else {"examples": 40, "load": 50, "storm": 250, "soak": 1000, "kills": 20}
    )
    results: dict[str, object] = {"short": args.short, "machine": f"{psutil.cpu_count(logical=False)} cores"}
    with tempfile.TemporaryDirectory(prefix="xtts-stress-") as scratch:
        folder = Path(scratch)
        parts = [
            ("schemathesis", lambda: schemathesis_run(folder / "schema", sizes["examples"])),
            ("load", lambda: load(folder / "load", sizes["load"])),
            ("disconnect_storm", lambda: disconnect_storm(folder / "storm", sizes["storm"])),
            ("soak", lambda: soak(folder / "soak", sizes["soak"])),
            ("sigkill_during_saves", lambda: sigkill_during_saves(folder / "kill", sizes["kills"])),
        ]
        for name, part in parts:
            started = time.perf_counter()
            print(f"{name} ...", flush=True)
            subfolder = {"schemathesis": "schema", "load": "load", "disconnect_storm": "storm", "soak": "soak",
                         "sigkill_during_saves": "kill"}[name]  # fmt: skip
            (folder / subfolder).mkdir(exist_ok=True)
            results[name] = {**part(), "wall_s": round(time.perf_counter() - started, 1)}
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    parts_ok = [part.get("ok") for part in results.values() if isinstance(part, dict)]
    return 0 if all(parts_ok) else 1


def print_table(results: dict[str, object]) -> None:
    print(f"\n{'part':<22} {'ok':<4} figures")
    for name, part in results.items():
        if not isinstance(part, dict):
            continue
        figures = {key: value for key, value in part.items() if key not in {"ok", "output_tail", "summary", "problems"}}
        print(f"{name:<22} {'yes' if part['ok'] else 'NO':<4} {json.dumps(figures)}")
        for problem in part.get("problems", []) or []:
            print(f"{'':<27}problem: {problem}")
        if part.get("output_tail"):
            print(part["output_tail"])


if __name__ == "__main__":
    sys.exit(main())
