"""VOCODER_BACKEND x VOCODER_PRECISION: the vocoder's cost per chunk, its fidelity, batching, and whole streams.

Full-size random weights (the dummy model builder; the vocoder is the real HiFi-GAN either way). Every figure
comes from variants interleaved in one process, medians of `--rounds`, ratios to torch float32:
- chunk: one 20-token chunk (its frames plus the decoder's context either side), as IncrementalVocoder asks
  each backend for it (OpenVINO's frame counts rounded up to its bucket);
- SNR: 100 latents streamed in 20-token chunks against torch float32's one-shot decode;
- batch-of-N: N chunks of the same length in one call, against N calls of one;
- stream: whole streams through the engine (GPT int8 steps + vocoder on the model thread), so OpenVINO's
  thread pool and torch's OpenMP team are measured together, with a few OpenVINO thread settings.

    python -m bench.vocoder_backends [--size full] [--rounds 5] [--out bench/reference/full-cpu-2cores-vocoder.json]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openvino as ov
import torch

from bench.engine_vs_stock import timed_engine_stream
from services.engine.hardware import cpu_features
from services.engine.model_loader import ModelChoice
from services.engine.tts import TTSEngine
from services.engine.vocoder import (
    DECODER_CONTEXT_FRAMES,
    IncrementalVocoder,
    TorchWaveformDecoder,
    WaveformDecoder,
    use_waveform_decoder,
)
from services.engine.vocoder_backends import (
    FRAME_BUCKET,
    OpenVinoWaveformDecoder,
    compile_waveform_decoder,
    openvino_model,
)

REPO = Path(__file__).resolve().parent.parent
CHUNK_TOKENS = 20
STREAM_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet woods."


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    noise = (signal - reference).pow(2).sum().clamp_min(1e-20)
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def build_variants(engine: TTSEngine, threads: int) -> dict[str, WaveformDecoder]:
    """Model thread: torch float32 / bfloat16 and OpenVINO f32 / bf16 hints (plus thread settings for bf16)."""
    decoder = engine.model.hifigan_decoder
    module = decoder.waveform_decoder
    started = time.perf_counter()
    model = openvino_model(decoder)
    print(f"  converted to OpenVINO in {time.perf_counter() - started:.1f} s", flush=True)

    variants: dict[str, WaveformDecoder] = {
        "torch float32": TorchWaveformDecoder(module),
        "torch bfloat16": TorchWaveformDecoder(copy.deepcopy(module).to(torch.bfloat16)),
        "openvino float32": compile_waveform_decoder(model, "float32", threads),
        "openvino bfloat16": compile_waveform_decoder(model, "bfloat16", threads),
    }
    extra = {"openvino bfloat16, 1 thread": {"INFERENCE_NUM_THREADS": 1}}
    extra["openvino bfloat16, no pinning"] = {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    for name, config in extra.items():
        compiled = ov.Core().compile_model(
            model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", **config}
        )
        variants[name] = OpenVinoWaveformDecoder(compiled, "bfloat16")
    return variants


def chunk_frames(decoder: Any, bucket: int) -> int:
    """Frames one steady 20-token chunk sends to the generator: its own, the context either side, bucketed."""
    vocoder = IncrementalVocoder(decoder, torch.zeros(1, 512, 1))
    frames = round(CHUNK_TOKENS * vocoder.frames_per_latent) + 2 * DECODER_CONTEXT_FRAMES
    return math.ceil(frames / bucket) * bucket


def chunk_table(
    engine: TTSEngine, variants: dict[str, WaveformDecoder], rounds: int, batches: list[int]
) -> dict[str, dict[str, Any]]:
    """Model thread: ms per chunk, SNR against torch float32 one-shot, batch-of-N ratios (interleaved)."""
    decoder = engine.model.hifigan_decoder
    voice = next(iter(engine.builtin_speakers.values()))
    embedding = voice.speaker_embedding
    channels = decoder.waveform_decoder.conv_pre.in_channels
    generator = torch.Generator().manual_seed(0)
    inputs = {name: torch.randn(1, channels, chunk_frames(decoder, v.frame_bucket), generator=generator)
              for name, v in variants.items()}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in variants}
    batch_times: dict[tuple[str, int], list[float]] = {}
    batched = [name for name in variants if name.startswith("openvino") and "," not in name]
    for name, waveform in variants.items():  # warm every shape first
        waveform(inputs[name], embedding)
        for size in batches if name in batched else []:
            waveform(inputs[name].expand(size, -1, -1).contiguous(), embedding)
    for _ in range(rounds):
        for name, waveform in variants.items():
            times[name].append(_seconds(lambda w=waveform, x=inputs[name]: w(x, embedding)))
            for size in batches if name in batched else []:
                frames = inputs[name].expand(size, -1, -1).contiguous()
                batch_times.setdefault((name, size), []).append(_seconds(lambda w=waveform, x=frames: w(x, embedding)))
    latents = torch.randn(1, 100, engine.latent_dim, generator=generator)
    reference = decoder(latents, g=embedding)[0, 0]
    baseline = statistics.median(times["torch float32"])
    rows: dict[str, dict[str, Any]] = {}
    for name, waveform in variants.items():
        vocoder = IncrementalVocoder(decoder, embedding, waveform=waveform)
        chunks = []
        for index in range(latents.shape[1]):
            vocoder.push(latents[:, index])
            if vocoder.pending_frames() >= CHUNK_TOKENS * vocoder.frames_per_latent:
                chunks.append(vocoder.decode_ready())
        chunks.append(vocoder.finish())
        median = statistics.median(times[name])
        rows[name] = {
            "frames": inputs[name].shape[-1],
            "ms_per_chunk": round(median * 1000, 1),
            "ratio_to_torch_float32": round(median / baseline, 3),
            "snr_db": round(snr_db(torch.cat(chunks), reference), 1),
        }
        for size in batches if name in batched else []:
            per_chunk = statistics.median(batch_times[(name, size)]) / size
            rows[name][f"batch_{size}_ratio"] = round(per_chunk / median, 3)
    return rows


def stream_table(
    engine: TTSEngine, variants: dict[str, WaveformDecoder], rounds: int, tokens: int
) -> dict[str, dict[str, Any]]:
    """Whole streams (GPT steps + vocoder) per variant, interleaved; the engine's own decoder is switched."""
    decoder = engine.model.hifigan_decoder
    voice = next(iter(engine.builtin_speakers.values()))
    names = [name for name in variants if name != "openvino float32"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    loop = asyncio.new_event_loop()
    try:
        for round_index in range(rounds + 1):  # the first round warms every variant's shapes
            for name in names:
                engine.submit(use_waveform_decoder, decoder, variants[name]).result()
                run = loop.run_until_complete(timed_engine_stream(engine, STREAM_TEXT, voice, tokens, 7))
                if round_index:
                    runs[name].append(run)
    finally:
        engine.submit(use_waveform_decoder, decoder, None).result()
        loop.close()
    rows: dict[str, dict[str, Any]] = {}
    for name, measured in runs.items():
        total = statistics.median(run["total_s"] for run in measured)
        rows[name] = {
            "total_s": round(total, 3),
            "rtf": round(total / statistics.median(run["audio_s"] for run in measured), 3),
            "gpt_steps_s": round(statistics.median(run["stages_s"]["gpt_steps"] for run in measured), 3),
            "vocoder_s": round(statistics.median(run["stages_s"]["vocoder"] for run in measured), 3),
        }
    baseline = rows["torch float32"]["total_s"]
    for row in rows.values():
        row["ratio_to_torch_float32"] = round(row["total_s"] / baseline, 3)
    return rows


def print_tables(report: dict[str, Any]) -> None:
    chunk = report["chunk"]
    batches = report["batches"]
    heads = "".join(f" {'batch ' + str(size):>8s}" for size in batches)
    print(f"\n{'vocoder (20-token chunk)':32s} {'frames':>6s} {'ms':>8s} {'ratio':>6s} {'SNR dB':>7s}{heads}")
    for name, row in chunk.items():
        cells = "".join(f" {row.get(f'batch_{size}_ratio', '-')!s:>8s}" for size in batches)
        print(
            f"{name:32s} {row['frames']:6d} {row['ms_per_chunk']:8.1f} {row['ratio_to_torch_float32']:6.2f}"
            f" {row['snr_db']:7.1f}{cells}"
        )
    if "stream" in report:
        heads = f"{'total s':>8s} {'RTF':>6s} {'GPT s':>7s} {'voc s':>7s} {'ratio':>6s}"
        print(f"\n{'whole stream (GPT int8 + vocoder)':32s} {heads}")
        for name, row in report["stream"].items():
            print(
                f"{name:32s} {row['total_s']:8.2f} {row['rtf']:6.2f} {row['gpt_steps_s']:7.2f} {row['vocoder_s']:7.2f}"
                f" {row['ratio_to_torch_float32']:6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="2,4,8")
    parser.add_argument("--stream-tokens", type=int, default=120, help="audio tokens per whole stream (0: skip)")
    parser.add_argument("--stream-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch's threads (default: the server's NUM_THREADS)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "reference" / "full-cpu-2cores-vocoder.json")
    args = parser.parse_args()
    from config import Settings

    threads = args.threads or Settings(DUMMY_MODEL=args.size).NUM_THREADS
    choice = ModelChoice(dummy=args.size, use_cpu=True, num_threads=threads, gpt_precision="int8")
    engine = TTSEngine.start(choice)  # vocoder: torch float32, the reference; variants are registered below
    try:
        print(f"dummy {args.size}, {threads} threads, {cpu_features().summary}", flush=True)
        variants = engine.submit(build_variants, engine, threads).result()
        batches = [int(size) for size in args.batches.split(",") if size]
        print("chunks ...", flush=True)
        report: dict[str, Any] = {
            "size": args.size,
            "threads": threads,
            "cpu": cpu_features().summary,
            "frame_bucket": FRAME_BUCKET,
            "batches": batches,
            "chunk": engine.submit(chunk_table, engine, variants, args.rounds, batches).result(),
        }
        if args.stream_tokens:
            print("whole streams ...", flush=True)
            report["stream"] = stream_table(engine, variants, args.stream_rounds, args.stream_tokens)
    finally:
        engine.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_tables(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
