"""Issue 22's table: the server as a user runs it (`python run.py`, a fresh process per configuration), over HTTP.

    python -m bench.cpu_speed                          # default settings, then the float32 reference
    python -m bench.cpu_speed --configs default        # just the defaults
    python -m bench.cpu_speed --size tiny --cap 30     # a quick check of the script itself

For each configuration (environment variables on top of DUMMY_MODEL):
- first audio of a one-line reply on an idle server (median), and one stream's RTF on three sentences;
- 1/4/8/16 streams started together: audio seconds made per wall second;
- a burst: three three-sentence streams start, a newcomer sends a one-line reply 2.5-3.5 s later: its first
  audio against idle (median of `--repeats` bursts);
- where one stream's time goes, in ms per audio token (prefill, GPT steps, vocoder, encoding: the server's
  own /stream_status timings), next to the memory-bandwidth floor measured in the same run (reading the GPT's
  377 M linear weights once per token at the bandwidth a large copy reaches here).
Random weights rarely sample the stop token, so every sentence runs to MAX_AUDIO_TOKENS (`--cap`). Figures
from one run are comparable with each other; these machines are noisy, so quote ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.cases import REPETITION_PENALTY, SPEAKER

REPO = Path(__file__).resolve().parent.parent
ONE_LINE = "Hello! How can I help you today?"
THREE_SENTENCES = (
    "Once upon a time there was a lighthouse keeper who lived alone on a rock in the northern sea. "
    "Every night he climbed the narrow stairs and lit the great lamp for ships he would never meet. "
    "One winter a small boat came through the storm, and its captain knocked on his door at dawn."
)
TOKENS_PER_AUDIO_SECOND = 22050 / 1024  # an audio token is 1024 samples at XTTS's 22.05 kHz
BYTES_PER_SECOND = 48000  # 24 kHz, 16-bit mono PCM after the WAV header
CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "float32": {"GPT_PRECISION": "float32", "VOCODER_PRECISION": "float32", "VOCODER_BACKEND": "torch"},
    "int8-torch-vocoder": {"GPT_PRECISION": "int8", "VOCODER_BACKEND": "torch"},
    "omp-passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "omp-active": {"OMP_WAIT_POLICY": "ACTIVE"},
}
GPT_LINEAR_WEIGHTS = {"full": 30 * (1024 * 3072 + 1024 * 1024 + 1024 * 4096 + 4096 * 1024)}
WEIGHT_BYTES = {"int8": 1, "int4": 0.5, "bfloat16": 2, "float16": 2, "float32": 4}


def memory_bandwidth_gb_s(repeats: int = 5) -> float:
    """Bytes moved per second by a large copy (read + write), median: what reading weights can reach."""
    source = torch.ones(256 * 1024 * 1024 // 4)  # 256 MB, far beyond any cache
    target = torch.empty_like(source)
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        runs.append(2 * source.numel() * 4 / (time.perf_counter() - started))
    return statistics.median(runs) / 1e9


class Server:
    """`python run.py` with the configuration's environment, on a free port."""

    def __init__(self, size: str, cap: int, env: dict[str, str], voices: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "DUMMY_MODEL": size, "HOST": "127.0.0.1", "PORT": str(self.port),
            "MAX_AUDIO_TOKENS": str(cap), "MAX_CONCURRENT_REQUESTS": "16", "QUEUE_TIMEOUT": "3600",
            "VOICES_DIR": str(voices),
            **env,
        }  # fmt: skip

    def __enter__(self) -> Server:
        log = REPO / "bench" / "results" / f"cpu-speed-server-{self.port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("w")  # the server's own lines (one per request) would drown the table
        self.process = subprocess.Popen(
            [sys.executable, "run.py"], cwd=REPO, env=self.env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(120)
        self.log.close()

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/health", timeout=10).json()


def speak(url: str, text: str, seed: int) -> dict[str, Any]:
    """One /tts_stream request read to its end: first audio, total, audio seconds, the server's stage timings."""
    body = {"text": text, "language": "en", "speaker_id": SPEAKER, "seed": seed}
    body["repetition_penalty"] = REPETITION_PENALTY
    started = time.perf_counter()
    first = None
    received = 0
    with httpx.stream("POST", f"{url}/tts_stream", json=body, timeout=1800) as response:
        response.raise_for_status()
        session_id = response.headers["x-session-id"]
        for chunk in response.iter_raw():
            received += len(chunk)
            if first is None and received > 44:  # past the WAV header
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    status = httpx.get(f"{url}/stream_status/{session_id}", timeout=10).json()
    audio_s = (received - 44) / BYTES_PER_SECOND
    return {"ttfa_s": first or total, "total_s": total, "audio_s": audio_s, "stages_s": status["timings_s"]}


def together(url: str, texts: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """Requests started at their offsets (seconds) from now, each in its own thread; results in order."""
    results: list[dict[str, Any]] = [{} for _ in texts]
    started = time.perf_counter()

    def one(index: int, delay: float, text: str) -> None:
        time.sleep(max(0.0, delay - (time.perf_counter() - started)))
        results[index] = speak(url, text, index + 1)

    threads = [threading.Thread(target=one, args=(i, delay, text)) for i, (delay, text) in enumerate(texts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def measure(server: Server, levels: list[int], repeats: int, tokens_per_second: float) -> dict[str, Any]:
    url = server.url
    speak(url, ONE_LINE, 0)  # warm: the first request pays for lazy set-up
    idle = statistics.median(speak(url, ONE_LINE, seed)["ttfa_s"] for seed in range(1, repeats + 1))
    print(f"    first audio idle {idle:.3f} s", flush=True)
    single = speak(url, THREE_SENTENCES, 7)
    tokens = single["audio_s"] * tokens_per_second
    stages = single["stages_s"]
    per_token = {
        stage: 1000 * stages.get(stage, 0.0) / tokens for stage in ("prefill", "gpt_steps", "vocoder", "encode")
    }
    rtf = single["total_s"] / single["audio_s"]
    print(f"    one stream RTF {rtf:.2f}; ms/token " + " ".join(f"{k}={v:.1f}" for k, v in per_token.items()))
    throughput = {}
    for level in levels:
        started = time.perf_counter()
        runs = together(url, [(0.0, ONE_LINE)] * level)
        wall = time.perf_counter() - started
        throughput[str(level)] = sum(run["audio_s"] for run in runs) / wall
        print(f"    {level} streams: {throughput[str(level)]:.2f} audio s per wall s", flush=True)
    # one burst lands the newcomer at one moment of the others' steps: take the median over `repeats` bursts,
    # the newcomer 2.5-3.5 s after the three started
    offsets = [2.5 + index / max(repeats - 1, 1) for index in range(repeats)]
    newcomers = [together(url, [(0.0, THREE_SENTENCES)] * 3 + [(offset, ONE_LINE)])[-1]["ttfa_s"] for offset in offsets]
    newcomer = statistics.median(newcomers)
    samples = " ".join(f"{value:.2f}" for value in newcomers)
    print(f"    burst newcomer first audio {newcomer:.3f} s ({newcomer / idle:.2f}x idle; {samples} s)", flush=True)
    return {
        "first_audio_idle_s": idle,
        "stream_rtf": rtf,
        "stream": single,
        "ms_per_token": per_token,
        "audio_s_per_wall_s": throughput,
        "burst_newcomer_first_audio_s": newcomer,
        "burst_newcomer_runs_s": newcomers,
        "burst_over_idle": newcomer / idle,
    }


def print_table(report: dict[str, Any]) -> None:
    levels = report["levels"]
    print(f"\n{report['machine']}; bandwidth {report['bandwidth_gb_s']:.1f} GB/s (a 256 MB copy, read + write)")
    head = f"{'config':20s} {'GPT':>8s} {'vocoder':>16s} {'RTF':>5s} {'1st s':>6s} {'burst':>6s} "
    print(head + " ".join(f"{'x' + str(level):>6s}" for level in levels) + "   ms/token (floor)")
    for name, row in report["configs"].items():
        floor = row["floor_ms_per_token"]
        stages = " ".join(f"{k}={v:.1f}" for k, v in row["ms_per_token"].items())
        print(
            f"{name:20s} {row['gpt']:>8s} {row['vocoder']:>16s} {row['stream_rtf']:5.2f} "
            f"{row['first_audio_idle_s']:6.3f} {row['burst_over_idle']:5.2f}x "
            + " ".join(f"{row['audio_s_per_wall_s'][str(level)]:6.2f}" for level in levels)
            + f"   {stages} (GPT floor {floor:.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--configs", default="default,float32", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--cap", type=int, default=120, help="MAX_AUDIO_TOKENS: audio tokens per sentence")
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=3, help="idle first-audio runs and bursts (median)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cpu-speed.json")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    bandwidth = memory_bandwidth_gb_s()
    report: dict[str, Any] = {
        "size": args.size, "cap": args.cap, "levels": levels, "bandwidth_gb_s": bandwidth,
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}", "configs": {},
    }  # fmt: skip
    voices = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-cpu-speed-{os.getpid()}"
    for name in args.configs.split(","):
        print(f"  {name}: {CONFIGS[name] or 'default settings'}", flush=True)
        with Server(args.size, args.cap, CONFIGS[name], voices) as server:
            model = server.health()["model"]
            row = measure(server, levels, args.repeats, tokens_per_second=TOKENS_PER_AUDIO_SECOND)
        gpt = model["gpt_precision"]
        vocoder = f"{model.get('vocoder_backend', 'torch')} {model['vocoder_precision']}"
        weights = GPT_LINEAR_WEIGHTS.get(args.size, 0) * WEIGHT_BYTES.get(gpt, 4)
        row.update(gpt=gpt, vocoder=vocoder, model=model, floor_ms_per_token=1000 * weights / (bandwidth * 1e9))
        report["configs"][name] = row
        report["machine"] = model.get("cpu") or report["machine"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
