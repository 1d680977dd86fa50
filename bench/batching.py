"""Batched decoding: throughput at 1/2/4/8 concurrent streams, first audio under load, memory per stream.

All in-process through the engine (the HTTP table in run_bench checks the same over the wire). Every
stream is pinned to the same token count (random weights rarely stop), so throughput is audio seconds
made per wall second, summed over the streams.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from services.engine.latents import VoiceLatents
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.tts import TTSEngine

REPETITION_PENALTY = 5.0


def _params(tokens: int, seed: int) -> GenerationParams:
    sampling = SamplingSettings(repetition_penalty=REPETITION_PENALTY, min_new_tokens=tokens, max_new_tokens=tokens)
    return GenerationParams(sampling=sampling, seed=seed)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _PeakRss:
    """The process's peak resident memory while the block runs, sampled every 20 ms."""

    def __enter__(self) -> _PeakRss:
        self.baseline = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _stream(
    engine: TTSEngine,
    text: str,
    voice: VoiceLatents,
    tokens: int,
    seed: int,
    cancel: threading.Event | None = None,
    speaking: asyncio.Event | None = None,
) -> dict[str, float]:
    started = time.perf_counter()
    sentences = await engine.plan(text, "en", True)
    stream = engine.synthesize(sentences, voice, _params(tokens, seed), cancel or threading.Event())
    first = None
    received = 0
    async for chunk in stream:
        if first is None:
            first = time.perf_counter() - started
            if speaking is not None:
                speaking.set()
        received += len(chunk)
    await stream.wait_idle()
    total = time.perf_counter() - started
    audio = received / 48000
    return {"ttfa_s": first or 0.0, "total_s": total, "audio_s": audio, "rtf": total / max(audio, 1e-9)}


def throughput(engine: TTSEngine, text: str, voice: VoiceLatents, tokens: int, levels: list[int]) -> dict[str, Any]:
    """N streams started together, for each N in `levels`."""
    rows: dict[str, Any] = {}
    for level in levels:
        engine.scheduler.peak_batch = 0
        cache = engine.scheduler.decoder.cache  # type: ignore[attr-defined]
        cache.peak_bytes = 0

        async def together(level: int = level) -> list[dict[str, float]]:
            return list(await asyncio.gather(*(_stream(engine, text, voice, tokens, seed) for seed in range(level))))

        with _PeakRss() as memory:
            started = time.perf_counter()
            runs = asyncio.run(together())
            wall = time.perf_counter() - started
        audio = sum(run["audio_s"] for run in runs)
        rows[str(level)] = {
            "streams": level,
            "wall_s": wall,
            "audio_s": audio,
            "audio_s_per_wall_s": audio / wall,
            "stream_rtf_mean": statistics.mean(run["rtf"] for run in runs),
            "stream_rtf_max": max(run["rtf"] for run in runs),
            "ttfa_mean_s": statistics.mean(run["ttfa_s"] for run in runs),
            "peak_batch": engine.scheduler.peak_batch,
            "peak_rss_over_idle_mb": (memory.peak - memory.baseline) / 2**20,
            "kv_cache_peak_mb": cache.peak_bytes / 2**20,
            "kv_cache_mb_per_stream": cache.peak_bytes / 2**20 / max(engine.scheduler.peak_batch, 1),
        }
        print(
            f"  x{level}: {rows[str(level)]['audio_s_per_wall_s']:.3f} audio s / wall s, "
            f"stream RTF {rows[str(level)]['stream_rtf_mean']:.2f}",
            flush=True,
        )
    base = rows[str(levels[0])]["audio_s_per_wall_s"]
    for row in rows.values():
        row["speedup_over_one"] = row["audio_s_per_wall_s"] / base
    return rows


def ttfa_under_load(
    engine: TTSEngine,
    text: str,
    voice: VoiceLatents,
    running_levels: list[int],
    repeats: int,
) -> dict[str, Any]:
    """First-audio latency of a newcomer (plan included) while k other streams are generating."""
    rows: dict[str, Any] = {}
    background_tokens = 10_000  # capped by the model: they run until cancelled

    async def measure(running: int) -> list[float]:
        stop = threading.Event()
        speaking = [asyncio.Event() for _ in range(running)]
        background = [
            asyncio.ensure_future(_stream(engine, text, voice, background_tokens, 100 + seed, stop, speaking[seed]))
            for seed in range(running)
        ]
        for event in speaking:  # every one of them has started speaking
            await event.wait()
        firsts = []
        for seed in range(repeats):
            cancel = threading.Event()
            started = time.perf_counter()
            sentences = await engine.plan(text, "en", True)
            stream = engine.synthesize(sentences, voice, _params(60, seed), cancel)
            chunks = aiter(stream)
            await anext(chunks)
            firsts.append(time.perf_counter() - started)
            cancel.set()
            await chunks.aclose()  # type: ignore[attr-defined]
            await stream.wait_idle()
        stop.set()
        await asyncio.gather(*background)
        return firsts

    for running in running_levels:
        firsts = sorted(asyncio.run(measure(running)))
        rows[str(running)] = {
            "running": running,
            "runs": len(firsts),
            "p50_s": statistics.median(firsts),
            "p95_s": firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))],
        }
        print(f"  TTFA with {running} running: p50 {rows[str(running)]['p50_s']:.3f} s", flush=True)
    idle = rows[str(running_levels[0])]["p50_s"]
    for row in rows.values():
        row["p95_over_idle_p50"] = row["p95_s"] / idle
    return rows


def decode_step_cost(engine: TTSEngine, rows: list[int], length: int = 150) -> dict[str, Any]:
    """Milliseconds of one batched decode step (batched_gpt.decode_step) by rows, every row `length` positions
    long, and of one step through transformers' DynamicCache at one row (what the slot cache replaced)."""
    from transformers import DynamicCache

    from services.engine.batched_gpt import SlotKVCache, decode_step, prefill
    from services.engine.precision import run_transformer

    gpt = engine.model.gpt
    width = gpt.gpt.config.n_embd

    def timed(fn: Callable[[], object]) -> float:
        fn()
        started = time.perf_counter()
        for _ in range(4):
            fn()
        return (time.perf_counter() - started) / 4 * 1000

    def measure() -> dict[str, Any]:
        prompt = torch.randn(1, length, width, device=engine.device)
        _, kv = prefill(gpt, prompt, None)
        result: dict[str, Any] = {"positions": length, "slot_cache_ms": {}}
        for count in rows:
            cache = SlotKVCache(gpt, engine.device)
            for _ in range(count):
                cache.add_row(kv)
            inputs = torch.randn(count, width, device=engine.device)
            idle = [False] * count  # computed, not advanced: every repeat measures the same lengths
            result["slot_cache_ms"][str(count)] = timed(
                lambda cache=cache, inputs=inputs, idle=idle: decode_step(gpt, cache, inputs, idle)
            )

        def dynamic_step() -> None:
            cache = DynamicCache()
            for index, (keys, values) in enumerate(kv):
                cache.update(keys, values, index)
            run_transformer(gpt, torch.randn(1, 1, width, device=engine.device), past_key_values=cache, use_cache=True)

        result["dynamic_cache_one_row_ms"] = timed(dynamic_step)
        return result

    return engine.submit(measure).result()


def vocoder_batching(engine: TTSEngine) -> dict[str, Any]:
    """HiFi-GAN cost per stream when B streams' chunks (20 tokens each) are decoded in one call."""
    decoder = engine.model.hifigan_decoder.waveform_decoder
    dtype = decoder.conv_pre.weight.dtype

    def measure() -> dict[str, Any]:
        rows = {}
        frames = 92  # a 20-token chunk plus the context frames either side
        for batch in (1, 2, 4, 8):
            latents = torch.randn(batch, decoder.conv_pre.in_channels, frames, device=engine.device, dtype=dtype)
            speakers = torch.randn(batch, decoder.cond_layer.in_channels, 1, device=engine.device, dtype=dtype)
            decoder(latents, g=speakers)
            started = time.perf_counter()
            for _ in range(3):
                decoder(latents, g=speakers)
            rows[str(batch)] = {"ms_per_stream": (time.perf_counter() - started) / 3 / batch * 1000}
        return rows

    return engine.submit(measure).result()


def batching_report(
    engine: TTSEngine,
    text: str,
    voice: VoiceLatents,
    tokens: int,
    levels: list[int],
    ttfa_repeats: int,
) -> dict[str, Any]:
    print("batching (in-process):", flush=True)
    report: dict[str, Any] = {
        "tokens_per_stream": tokens,
        "max_batch_size": engine.scheduler.limits.max_batch_size,
        "throughput": throughput(engine, text, voice, tokens, levels),
        "ttfa_under_load": ttfa_under_load(engine, text, voice, [0, 3, 7], ttfa_repeats),
        "vocoder_batching": vocoder_batching(engine),
        "decode_step": decode_step_cost(engine, [1, 2, 4, 8, 16]),
    }
    return report


def print_batching_table(report: dict[str, Any]) -> None:
    print(f"\nBatched decoding ({report['tokens_per_stream']} tokens per stream, streams started together):")
    print(f"{'streams':>7s} {'audio s/wall s':>15s} {'x one':>6s} {'stream RTF':>11s} {'TTFA s':>7s} "
          f"{'peak RSS +MB':>13s} {'KV MB/stream':>13s}")  # fmt: skip
    for level, row in report["throughput"].items():
        print(
            f"{level:>7s} {row['audio_s_per_wall_s']:15.3f} {row['speedup_over_one']:6.2f} "
            f"{row['stream_rtf_mean']:11.2f} {row['ttfa_mean_s']:7.2f} {row['peak_rss_over_idle_mb']:13.0f} "
            f"{row['kv_cache_mb_per_stream']:13.1f}"
        )
    print("First audio of a newcomer while others run (plan included):")
    for running, row in report["ttfa_under_load"].items():
        print(
            f"  {running} running: p50 {row['p50_s']:.3f} s, p95 {row['p95_s']:.3f} s "
            f"({row['p95_over_idle_p50']:.2f}x idle p50; {row['runs']} runs)"
        )
    step = report.get("decode_step")
    if step:
        print(
            f"Decode step, ms (rows at {step['positions']} positions): "
            + ", ".join(f"{rows} rows: {ms:.0f}" for rows, ms in step["slot_cache_ms"].items())
            + f"; one row through transformers' DynamicCache: {step['dynamic_cache_one_row_ms']:.0f}"
        )
    print(
        "Vocoder, ms per stream when B chunks decode in one call: "
        + ", ".join(f"B={batch}: {row['ms_per_stream']:.0f}" for batch, row in report["vocoder_batching"].items())
    )


def print_precision_rows(precision_rows: dict[str, Any], one_float32_stream: float) -> None:
    """The precision table's batched figures, against one float32 stream of the same length."""
    base = one_float32_stream
    print("Aggregate audio s / wall s per precision, streams started together (x one float32 stream):")
    for name, row in precision_rows.items():
        rows = row.get("batched")
        if rows:
            print(
                f"  {name:34s} "
                + "  ".join(
                    f"x{level}: {cell['audio_s_per_wall_s']:.3f} ({cell['audio_s_per_wall_s'] / base:.2f}x)"
                    for level, cell in rows.items()
                )
            )
