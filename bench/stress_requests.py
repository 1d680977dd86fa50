"""`make stress`, issue 21's request attacks, against one server: poisoned latents among streams batched together,
DNS rebinding (a foreign Host and Origin on the loopback address), and the smaller input tricks."""

from __future__ import annotations

import io
import json
import socket
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from safetensors.numpy import load_file, save_file
from safetensors.numpy import safe_open as open_safetensors

from bench.stress_server import SPEECH, Server, held, start

Row = dict[str, object]
ABSURD = 1e20  # finite, so it passes a NaN/Infinity check, and far beyond what cloning ever makes
OTHERS_TEXT = "The first sentence of a normal stream. A second one follows it. And a third ends it."
ATTACKER = "attacker.example"
FIRST_AUDIO_TIMEOUT_S = 300


def request_attacks(folder: Path) -> dict[str, Row]:
    """One server (4 slots, so the poisoned request joins the others' batch) for the three rows."""
    server = start(folder, MAX_CONCURRENT_REQUESTS="4", MAX_AUDIO_TOKENS="16")
    try:
        latents = httpx.get(f"{server.url}/studio_speakers", timeout=60).json()["Dummy Bass"]
        return {
            "poisoned_latents": held(lambda: poisoned_latents(server, latents)),
            "dns_rebinding": held(lambda: dns_rebinding(server, latents)),
            "small_inputs": held(lambda: small_inputs(server)),
        }
    finally:
        server.stop()


def poisoned(values: object) -> object:
    """The same nesting with every number replaced by ABSURD."""
    return [poisoned(value) for value in values] if isinstance(values, list) else ABSURD


def wav_frames(body: bytes) -> int | None:
    """Sample frames in a (streamed) WAV, or None if it does not parse."""
    try:
        with wave.open(io.BytesIO(body)) as reader:
            return len(reader.readframes(1 << 31)) // (reader.getsampwidth() * reader.getnchannels())
    except (wave.Error, EOFError):
        return None


class Listener(threading.Thread):
    """One normal client's /tts_stream, read to the end; `started` is set at its first audio."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__()
        self.url, self.seed = url, seed
        self.started = threading.Event()
        self.body = b""
        self.complete = False
        self.status = 0

    def run(self) -> None:
        body = {**SPEECH, "text": OTHERS_TEXT, "seed": self.seed}
        received = bytearray()
        try:
            with httpx.stream("POST", f"{self.url}/tts_stream", json=body, timeout=FIRST_AUDIO_TIMEOUT_S) as response:
                self.status = response.status_code
                for chunk in response.iter_raw():
                    received += chunk
                    if len(received) > 44:  # past the WAV header: the stream is in the batch
                        self.started.set()
            self.complete = response.status_code == 200
        except httpx.HTTPError:  # a stream cut after its header: not complete
            self.complete = False
        finally:
            self.body = bytes(received)
            self.started.set()


@dataclass
class Answer:
    """A response read to its end, or as far as it came: `complete` is False for a body cut short."""

    status_code: int
    content: bytes
    complete: bool

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


def post_whole(url: str, body: dict[str, object], timeout_s: float = FIRST_AUDIO_TIMEOUT_S) -> Answer:
    """POST and read the whole body; a stream the server cuts (after a 200) is an answer too, not a crash."""
    received = bytearray()
    with httpx.stream("POST", url, json=body, timeout=timeout_s) as response:
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.HTTPError:
            return Answer(response.status_code, bytes(received), complete=False)
    return Answer(response.status_code, bytes(received), complete=True)


def error_of(response: httpx.Response | Answer) -> str:
    """The error code of a JSON error body (empty when it is not one)."""
    try:
        payload = json.loads(response.content)
    except ValueError:
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else error  # OpenAI's shape under /v1/
    return str(code or "")


def refused_naming(response: httpx.Response | Answer, field: str) -> bool:
    """A 4xx JSON error (`invalid_latents` or a validation error) whose body names the field."""
    return 400 <= response.status_code < 500 and bool(error_of(response)) and field in response.text


def described(response: httpx.Response | Answer) -> str:
    cut = "" if not isinstance(response, Answer) or response.complete else ", cut short"
    return f"{response.status_code}{cut}, {len(response.content)} bytes: {response.text[:160]!r}"


def poisoned_latents(server: Server, latents: dict[str, object]) -> Row:
    """Latents of 1e20 sent with three normal streams, twice: all four at once (they start in one batch), then
    once the three play (it joins their batch). It gets a 4xx naming the field before any audio; the three finish
    whole, as long as alone. Saving such latents is refused, and a saved voice poisoned on disk is refused when
    spoken."""
    problems: list[str] = []
    solo = []
    for seed in (1, 2, 3):
        alone = post_whole(f"{server.url}/tts_stream", {**SPEECH, "text": OTHERS_TEXT, "seed": seed})
        solo.append(wav_frames(alone.content) if alone.status_code == 200 and alone.complete else None)
    body = {"text": OTHERS_TEXT, "language": "en", "seed": 4, **latents,
            "gpt_cond_latent": poisoned(latents["gpt_cond_latent"])}  # fmt: skip
    statuses, others_whole, others_frames = [], True, []
    for when in ("at once", "mid-stream"):
        attack, others = poisoned_round(server, body, mid_stream=when == "mid-stream")
        frames = [wav_frames(listener.body) for listener in others]
        whole = all(listener.complete for listener in others) and frames == solo and None not in solo
        statuses.append(attack.status_code)
        others_whole &= whole
        others_frames.append(frames)
        if not refused_naming(attack, "gpt_cond_latent"):
            problems.append(f"poisoned stream ({when}): {described(attack)}")
        if not whole:
            problems.append(f"others ({when}): complete {[listener.complete for listener in others]}, "
                            f"frames {frames}, alone {solo}")  # fmt: skip
    save = httpx.post(f"{server.url}/save_voice/poisoned", timeout=60,
                      json={**latents, "gpt_cond_latent": poisoned(latents["gpt_cond_latent"])})  # fmt: skip
    if not refused_naming(save, "gpt_cond_latent"):
        problems.append(f"/save_voice: {described(save)}")
    stored = speak_planted_voice(server, latents)
    # A file the server wrote itself is its own fault (500 voice_unreadable); refused either way, before any audio.
    if stored.status_code == 200 or error_of(stored) not in ("invalid_latents", "voice_unreadable"):
        problems.append(f"stored poisoned voice: {described(stored)}")
    return {
        "stream_statuses": statuses,
        "stream_error": error_of(attack) or ("cut short" if not attack.complete else ""),
        "others_complete": others_whole,
        "others_frames": others_frames,
        "save_status": save.status_code,
        "stored_voice_status": stored.status_code,
        "problems": problems,
        "ok": not problems,
    }


def poisoned_round(server: Server, body: dict[str, object], mid_stream: bool) -> tuple[Answer, list[Listener]]:
    """The attack among three listeners, sent with them or once each has its first audio; all read to the end."""
    others = [Listener(server.url, seed) for seed in (1, 2, 3)]
    for listener in others:
        listener.start()
    for listener in others if mid_stream else []:
        listener.started.wait(FIRST_AUDIO_TIMEOUT_S)
    attack = post_whole(f"{server.url}/tts_stream", body)
    for listener in others:
        listener.join(FIRST_AUDIO_TIMEOUT_S)
    return attack, others


def speak_planted_voice(server: Server, latents: dict[str, object]) -> Answer:
    """Save a good voice, overwrite its file's latents with 1e20 (as a tampered or old file would hold), speak it."""
    saved = httpx.post(f"{server.url}/save_voice/planted", json={**latents, "overwrite": True}, timeout=60)
    saved.raise_for_status()
    path = server.folder / "voices" / "planted.safetensors"
    with open_safetensors(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    tensors["gpt_cond_latent"] = tensors["gpt_cond_latent"] * 0 + ABSURD
    save_file(tensors, str(path), metadata=metadata)
    return post_whole(f"{server.url}/tts_stream", {**SPEECH, "speaker_id": "planted"})


def dns_rebinding(server: Server, latents: dict[str, object]) -> Row:
    """What a page on attacker.example sends once its name resolves to 127.0.0.1: Host and Origin both the
    attacker's. Deleting a voice, reading it, and a socket handshake are refused; the voice is still there."""
    foreign = {"Host": f"{ATTACKER}:{server.port}", "Origin": f"http://{ATTACKER}:{server.port}"}
    httpx.post(f"{server.url}/save_voice/kept", json={**latents, "overwrite": True}, timeout=60).raise_for_status()
    delete = httpx.delete(f"{server.url}/saved_voices/kept", headers=foreign, timeout=30)
    read = httpx.get(f"{server.url}/saved_voices/kept", headers=foreign, timeout=30)
    listed = any(voice["voice_id"] == "kept" for voice in httpx.get(f"{server.url}/saved_voices").json())
    handshake = handshake_status(server, foreign)
    own_handshake = handshake_status(server, {"Host": f"127.0.0.1:{server.port}"})  # the check is not vacuous
    problems = [
        f"{what}: {status}"
        for what, status, refused in [
            ("DELETE with a foreign Host", delete.status_code, 400 <= delete.status_code < 500),
            ("GET with a foreign Host", read.status_code, 400 <= read.status_code < 500),
            ("socket handshake with a foreign Host", handshake, handshake != 101),
            ("socket handshake with the server's Host", own_handshake, own_handshake == 101),
        ]
        if not refused
    ]
    if not listed:
        problems.append("the voice is gone after the foreign DELETE")
    return {
        "delete_status": delete.status_code,
        "read_status": read.status_code,
        "voice_still_listed": listed,
        "ws_handshake_status": handshake,
        "ws_own_host_status": own_handshake,
        "problems": problems,
        "ok": not problems,
    }


def handshake_status(server: Server, headers: dict[str, str]) -> int:
    """The status line's code of a WebSocket opening handshake to /v1/tts/ws with these headers (0: no answer)."""
    lines = ["GET /v1/tts/ws HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: c3RyZXNzLWhhbmRzaGFrZQ==", "Sec-WebSocket-Version: 13"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = sock.recv(4096).split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0


def small_inputs(server: Server) -> Row:
    """A 1 MB model name is not echoed whole; booleans and digit-grouped strings are not integers; a malformed
    percent-escape in a query is refused, not spoken."""
    checks: list[tuple[str, Callable[[httpx.Client], httpx.Response], Callable[[httpx.Response], bool]]] = [
        ("model_1mb", lambda client: client.post("/v1/audio/speech", json={"model": "m" * 1_000_000, "input": "Hi.",
                                                                           "voice": "alloy"}),
         lambda response: response.status_code == 404 and len(response.content) < 2048),
        ("top_k_true", lambda client: client.post("/tts_stream", json={**SPEECH, "top_k": True}),
         lambda response: response.status_code == 422),
        ("top_k_1_000", lambda client: client.post("/tts_stream", json={**SPEECH, "top_k": "1_000"}),
         lambda response: response.status_code == 422),
        ("query_bad_escape", lambda client: client.get("/xtts-api/tts_stream?text=%zz&speaker_wav=Dummy%20Alto"
                                                       "&language=en"),
         lambda response: response.status_code == 422),
    ]  # fmt: skip
    row: Row = {}
    problems = []
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for name, send, holds in checks:
            response = send(client)
            row[f"{name}_status"] = response.status_code
            if name == "model_1mb":
                row["model_1mb_response_bytes"] = len(response.content)
            if not holds(response):
                problems.append(f"{name}: {response.status_code}, {len(response.content)} bytes")
    return {**row, "problems": problems, "ok": not problems}
