"""The GPT's kernels side by side: ms per decode step (1/4/8 rows) and per prefill, against the floor.

Full-size random weights (the dummy `full` model, 30 blocks at width 1024), each kernel applied to its
own copy of the same float32 GPT; the batched decode step (`batched_gpt.decode_step`, rows at 300 cached
positions) and a prefill of 100 positions (`batched_gpt.prefill`), variants interleaved in one process,
medians. The floor is the linear layers' weight bytes over the memory bandwidth measured in the same run
(a large torch copy): a step at 1 row cannot be faster than reading every weight once. SNR is of the
step's hidden states against float32 on the same inputs and cache; `row0_batch_vs_alone` is the largest
difference between row 0 computed alone and inside the batch (0: batch-invariant).

torch's OpenMP threads spin between parallel regions, which starves OpenVINO's threads (and everything
else) on 2 shared cores: with OMP_WAIT_POLICY=PASSIVE in the environment the OpenVINO int8 step measured
2.3x faster at 1 row and 4.5x at 8 rows on a busy machine (the report records the policy it ran under).

    .venv/bin/python -m bench.gpt_kernels [--repeats 7] [--out bench/reference/full-cpu-2cores-gpt-kernels.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from services.engine.batched_gpt import SlotKVCache, decode_step, prefill
from services.engine.dummy_model import build_dummy_xtts
from services.engine.gpt_kernels import GptKernel, apply_openvino
from services.engine.hardware import cpu_features
from services.engine.precision import apply_gpt_precision, transformer_dtype

REPO = Path(__file__).resolve().parent.parent
CACHED = 300
PREFILL = 100
ROWS = (1, 4, 8)


def bandwidth_gb_s(megabytes: int = 512, repeats: int = 7) -> float:
    """Memory bandwidth of a large copy (bytes read plus bytes written, per second)."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        times.append(time.perf_counter() - started)
    return 2 * source.numel() * 4 / statistics.median(times) / 1e9


def linear_weights(gpt: Any) -> int:
    """How many weights the blocks' linear layers hold (what a step must read once)."""
    block = gpt.gpt.h[0]
    width = gpt.gpt.config.n_embd
    inner = block.mlp.c_fc.weight.shape[1]
    return len(gpt.gpt.h) * (width * 3 * width + width * width + 2 * width * inner)


def variant(gpt: Any, name: str) -> Any:
    """A copy of the float32 GPT on kernel `name`."""
    if name == "torch-float32":
        return gpt
    converted = copy.deepcopy(gpt)
    cpu = torch.device("cpu")
    if name == "torch-bfloat16":
        apply_gpt_precision(converted, "bfloat16", cpu)
    elif name == "openvino-int4":
        apply_openvino(converted.gpt, bits=4)
    else:
        kernel: GptKernel = name  # type: ignore[assignment]
        apply_gpt_precision(converted, "int8", cpu, kernel=kernel)
    return converted


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    noise = (signal.float() - reference.float()).pow(2).sum().clamp_min(1e-30)
    return round(float(10 * torch.log10(reference.float().pow(2).sum() / noise)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--kernels", default="torch-float32,torch-bfloat16,torch-rowwise-int8,openvino-int8,openvino-int4"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "reference" / "full-cpu-2cores-gpt-kernels.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_dummy_xtts("full", Path(tempfile.gettempdir()) / "xtts-dummy").gpt.eval()
    width = base.gpt.config.n_embd
    heads = base.gpt.config.n_head
    generator = torch.Generator().manual_seed(0)
    # one shared prompt cache and inputs, so every kernel computes the same numbers
    history = tuple(
        (torch.randn(1, heads, CACHED, width // heads, generator=generator),) * 2 for _ in range(len(base.gpt.h))
    )
    inputs = {rows: torch.randn(rows, width, generator=generator) for rows in ROWS}
    inputs = {rows: torch.cat([inputs[1], x[1:]]) for rows, x in inputs.items()}  # row 0 the same everywhere
    prompt = torch.randn(1, PREFILL, width, generator=generator)

    names = [name for name in args.kernels.split(",") if name]
    models: dict[str, Any] = {}
    setup_s: dict[str, float] = {}
    for name in names:
        started = time.perf_counter()
        models[name] = variant(base, name)
        setup_s[name] = round(time.perf_counter() - started, 2)
        print(f"  {name}: ready in {setup_s[name]:.1f} s", flush=True)

    # Lengths never advance (every step is at position 300, overwriting the same slot with the same
    # numbers), so kernels whose cache has the same dtype share one: 8 rows of 30 layers are 1.3 GB.
    caches: dict[tuple[torch.dtype, int], SlotKVCache] = {}
    for gpt in models.values():
        for rows in ROWS:
            cache = SlotKVCache(gpt, torch.device("cpu"))
            if (cache.dtype, rows) not in caches:
                for _ in range(rows):
                    cache.add_row(history)
                caches[cache.dtype, rows] = cache

    def step(name: str, rows: int) -> torch.Tensor:
        gpt = models[name]
        return decode_step(gpt, caches[transformer_dtype(gpt), rows], inputs[rows], [False] * rows)

    def fill(name: str) -> torch.Tensor:
        return prefill(models[name], prompt, None)[0]

    times: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    outputs: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    works: list[tuple[str, Callable[[str], torch.Tensor]]] = [
        *((f"step_{rows}", lambda name, rows=rows: step(name, rows)) for rows in ROWS),
        (f"prefill_{PREFILL}", fill),
    ]
    bandwidths = []
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            bandwidths.append(bandwidth_gb_s())
            for what, work in works:
                for name in names:
                    started = time.perf_counter()
                    outputs[name][what] = work(name)
                    if repeat:
                        times[name].setdefault(what, []).append(time.perf_counter() - started)
            print(f"  round {repeat} done", flush=True)

    bandwidth = statistics.median(bandwidths[1:])
    weights = linear_weights(base)
    floors_ms = {
        bits: round(weights * bits / 8 / (bandwidth * 1e9) * 1000, 1) for bits in (32, 16, 8, 4)
    }  # weight reads only
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {
            f"{what}_ms": round(statistics.median(values) * 1000, 1) for what, values in times[name].items()
        }
        for what in outputs[name]:
            row[f"{what}_snr_db"] = snr_db(outputs[name][what], outputs["torch-float32"][what])
        alone = outputs[name]["step_1"][0]
        row["row0_batch_vs_alone"] = max(float((outputs[name][f"step_{rows}"][0] - alone).abs().max()) for rows in ROWS)
        row["setup_s"] = setup_s[name]
        table[name] = row

    cpu = cpu_features()
    machine: dict[str, Any] = {
        "cpu": cpu.summary,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    report: dict[str, Any] = {
        "what": "ms per batched decode step (30 blocks, 300 cached positions) and per prefill of 100 positions",
        "machine": machine,
        "bandwidth_gb_s": round(bandwidth, 1),
        "linear_weights": weights,
        "floor_ms_per_step": {f"{bits}-bit weights": ms for bits, ms in floors_ms.items()},
        "kernels": table,
    }
    try:
        import openvino

        machine["openvino"] = openvino.__version__
    except ImportError:
        pass
    print(
        f"\nbandwidth {bandwidth:.1f} GB/s; floor per step: "
        + ", ".join(f"{b}-bit {ms} ms" for b, ms in floors_ms.items())
    )
    columns = [f"step_{rows}" for rows in ROWS] + [f"prefill_{PREFILL}"]
    print(
        f"{'kernel':22s} "
        + " ".join(f"{c + ' ms':>13s}" for c in columns)
        + "   SNR dB (step_1/prefill)  batch-vs-alone"
    )
    for name, row in table.items():
        print(
            f"{name:22s} "
            + " ".join(f"{row[c + '_ms']:13.1f}" for c in columns)
            + f"   {row['step_1_snr_db']:8.1f} / {row[f'prefill_{PREFILL}_snr_db']:6.1f}"
            + f"      {row['row0_batch_vs_alone']:.2e}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
