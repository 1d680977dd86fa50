"""`make bench`, in one process: this server's engine against coqui-tts's stock `inference_stream` and `inference`
on the same model, latents, text, seed and pinned token count: time to first audio and whole streams."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.cases import CASES, REPETITION_PENALTY, SPEAKER
from services.engine.latents import VoiceLatents
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.tts import TTSEngine


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
