"""Benchmark: this server's engine against coqui-tts's stock `inference_stream` and `inference`.

Same run, same machine, same latents, text, seed and (pinned) token count. Prints tables and writes JSON.

    python -m bench.run_bench --size full              # CPU here, the GPU when there is one
    python -m bench.run_bench --size tiny --repeats 3

Random weights rarely sample the stop token, so every generation is pinned to a token count
(min = max new tokens) and speeds are compared per second of audio produced.

The parts: bench/engine_vs_stock.py (in-process, against coqui's paths), bench/micro.py (smaller wins),
bench/batching.py (many streams), bench/precision.py (per precision), bench/over_http.py (through the server).
This module runs them in that order, prints their tables and writes the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench import batching, micro, precision
from bench.cases import CASES, SPEAKER
from bench.engine_vs_stock import in_process, timed_engine_stream
from bench.over_http import over_http
from config import Settings
from main import model_choice
from services.engine.dummy_model import build_dummy_xtts
from services.engine.model_loader import pick_device
from services.engine.tts import TTSEngine

REPO = Path(__file__).resolve().parent.parent


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
        if wyoming_ttfa := ttfa.get("wyoming"):
            print(
                f"  wyoming: first audio {wyoming_ttfa['wyoming_s']:.3f} s after `synthesize` vs "
                f"{wyoming_ttfa['tts_stream_s']:.3f} s after POST /tts_stream "
                f"({wyoming_ttfa['difference_ms']:+.0f} ms, median of {wyoming_ttfa['runs']})"
            )
        if elevenlabs_ttfa := ttfa.get("elevenlabs"):
            print(
                f"  elevenlabs multi-stream-input: first audio {elevenlabs_ttfa['elevenlabs_s']:.3f} s after the text "
                f"that ends the first sentence vs {elevenlabs_ttfa['socket_s']:.3f} s on /v1/tts/ws "
                f"({elevenlabs_ttfa['difference_ms']:+.0f} ms, median of {elevenlabs_ttfa['runs']})"
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
    # against coqui's stock float32 paths: the reference precision and vocoder (bench/cpu_speed.py runs the defaults)
    reference = Settings(
        DUMMY_MODEL=args.size, GPT_PRECISION="float32", VOCODER_BACKEND="torch", VOCODER_PRECISION="float32"
    )
    engine = TTSEngine.start(model_choice(reference))
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
