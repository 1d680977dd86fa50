"""`make bench-cluster`: what Ray Serve replicas buy on this machine, with the tiny random-weight model.

- Scaling: aggregate audio seconds per wall second for STREAMS concurrent streams through Serve with 1 and
  with 2 replicas (each replica one CPU and one torch thread).
- Overhead: time to first audio of one stream at a time through Serve's proxy (1 replica) against the same
  server started by `run.py` (one torch thread), median of several; the difference is what Ray adds.

Prints a table and writes bench/results/cluster.json (reference run: bench/reference/cluster.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.stress_server import free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "cluster.json"
TEXT = "A sentence for the cluster benchmark. And a second one, to keep the model busy."
BYTES_PER_SECOND = 24000 * 2


@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(command: list[str], env_overrides: dict[str, str], folder: Path, replicas: int) -> Running:
    port = free_port()
    env = {
        **os.environ, "DUMMY_MODEL": "tiny", "HOST": "127.0.0.1", "PORT": str(port), "NUM_THREADS": "1",
        "VOICES_DIR": str(folder / "voices"), "MAX_AUDIO_TOKENS": "60", "MAX_CONCURRENT_REQUESTS": "8",
        "PYTHONUNBUFFERED": "1", **env_overrides,
    }  # fmt: skip
    log = (folder / f"{command[-1]}-{port}.log").open("wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = Running(f"http://127.0.0.1:{port}", process)
    seen: set[str | None] = set()
    deadline = time.monotonic() + 300
    while len(seen) < replicas:
        if time.monotonic() > deadline or process.poll() is not None:
            running.stop()
            raise RuntimeError(f"{command} did not get ready; see {log.name}")
        try:
            response = httpx.get(f"{running.url}/ready", timeout=5)
            if response.status_code == 200:
                seen.add(response.json().get("replica"))
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return running


def one_stream(url: str, seed: int) -> tuple[float, int]:
    """(seconds to the first audio byte, audio bytes)."""
    body = {"text": TEXT, "language": "en", "speaker_id": "Dummy Alto", "seed": seed}
    started = time.perf_counter()
    first_audio: float | None = None
    received = 0
    with httpx.stream("POST", f"{url}/tts_stream", json=body, timeout=300) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            received += len(chunk)
            if first_audio is None and received > 44:
                first_audio = time.perf_counter() - started
    return first_audio or 0.0, received - 44


def aggregate(url: str, streams: int, rounds: int) -> dict[str, float]:
    """Audio seconds per wall second with `streams` clients each making `rounds` streams back to back."""
    audio_bytes = [0] * streams

    def client(index: int) -> None:
        for round_index in range(rounds):
            audio_bytes[index] += one_stream(url, seed=index * 100 + round_index)[1]

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    audio = sum(audio_bytes) / BYTES_PER_SECOND
    return {"audio_s": round(audio, 2), "wall_s": round(wall, 2), "audio_s_per_s": round(audio / wall, 3)}


def ttfa_median(url: str, count: int) -> float:
    one_stream(url, seed=999)  # the first request through a fresh router probes the replicas
    return statistics.median(one_stream(url, seed=seed)[0] for seed in range(count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttfa-runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    report: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "model": "tiny (random weights)",
        "streams": args.streams,
        "text": TEXT,
    }

    direct = start([sys.executable, "run.py"], {}, folder, replicas=1)
    try:
        direct_ttfa = ttfa_median(direct.url, args.ttfa_runs)
    finally:
        direct.stop()
    scaling = {}
    serve_ttfa = 0.0
    for replicas in (1, 2):
        cluster = start([sys.executable, "-m", "cluster"], {"REPLICAS": str(replicas)}, folder, replicas)
        try:
            if replicas == 1:
                serve_ttfa = ttfa_median(cluster.url, args.ttfa_runs)
            scaling[replicas] = aggregate(cluster.url, args.streams, args.rounds)
        finally:
            cluster.stop()
    report["scaling"] = scaling
    report["speedup_2_vs_1"] = round(scaling[2]["audio_s_per_s"] / scaling[1]["audio_s_per_s"], 2)
    report["ttfa_s"] = {"run.py": round(direct_ttfa, 4), "serve": round(serve_ttfa, 4)}
    report["ray_ttfa_overhead_ms"] = round((serve_ttfa - direct_ttfa) * 1000, 1)

    print(f"\n{args.streams} concurrent streams, tiny model, {report['machine']}")
    print("| replicas | audio s | wall s | audio s per s |")
    print("|---|---|---|---|")
    for replicas, figures in scaling.items():
        print(f"| {replicas} | {figures['audio_s']} | {figures['wall_s']} | {figures['audio_s_per_s']} |")
    print(f"2 vs 1 replica: {report['speedup_2_vs_1']}x")
    print(f"\nTTFA, one stream at a time (median of {args.ttfa_runs}):")
    print("| run.py | Serve, 1 replica | Ray's overhead |\n|---|---|---|")
    print(f"| {direct_ttfa * 1000:.1f} ms | {serve_ttfa * 1000:.1f} ms | {report['ray_ttfa_overhead_ms']} ms |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
