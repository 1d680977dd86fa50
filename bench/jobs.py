"""Issue 25's figures: a long text as a background job against the same text as one stream, and a live
stream's first audio while a job runs, over HTTP against `python run.py` (the server as a user runs it).

    python -m bench.jobs                        # full-size random weights, default settings (int8 on a CPU)
    make bench-jobs                             # the same (make bench runs it after bench/run_bench.py)
    python -m bench.jobs --size tiny --cap 30   # a quick check of the script itself

- one stream: the text (`--sentences` sentences) as one /tts_stream request, read to its end;
- as a job: the same text POSTed to /v1/jobs (wav), polled until completed: audio seconds per wall second,
  from submit to the finished file;
- priority: a one-line reply's first audio on an idle server (median of `--repeats`), then again while a job
  runs (its sentences fill the batch): the ratio is what a job costs live speech (target: within 1.5x).
Random weights rarely sample the stop token, so every sentence runs to MAX_AUDIO_TOKENS (`--cap`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.cases import REPETITION_PENALTY, SPEAKER
from bench.cpu_speed import ONE_LINE, REPO, Server, speak

# Sentences of 130-250 characters: coqui packs a text's sentences up to 250 characters, so each of these is one
# generation whether it comes as part of one stream's text or as a job's sentence (the same work either way).
SENTENCES = [
    "The lighthouse stood alone on a black rock in the northern sea, and every evening its keeper climbed the "
    "narrow stairs to light the lamp.",
    "He had never met the sailors who steered by his light, but he knew the names of their ships from the "
    "radio that crackled in the kitchen.",
    "One winter night a small fishing boat came through the storm, her engine failing and her deck covered "
    "in ice, and she ran onto the sand below the tower.",
    "The keeper went down with a lantern and a coil of rope, and by morning the three fishermen were asleep "
    "by his stove, wrapped in his blankets.",
    "When the wind dropped they thanked him, mended their engine with his tools, and sailed away to the south "
    "without telling him where they were going.",
    "In the spring a parcel arrived on the supply boat: a jar of honey, a knitted scarf, and a letter signed "
    "by three names he did not know.",
]


def book(sentences: int) -> str:
    return " ".join(SENTENCES[n % len(SENTENCES)] for n in range(sentences))


def run_job(url: str, text: str, seed: int) -> dict[str, Any]:
    """Submit a job and poll it to its end: wall seconds from submit to the finished file, audio seconds."""
    body = {"text": text, "voice": SPEAKER, "format": "wav", "seed": seed, "repetition_penalty": REPETITION_PENALTY}
    started = time.perf_counter()
    job = httpx.post(f"{url}/v1/jobs", json=body, timeout=600).json()
    while job["status"] in ("queued", "running"):
        time.sleep(0.2)
        job = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()
    wall = time.perf_counter() - started
    if job["status"] != "completed":
        raise RuntimeError(f"the job ended {job['status']}: {job.get('error')}")
    return {"wall_s": wall, "audio_s": job["duration_s"], "sentences": job["sentences_total"]}


def first_audio_while_a_job_runs(url: str, text: str, repeats: int) -> list[float]:
    body = {"text": text, "voice": SPEAKER, "format": "wav", "seed": 99, "repetition_penalty": REPETITION_PENALTY}
    job = httpx.post(f"{url}/v1/jobs", json=body, timeout=600).json()
    try:
        while httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()["sentences_done"] < 1:
            time.sleep(0.2)
        firsts = []
        for seed in range(repeats):
            time.sleep(1.0)  # the job's sentences take the whole batch again
            firsts.append(speak(url, ONE_LINE, 100 + seed)["ttfa_s"])
        return firsts
    finally:
        httpx.delete(f"{url}/v1/jobs/{job['id']}", timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--cap", type=int, default=60, help="MAX_AUDIO_TOKENS: audio tokens per sentence")
    parser.add_argument("--sentences", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "jobs.json")
    args = parser.parse_args()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-jobs-{os.getpid()}"
    text = book(args.sentences)
    with Server(args.size, args.cap, {"DATA_DIR": str(folder / "data")}, folder / "voices") as server:
        model = server.health()["model"]
        url = server.url
        speak(url, ONE_LINE, 0)  # warm: the first request pays for lazy set-up
        stream = speak(url, text, 7)
        stream_rate = stream["audio_s"] / stream["total_s"]
        print(f"  one stream: {stream['audio_s']:.1f} audio s in {stream['total_s']:.1f} s", flush=True)
        job = run_job(url, text, 7)
        job_rate = job["audio_s"] / job["wall_s"]
        print(f"  as a job:   {job['audio_s']:.1f} audio s in {job['wall_s']:.1f} s", flush=True)
        idle = [speak(url, ONE_LINE, seed)["ttfa_s"] for seed in range(1, args.repeats + 1)]
        busy = first_audio_while_a_job_runs(url, book(4 * args.sentences), args.repeats)
    report = {
        "size": args.size, "cap": args.cap, "sentences": args.sentences, "model": model,
        "stream": {**stream, "audio_s_per_wall_s": stream_rate},
        "job": {**job, "audio_s_per_wall_s": job_rate},
        "job_over_stream": job_rate / stream_rate,
        "first_audio_idle_s": idle, "first_audio_with_job_s": busy,
        "with_job_over_idle": statistics.median(busy) / statistics.median(idle),
    }  # fmt: skip
    print(f"\n{model.get('cpu', '')}; GPT {model['gpt_precision']}, vocoder {model['vocoder_precision']}")
    print(f"{'':28s} {'audio s/wall s':>15s}")
    print(f"{'one stream':28s} {stream_rate:15.2f}")
    print(f"{'as a job':28s} {job_rate:15.2f}   ({report['job_over_stream']:.2f}x the stream; target >= 2x)")
    print(
        f"live first audio: idle {statistics.median(idle):.3f} s, with a job running {statistics.median(busy):.3f} s "
        f"({report['with_job_over_idle']:.2f}x; target <= 1.5x)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
