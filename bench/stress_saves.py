"""`make stress`, the voice store against crashes: the server SIGKILLed while clients save voices, restarted, and
checked for half-written voices and temporary files left behind."""

from __future__ import annotations

import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.stress_server import start


def save_until_stopped(url: str, latents: dict[str, object], lane: int, stop: threading.Event) -> int:
    """Save voices (three ids per lane, overwritten in turn) until stopped or the server is gone."""
    count = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            try:
                body = {**latents, "name": f"v{lane}-{count}", "overwrite": True}
                client.post(f"/save_voice/kill-{lane}-{count % 3}", json=body)
                count += 1
            except httpx.HTTPError:
                return count
    return count


def sigkill_during_saves(folder: Path, rounds: int) -> dict[str, object]:
    """Kill the server (SIGKILL) while clients save voices; after each restart every voice is whole."""
    voices_dir = folder / "voices"
    problems: list[str] = []
    saved_total = 0
    rng = random.Random(1)
    latents: dict[str, object] = {}
    for round_index in range(rounds):
        server = start(folder)
        listed = httpx.get(f"{server.url}/saved_voices").json()
        for voice in listed:  # what survived the last kill loads whole
            if httpx.get(f"{server.url}/saved_voices/{voice['voice_id']}").status_code != 200:
                problems.append(f"round {round_index}: {voice['voice_id']} does not load")
        leftovers = [path.name for path in voices_dir.glob(".tmp-*")]
        if leftovers:
            problems.append(f"round {round_index}: temporary files left: {leftovers}")
        if not latents:
            latents = httpx.get(f"{server.url}/studio_speakers").json()["Dummy Tenor"]
        stop = threading.Event()

        with ThreadPoolExecutor(4) as pool:
            lanes = [pool.submit(save_until_stopped, server.url, latents, lane, stop) for lane in range(4)]
            time.sleep(0.5 + rng.random())
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
            stop.set()
            saved_total += sum(lane.result() for lane in lanes)
    server = start(folder)  # the last restart cleans up and serves what is there
    try:
        for voice in httpx.get(f"{server.url}/saved_voices").json():
            if httpx.get(f"{server.url}/saved_voices/{voice['voice_id']}").status_code != 200:
                problems.append(f"after all: {voice['voice_id']} does not load")
        leftovers = [path.name for path in voices_dir.glob(".tmp-*")]
        if leftovers:
            problems.append(f"after all: temporary files left: {leftovers}")
        voices = len(httpx.get(f"{server.url}/saved_voices").json())
    finally:
        server.stop()
    return {
        "rounds": rounds,
        "saves_attempted": saved_total,
        "voices_after": voices,
        "problems": problems,
        "ok": not problems and voices > 0,
    }
