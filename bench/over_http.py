"""`make bench` over the wire: this server (create_app around the benchmark's engine, in a thread) with clients as
real ones are: first audio over HTTP against in-process, /v1/tts/ws against POST /tts_stream, and 1-8 streams
at once."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.cases import CASES, REPETITION_PENALTY, SPEAKER
from bench.elevenlabs_client import elevenlabs_first_audio
from bench.engine_vs_stock import engine_first_chunk, median_run
from bench.wyoming_client import wyoming_first_audio
from config import Settings
from services.engine.tts import TTSEngine
from services.speech import SpeechOptions


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


def socket_first_audio(url: str, text: str, seed: int, repetition_penalty: float = REPETITION_PENALTY) -> float:
    """/v1/tts/ws: seconds from the message that completes the first sentence to its first audio frame (the
    text before it was sent earlier, as an LLM writes it)."""
    from websockets.sync.client import connect

    body = _speech_body(text, seed)
    config = {"type": "config", "language": body["language"], "speaker_id": body["speaker_id"], "seed": seed,
              "repetition_penalty": repetition_penalty,
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ServerThread:
    """This server (create_app with the benchmark's own engine) in a thread, so HTTP and in-process
    figures come from one process, one model and one warm-up."""

    def __init__(self, engine: TTSEngine, size: str, max_tokens: int, concurrency: int) -> None:
        import uvicorn

        from main import create_app

        port, self.wyoming_port = _free_port(), _free_port()
        settings = Settings(
            DUMMY_MODEL=size, HOST="127.0.0.1", PORT=port, WYOMING_PORT=self.wyoming_port, MAX_AUDIO_TOKENS=max_tokens,
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


def _elevenlabs_vs_socket(url: str, sentence: str, runs: int) -> dict[str, float]:
    """First audio over ElevenLabs' multi-stream-input vs /v1/tts/ws: same sentence, seed and settings (the
    ElevenLabs socket takes the server's defaults), alternating; medians."""
    penalty = SpeechOptions().repetition_penalty
    elevenlabs_runs, socket_runs = [], []
    for seed in range(1, runs + 1):
        elevenlabs_runs.append(elevenlabs_first_audio(url, SPEAKER, sentence, seed))
        socket_runs.append(socket_first_audio(url, sentence, seed, repetition_penalty=penalty))
    result = {
        "elevenlabs_s": statistics.median(elevenlabs_runs),
        "socket_s": statistics.median(socket_runs),
        "difference_ms": (statistics.median(elevenlabs_runs) - statistics.median(socket_runs)) * 1000,
        "runs": runs,
    }
    print(
        f"  elevenlabs: first audio {result['elevenlabs_s']:.3f} s after the sentence's end vs "
        f"/v1/tts/ws {result['socket_s']:.3f} s", flush=True,
    )  # fmt: skip
    return result


def over_http(
    engine: TTSEngine, size: str, repeats: int, ttfa_repeats: int, max_tokens: int, levels: list[int]
) -> dict:
    text, tokens = CASES["short"]
    tokens = min(tokens, max_tokens)
    voice = engine.builtin_speakers[SPEAKER]
    with (server := _ServerThread(engine, size, tokens, max(levels))) as url:
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
        wyoming_runs, post_runs = [], []
        for seed in range(1, ttfa_repeats + 1):  # alternating, same sentence and seed, Home Assistant's request
            wyoming_runs.append(wyoming_first_audio(server.wyoming_port, one_sentence, SPEAKER, seed))
            post_runs.append(http_first_audio(url, one_sentence, seed))
        ttfa["wyoming"] = {
            "wyoming_s": statistics.median(wyoming_runs),
            "tts_stream_s": statistics.median(post_runs),
            "difference_ms": (statistics.median(wyoming_runs) - statistics.median(post_runs)) * 1000,
            "runs": ttfa_repeats,
        }
        print(
            f"  wyoming: first audio {ttfa['wyoming']['wyoming_s']:.3f} s after `synthesize` vs "
            f"/tts_stream {ttfa['wyoming']['tts_stream_s']:.3f} s", flush=True,
        )  # fmt: skip
        ttfa["elevenlabs"] = _elevenlabs_vs_socket(url, one_sentence, ttfa_repeats)
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
