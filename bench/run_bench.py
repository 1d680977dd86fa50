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
import logging
import os
import platform
import socket
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

from bench import batching, micro, precision
from config import Settings
from main import model_choice
from services.engine.dummy_model import build_dummy_xtts
from services.engine.latents import VoiceLatents
from services.engine.model_loader import pick_device
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.tts import TTSEngine

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
    started = time.perf_counter()
    sentences = await engine.plan(text, "en", True)
    params = GenerationParams(
        sampling=SamplingSettings(repetition_penalty=REPETITION_PENALTY, min_new_tokens=tokens, max_new_tokens=tokens),
        seed=seed,
    )
    stream = engine.synthesize(sentences, voice, params, threading.Event())
    first = None
    received = 0
    async for chunk in stream:
        if first is None:
            first = time.perf_counter() - started
        received += len(chunk)
    await stream.wait_idle()
    total = time.perf_counter() - started
    timings = stream.timings
    stages = {"prefill": timings.prefill_s, "gpt_steps": timings.gpt_steps_s, "vocoder": timings.vocoder_s,
              "encode": stream.encode_s}  # fmt: skip
    return {
        "ttfa_s": first or 0.0,
        "total_s": total,
        "audio_s": received / 48000,
        "stages_s": {stage: round(seconds, 4) for stage, seconds in stages.items()},
    }


async def engine_first_chunk(engine: TTSEngine, text: str, voice: VoiceLatents, seed: int) -> float:
    """Seconds from request to the first audio chunk through the engine (plan, admission-free stream)."""
    started = time.perf_counter()
    sentences = await engine.plan(text, "en", True)
    params = GenerationParams(sampling=SamplingSettings(repetition_penalty=REPETITION_PENALTY), seed=seed)
    cancel = threading.Event()
    stream = engine.synthesize(sentences, voice, params, cancel)
    chunks = stream.__aiter__()
    await chunks.__anext__()
    first = time.perf_counter() - started
    cancel.set()
    await chunks.aclose()
    await stream.wait_idle()
    return first


def stock_first_chunk(model: Any, text: str, voice: VoiceLatents, seed: int) -> float:
    torch.manual_seed(seed)
    started = time.perf_counter()
    chunks = model.inference_stream(
        text, "en", voice.gpt_cond_latent, voice.speaker_embedding, stream_chunk_size=20,
        enable_text_splitting=True, repetition_penalty=REPETITION_PENALTY,
    )  # fmt: skip
    next(chunks)
    _sync()
    first = time.perf_counter() - started
    chunks.close()
    return first


def _speech_body(text: str, seed: int) -> dict[str, Any]:
    return {
        "text": text,
        "language": "en",
        "speaker_id": SPEAKER,
        "seed": seed,
        "repetition_penalty": REPETITION_PENALTY,
    }


_HTTP_CLIENT = """
import json, sys, time, httpx
for line in sys.stdin:
    url, body = json.loads(line)
    started = time.perf_counter()
    with httpx.stream("POST", url + "/tts_stream", json=body, timeout=600) as response:
        response.raise_for_status()
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 44:  # past the WAV header: the first model-made samples
                break
    print(time.perf_counter() - started, flush=True)
"""


class HttpClientProcess:
    """A client in its own process, as real clients are (no GIL shared with the server)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HTTP_CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def first_chunk(self, url: str, text: str, seed: int) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([url, _speech_body(text, seed)]) + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(30)


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


def in_process(
    engine: TTSEngine, stock: Any, case_names: list[str], repeats: int, ttfa_repeats: int, max_tokens: int
) -> dict:
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
                # coqui's paths run on the model thread too: one OpenMP team in the process (see TTSEngine.start)
                "stock_stream": lambda seed, text=text, tokens=tokens: engine.thread.submit(
                    timed_stock_stream, stock, text, voice, tokens, seed
                ).result(),
                "stock_one_shot": lambda seed, text=text, tokens=tokens: engine.thread.submit(
                    timed_stock_one_shot, stock, text, voice, tokens, seed
                ).result(),
            }
            if name == case_names[0]:
                for runner in runners.values():  # warm each path once (lazy initialisation, allocator)
                    runner(0)
            case: dict[str, Any] = {"tokens_per_sentence": tokens}
            # time to first audio: first chunks only, ours and stock alternating, median of several
            ours_ttfa, stock_ttfa = [], []
            for seed in range(1, ttfa_repeats + 1):
                ours_ttfa.append(loop.run_until_complete(engine_first_chunk(engine, text, voice, seed)))
                stock_ttfa.append(engine.thread.submit(stock_first_chunk, stock, text, voice, seed).result())
            case["ttfa"] = {
                "ours_s": statistics.median(ours_ttfa),
                "stock_stream_s": statistics.median(stock_ttfa),
                "runs": ttfa_repeats,
            }
            print(
                f"  {name:10s} TTFA ours {case['ttfa']['ours_s']:.3f} s, stock {case['ttfa']['stock_stream_s']:.3f} s"
            )
            for label, runner in runners.items():
                case[label] = median_run([runner(seed) for seed in range(1, repeats + 1)])
                print(f"  {name:10s} {label:15s} total {case[label]['total_s']:7.2f} s", flush=True)
            case["ratios"] = {
                "ours_stream_over_stock_one_shot": case["ours_stream"]["total_s"] / case["stock_one_shot"]["total_s"],
                "stock_stream_over_stock_one_shot": case["stock_stream"]["total_s"] / case["stock_one_shot"]["total_s"],
                "ours_ttfa_over_stock_stream_ttfa": case["ttfa"]["ours_s"] / case["ttfa"]["stock_stream_s"],
            }
            results[name] = case
    finally:
        loop.close()
    return results


def http_stream(url: str, text: str, seed: int) -> dict[str, Any]:
    body = _speech_body(text, seed)
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


def socket_first_audio(url: str, text: str, seed: int) -> float:
    """/v1/tts/ws: seconds from the message that completes the first sentence to its first audio frame (the
    text before it was sent earlier, as an LLM writes it)."""
    from websockets.sync.client import connect

    body = _speech_body(text, seed)
    config = {"type": "config", "language": body["language"], "speaker_id": body["speaker_id"], "seed": seed,
              "repetition_penalty": body["repetition_penalty"],
              "output_format": "pcm"}  # fmt: skip
    head, tail = text[:-1], text[-1:] + " And"  # the final punctuation arrives last, with the next word
    with connect(url.replace("http://", "ws://") + "/v1/tts/ws", max_size=None) as socket:
        socket.send(json.dumps(config))
        socket.recv()
        socket.send(json.dumps({"type": "text", "text": head}))
        time.sleep(0.2)  # the head is buffered, waiting for its end
        started = time.perf_counter()
        socket.send(json.dumps({"type": "text", "text": tail}))
        while not isinstance(socket.recv(), bytes):
            pass
        elapsed = time.perf_counter() - started
        socket.send(json.dumps({"type": "clear"}))
    return elapsed


def http_first_audio(url: str, text: str, seed: int) -> float:
    started = time.perf_counter()
    received = 0
    with httpx.stream("POST", f"{url}/tts_stream", json=_speech_body(text, seed), timeout=600) as response:
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 44:
                return time.perf_counter() - started
    return time.perf_counter() - started


class _ServerThread:
    """This server (create_app with the benchmark's own engine) in a thread, so HTTP and in-process
    figures come from one process, one model and one warm-up."""

    def __init__(self, engine: TTSEngine, size: str, max_tokens: int, concurrency: int) -> None:
        import uvicorn

        from main import create_app

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        settings = Settings(
            DUMMY_MODEL=size, HOST="127.0.0.1", PORT=port, MAX_AUDIO_TOKENS=max_tokens,
            MAX_CONCURRENT_REQUESTS=max(concurrency, 1), VOICES_DIR=Path(tempfile.mkdtemp()) / "voices",
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings, engine=engine), log_level="warning",
                                                    host="127.0.0.1", port=port, http="h11"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        logging.getLogger("xtts_server.requests").setLevel(logging.WARNING)  # one line per request: noise here

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(120)


def over_http(
    engine: TTSEngine, size: str, repeats: int, ttfa_repeats: int, max_tokens: int, levels: list[int]
) -> dict:
    text, tokens = CASES["short"]
    tokens = min(tokens, max_tokens)
    voice = engine.builtin_speakers[SPEAKER]
    with _ServerThread(engine, size, tokens, max(levels)) as url:
        http_stream(url, text, 0)  # warm
        loop = asyncio.new_event_loop()
        client = HttpClientProcess()
        in_process_ttfa, http_ttfa = [], []
        try:
            client.first_chunk(url, text, 0)  # warm the client's imports and connection code
            for seed in range(1, ttfa_repeats + 1):  # alternating, same seeds
                in_process_ttfa.append(loop.run_until_complete(engine_first_chunk(engine, text, voice, seed)))
                http_ttfa.append(client.first_chunk(url, text, seed))
        finally:
            loop.close()
            client.close()
        ttfa = {
            "in_process_s": statistics.median(in_process_ttfa),
            "http_s": statistics.median(http_ttfa),
            "runs": ttfa_repeats,
        }
        ttfa["http_overhead_ms"] = (ttfa["http_s"] - ttfa["in_process_s"]) * 1000
        print(f"  http TTFA {ttfa['http_s']:.3f} s vs in-process {ttfa['in_process_s']:.3f} s", flush=True)
        socket_runs, post_runs = [], []
        one_sentence = "How can I help you with your question today?"  # the socket speaks sentence by sentence
        for seed in range(1, ttfa_repeats + 1):  # alternating, same seeds and text, both clients in this process
            socket_runs.append(socket_first_audio(url, one_sentence, seed))
            post_runs.append(http_first_audio(url, one_sentence, seed))
        ttfa["websocket"] = {
            "socket_s": statistics.median(socket_runs),
            "tts_stream_s": statistics.median(post_runs),
            "difference_ms": (statistics.median(socket_runs) - statistics.median(post_runs)) * 1000,
            "runs": ttfa_repeats,
        }
        print(
            f"  websocket: first audio {ttfa['websocket']['socket_s']:.3f} s after the sentence's end vs "
            f"/tts_stream {ttfa['websocket']['tts_stream_s']:.3f} s", flush=True,
        )  # fmt: skip
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
    return {"tokens_per_sentence": tokens, "ttfa": ttfa, "single": single, "concurrency": concurrency}


def print_tables(report: dict) -> None:
    print(f"\n{report['machine']['summary']}  model: dummy {report['size']}  device: {report['device']}\n")
    print("Time to first audio (median of first-chunk runs, ours and stock alternating):")
    print(f"{'case':10s} {'ours s':>8s} {'stock stream s':>15s} {'ratio':>7s}")
    for name, case in report["in_process"].items():
        ttfa = case["ttfa"]
        ratio = case["ratios"]["ours_ttfa_over_stock_stream_ttfa"]
        print(f"{name:10s} {ttfa['ours_s']:8.3f} {ttfa['stock_stream_s']:15.3f} {ratio:7.3f}")
    print("\nWhole streams (pinned token count per sentence):")
    print(f"{'case':10s} {'engine':15s} {'total s':>8s} {'audio s':>8s} {'RTF':>6s}")
    for name, case in report["in_process"].items():
        for label in ("ours_stream", "stock_stream", "stock_one_shot"):
            run = case[label]
            print(f"{name:10s} {label:15s} {run['total_s']:8.2f} {run['audio_s']:8.2f} {run['rtf']:6.2f}")
    print(f"\n{'case':10s} {'tokens':>6s} {'ours/one-shot':>14s} {'stock stream/one-shot':>22s}")
    for name, case in report["in_process"].items():
        ratios = case["ratios"]
        print(
            f"{name:10s} {case['tokens_per_sentence']:6d} {ratios['ours_stream_over_stock_one_shot']:14.3f} "
            f"{ratios['stock_stream_over_stock_one_shot']:22.3f}"
        )
    print("\nstages (ours, s):")
    for name, case in report["in_process"].items():
        print(f"  {name:10s} " + "  ".join(f"{k}={v:.3f}" for k, v in case["ours_stream"]["stages_s"].items()))
    http = report.get("http")
    if http:
        ttfa = http["ttfa"]
        print(
            f"\nHTTP (short): TTFA {ttfa['http_s']:.3f} s vs in-process {ttfa['in_process_s']:.3f} s "
            f"(+{ttfa['http_overhead_ms']:.0f} ms, median of {ttfa['runs']}); "
            f"whole stream {http['single']['total_s']:.2f} s"
        )
        print("  stages: " + "  ".join(f"{k}={v:.3f}" for k, v in http["single"]["stages_s"].items()))
        if socket_ttfa := ttfa.get("websocket"):
            print(
                f"  /v1/tts/ws: first audio {socket_ttfa['socket_s']:.3f} s after the text that ends the first "
                f"sentence vs {socket_ttfa['tts_stream_s']:.3f} s after POST /tts_stream "
                f"({socket_ttfa['difference_ms']:+.0f} ms, median of {socket_ttfa['runs']})"
            )
        for level, row in http["concurrency"].items():
            print(
                f"  {level} concurrent: {row['audio_s_per_wall_s']:.2f} audio s per wall s, "
                f"mean TTFA {row['mean_ttfa_s']:.3f} s"
            )
    print("\nsmaller wins (before -> after):")
    for name, row in report["smaller_wins"].items():
        print(f"  {name}: {row['before_s']:.4f} s -> {row['after_s']:.4f} s ({row['speedup']})")


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
    parser.add_argument("--repeats", type=int, default=1, help="whole-stream runs per engine and case")
    parser.add_argument("--ttfa-repeats", type=int, default=5, help="first-chunk runs per engine and case")
    parser.add_argument("--concurrency", default="1,2,4,8", help="concurrent streams, in-process and over HTTP")
    parser.add_argument("--no-batching", action="store_true", help="skip the batched-decoding table")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-precision", action="store_true", help="skip the GPT/vocoder precision table")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    max_tokens = 37 if args.size == "tiny" else 600  # the tiny model stops at 40 - 3
    print(f"benchmarking dummy {args.size} on {pick_device(False)}", flush=True)
    engine = TTSEngine.start(model_choice(Settings(DUMMY_MODEL=args.size)))  # as the server runs it
    loaded = engine.loaded
    engine.warm_up()
    stock = engine.thread.submit(  # as coqui ships it (weight norm not folded)
        lambda: build_dummy_xtts(args.size, Path(tempfile.gettempdir()) / "xtts-dummy").to(loaded.device)
    ).result()
    report: dict[str, Any] = {
        "size": args.size,
        "device": str(loaded.device),
        "machine": machine(),
        "in_process": in_process(
            engine, stock, [case for case in args.cases.split(",") if case], args.repeats, args.ttfa_repeats, max_tokens
        ),
        "smaller_wins": engine.thread.submit(
            micro.smaller_wins, engine, stock, engine.builtin_speakers[SPEAKER]
        ).result(),
    }
    levels = [int(level) for level in args.concurrency.split(",")]
    short_text, short_tokens = CASES["short"]
    short_tokens = min(short_tokens, max_tokens)
    voice = engine.builtin_speakers[SPEAKER]
    if not args.no_batching:
        report["batching"] = batching.batching_report(
            engine, short_text, voice, short_tokens, levels, args.ttfa_repeats
        )
    if not args.no_precision:
        text, tokens = CASES["paragraph"]
        tokens = min(tokens, max_tokens)
        loop = asyncio.new_event_loop()

        def one_stream(variant_engine: TTSEngine) -> dict:
            run = loop.run_until_complete(
                timed_engine_stream(variant_engine, text, variant_engine.builtin_speakers[SPEAKER], tokens, 7)
            )
            run = {**run, "rtf": run["total_s"] / max(run["audio_s"], 1e-9)}
            if not args.no_batching:  # with batching: the short case at 1/4/8 streams
                run["batched"] = batching.throughput(variant_engine, short_text, voice, short_tokens, [1, 4, 8])
            return run

        print("precision (paragraph, one stream):", flush=True)
        report["precision"] = precision.precision_table(
            loaded, engine.builtin_speakers[SPEAKER], text, tokens, 7, one_stream, engine.thread
        )
        loop.close()
    out = args.out or REPO / "bench" / "results" / f"bench-{args.size}-{report['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))  # in-process figures survive an HTTP failure
    if not args.no_http:
        report["http"] = over_http(engine, args.size, args.repeats, args.ttfa_repeats, max_tokens, levels)
        out.write_text(json.dumps(report, indent=2, default=float))
    else:
        engine.shutdown()
    print_tables(report)
    if "batching" in report:
        batching.print_batching_table(report["batching"])
    if "precision" in report:
        print("\nGPT and vocoder precision (paragraph, one stream; fidelity teacher-forced on float32's tokens):")
        precision.print_precision_table(report["precision"])
        float32_row = report["precision"][precision.label("float32", "float32")]
        if "batched" in float32_row:
            batching.print_precision_rows(report["precision"], float32_row["batched"]["1"]["audio_s_per_wall_s"])
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
