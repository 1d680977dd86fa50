"""Benchmark: this server's engine against coqui-tts's stock `inference_stream` and `inference`.

Same run, same machine, same latents, text, seed and (pinned) token count. Prints tables and writes JSON.

    python -m bench.run_bench --size full              # CPU here, the GPU when there is one
    python -m bench.run_bench --size tiny --repeats 3

Random weights rarely sample the stop token, so every generation is pinned to a token count
(min = max new tokens) and speeds are compared per second of audio produced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

from bench import micro
from config import Settings
from services.dummy_model import build_dummy_xtts
from services.gpt_sampler import SamplingSettings
from services.latents import VoiceLatents
from services.model_loader import load_model, pick_device
from services.sessions import SessionRegistry
from services.tts import GenerationParams, TTSEngine

REPO = Path(__file__).resolve().parent.parent
SPEAKER = "Dummy Alto"
REPETITION_PENALTY = 5.0
CASES: dict[str, tuple[str, int]] = {
    # name: (text, audio tokens per sentence); ~46 ms of audio per token
    "short": ("Hello! How can I help you today?", 60),
    "paragraph": (
        "The committee met on a grey Tuesday morning to review the budget, the hiring plan and the long list of "
        "repairs that the old building needed before winter, and after three hours they agreed on almost nothing",
        400,
    ),
    "long": (
        "Once upon a time there was a lighthouse keeper who lived alone on a rock in the northern sea. "
        "Every night he climbed the narrow stairs and lit the great lamp for ships he would never meet. "
        "One winter a small boat came through the storm, and its captain knocked on his door at dawn.",
        150,
    ),
}


def audio_seconds(samples: int) -> float:
    return samples / 24000


def timed_stock_stream(model: Any, text: str, voice: VoiceLatents, tokens: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    started = time.perf_counter()
    first = None
    samples = 0
    for chunk in model.inference_stream(
        text, "en", voice.gpt_cond_latent, voice.speaker_embedding, stream_chunk_size=20,
        enable_text_splitting=True, repetition_penalty=REPETITION_PENALTY, min_new_tokens=tokens,
        max_new_tokens=tokens,
    ):  # fmt: skip
        if first is None:
            _sync()
            first = time.perf_counter() - started
        samples += chunk.shape[-1]
    _sync()
    return {"ttfa_s": first or 0.0, "total_s": time.perf_counter() - started, "audio_s": audio_seconds(samples)}


def timed_stock_one_shot(model: Any, text: str, voice: VoiceLatents, tokens: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    started = time.perf_counter()
    output = model.inference(
        text, "en", voice.gpt_cond_latent, voice.speaker_embedding, enable_text_splitting=True,
        repetition_penalty=REPETITION_PENALTY, min_new_tokens=tokens, max_new_tokens=tokens,
    )  # fmt: skip
    _sync()
    total = time.perf_counter() - started
    return {"ttfa_s": total, "total_s": total, "audio_s": audio_seconds(len(output["wav"]))}


async def timed_engine_stream(engine: TTSEngine, text: str, voice: VoiceLatents, tokens: int, seed: int) -> dict:
    sessions = SessionRegistry(16, 60)
    session = sessions.create(None, SPEAKER, "en", len(text))
    started = time.perf_counter()
    sentences = await engine.plan(text, "en", True)
    params = GenerationParams(
        sampling=SamplingSettings(repetition_penalty=REPETITION_PENALTY, min_new_tokens=tokens, max_new_tokens=tokens),
        seed=seed,
    )
    stream = engine.open_stream(sentences, voice, params, session, sessions, release=lambda: None)
    first = None
    received = 0
    async for chunk in stream:
        if first is None:
            first = time.perf_counter() - started
        received += len(chunk)
    await stream.close()
    total = time.perf_counter() - started
    return {
        "ttfa_s": first or 0.0,
        "total_s": total,
        "audio_s": received / 48000,
        "stages_s": {stage: round(seconds, 4) for stage, seconds in session.timings_s.items()},
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_run(runs: list[dict]) -> dict:
    """Median of each figure over repeats (stages from the median-total run)."""
    result: dict[str, Any] = {
        key: statistics.median(run[key] for run in runs) for key in ("ttfa_s", "total_s", "audio_s")
    }
    middle = sorted(runs, key=lambda run: run["total_s"])[len(runs) // 2]
    if "stages_s" in middle:
        result["stages_s"] = middle["stages_s"]
    result["rtf"] = result["total_s"] / max(result["audio_s"], 1e-9)
    result["runs"] = len(runs)
    return result


def in_process(size: str, case_names: list[str], repeats: int, max_tokens: int) -> tuple[dict, dict]:
    settings = Settings(DUMMY_MODEL=size)
    loaded = load_model(settings)  # what the server runs: weight norm folded, on the GPU if any
    engine = TTSEngine(loaded)
    engine.warm_up()
    stock = build_dummy_xtts(size, Path(tempfile.gettempdir()) / "xtts-dummy").to(loaded.device)  # as coqui ships it
    voice = engine.builtin_speakers[SPEAKER]
    results: dict[str, dict] = {}
    loop = asyncio.new_event_loop()
    try:
        for name in case_names:
            text, tokens = CASES[name]
            tokens = min(tokens, max_tokens)
            runners: dict[str, Callable[[int], dict]] = {
                "ours_stream": lambda seed, text=text, tokens=tokens: loop.run_until_complete(
                    timed_engine_stream(engine, text, voice, tokens, seed)
                ),
                "stock_stream": lambda seed, text=text, tokens=tokens: timed_stock_stream(
                    stock, text, voice, tokens, seed
                ),
                "stock_one_shot": lambda seed, text=text, tokens=tokens: timed_stock_one_shot(
                    stock, text, voice, tokens, seed
                ),
            }
            if name == case_names[0]:
                for runner in runners.values():  # warm each path once (lazy initialisation, allocator)
                    runner(0)
            case: dict[str, Any] = {"tokens_per_sentence": tokens}
            for label, runner in runners.items():
                case[label] = median_run([runner(seed) for seed in range(1, repeats + 1)])
                print(f"  {name:10s} {label:15s} total {case[label]['total_s']:7.2f} s", flush=True)
            case["ratios"] = {
                "ours_stream_over_stock_one_shot": case["ours_stream"]["total_s"] / case["stock_one_shot"]["total_s"],
                "stock_stream_over_stock_one_shot": case["stock_stream"]["total_s"] / case["stock_one_shot"]["total_s"],
                "ours_ttfa_over_stock_stream_ttfa": case["ours_stream"]["ttfa_s"] / case["stock_stream"]["ttfa_s"],
            }
            results[name] = case
        wins = micro.smaller_wins(engine, stock, voice)
    finally:
        loop.close()
        engine.shutdown()
    return results, wins


def start_server(size: str, max_tokens: int, concurrency: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = 8700 + os.getpid() % 200
    log = Path(tempfile.mkdtemp()) / "server.log"
    env = {
        **os.environ,
        "DUMMY_MODEL": size,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MAX_AUDIO_TOKENS": str(max_tokens),
        "MAX_CONCURRENT_REQUESTS": str(max(concurrency, 1)),
        "VOICES_DIR": str(log.parent / "voices"),
    }
    process = subprocess.Popen(
        [sys.executable, "run.py"], cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not become ready")


def http_stream(url: str, text: str, seed: int) -> dict[str, Any]:
    body = {
        "text": text,
        "language": "en",
        "speaker_id": SPEAKER,
        "seed": seed,
        "repetition_penalty": REPETITION_PENALTY,
    }
    started = time.perf_counter()
    first = None
    received = 0
    with httpx.stream("POST", f"{url}/tts_stream", json=body, timeout=600) as response:
        response.raise_for_status()
        session_id = response.headers["x-session-id"]
        for chunk in response.iter_raw():
            received += len(chunk)
            if first is None and received > 44:  # the header is not audio
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    stages = httpx.get(f"{url}/stream_status/{session_id}").json()["timings_s"]
    return {"ttfa_s": first or 0.0, "total_s": total, "audio_s": (received - 44) / 48000, "stages_s": stages}


def over_http(size: str, repeats: int, max_tokens: int, levels: list[int]) -> dict:
    text, tokens = CASES["short"]
    tokens = min(tokens, max_tokens)
    process, url, _log = start_server(size, tokens, max(levels))
    try:
        http_stream(url, text, 0)  # warm
        single = median_run([http_stream(url, text, seed) for seed in range(1, repeats + 1)])
        concurrency = {}
        for level in levels:
            runs: list[dict] = []
            lock = threading.Lock()

            def one(seed: int, runs: list[dict] = runs, lock: threading.Lock = lock) -> None:
                result = http_stream(url, text, seed)
                with lock:
                    runs.append(result)

            started = time.perf_counter()
            threads = [threading.Thread(target=one, args=(seed,)) for seed in range(level)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            concurrency[str(level)] = {
                "streams": level,
                "wall_s": wall,
                "audio_s": sum(run["audio_s"] for run in runs),
                "audio_s_per_wall_s": sum(run["audio_s"] for run in runs) / wall,
                "mean_ttfa_s": statistics.mean(run["ttfa_s"] for run in runs),
            }
            print(f"  http x{level}: {concurrency[str(level)]['audio_s_per_wall_s']:.2f} audio s / wall s", flush=True)
    finally:
        process.terminate()
        process.wait(60)
    return {"tokens_per_sentence": tokens, "single": single, "concurrency": concurrency}


def print_tables(report: dict) -> None:
    print(f"\n{report['machine']['summary']}  model: dummy {report['size']}  device: {report['device']}\n")
    print(f"{'case':10s} {'engine':15s} {'TTFA s':>8s} {'total s':>8s} {'audio s':>8s} {'RTF':>6s}")
    for name, case in report["in_process"].items():
        for label in ("ours_stream", "stock_stream", "stock_one_shot"):
            run = case[label]
            print(
                f"{name:10s} {label:15s} {run['ttfa_s']:8.3f} {run['total_s']:8.2f} "
                f"{run['audio_s']:8.2f} {run['rtf']:6.2f}"
            )
    print(f"\n{'case':10s} {'ours/one-shot':>14s} {'stock stream/one-shot':>22s} {'TTFA ours/stock':>16s}")
    for name, case in report["in_process"].items():
        ratios = case["ratios"]
        print(
            f"{name:10s} {ratios['ours_stream_over_stock_one_shot']:14.3f} "
            f"{ratios['stock_stream_over_stock_one_shot']:22.3f} {ratios['ours_ttfa_over_stock_stream_ttfa']:16.3f}"
        )
    print("\nstages (ours, s):")
    for name, case in report["in_process"].items():
        print(f"  {name:10s} " + "  ".join(f"{k}={v:.3f}" for k, v in case["ours_stream"]["stages_s"].items()))
    http = report.get("http")
    if http:
        short = report["in_process"].get("short", {}).get("ours_stream")
        single = http["single"]
        extra = (
            f" (in-process {short['ttfa_s']:.3f} s, +{(single['ttfa_s'] - short['ttfa_s']) * 1000:.0f} ms)"
            if short
            else ""
        )
        print(f"\nHTTP short: TTFA {single['ttfa_s']:.3f} s{extra}, total {single['total_s']:.2f} s")
        print("  stages: " + "  ".join(f"{k}={v:.3f}" for k, v in single["stages_s"].items()))
        for level, row in http["concurrency"].items():
            print(
                f"  {level} concurrent: {row['audio_s_per_wall_s']:.2f} audio s per wall s, "
                f"mean TTFA {row['mean_ttfa_s']:.3f} s"
            )
    print("\nsmaller wins:")
    for name, row in report["smaller_wins"].items():
        print(f"  {name}: {row}")


def machine() -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = platform.processor() or platform.machine()
    summary = (
        f"{gpu or 'CPU'}; {os.cpu_count()} CPUs ({cpu}); torch {torch.__version__}; threads {torch.get_num_threads()}"
    )
    return {"gpu": gpu, "cpus": os.cpu_count(), "torch": torch.__version__, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--cases", default="short,paragraph,long")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    max_tokens = 37 if args.size == "tiny" else 600  # the tiny model stops at 40 - 3
    print(f"benchmarking dummy {args.size} on {pick_device(False)}", flush=True)
    in_proc, wins = in_process(args.size, args.cases.split(","), args.repeats, max_tokens)
    report: dict[str, Any] = {
        "size": args.size,
        "device": str(pick_device(False)),
        "machine": machine(),
        "in_process": in_proc,
        "smaller_wins": wins,
    }
    out = args.out or REPO / "bench" / "results" / f"bench-{args.size}-{report['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))  # in-process figures survive an HTTP failure
    if not args.no_http:
        levels = [int(level) for level in args.concurrency.split(",")]
        report["http"] = over_http(args.size, args.repeats, max_tokens, levels)
        out.write_text(json.dumps(report, indent=2, default=float))
    print_tables(report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
