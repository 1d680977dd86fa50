"""`make stress`, the server under load: generated requests for every operation (schemathesis), many clients at
once against few slots, clients that leave mid-stream, and a long soak watched for memory growth."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from bench.stress_server import SPEECH, percentile, start


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
                f"POST /tts_stream HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
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
