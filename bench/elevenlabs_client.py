"""`make bench`'s ElevenLabs client: first audio over /v1/text-to-speech/{voice}/multi-stream-input, sent as
Pipecat's ElevenLabsTTSService sends it (a context opened with " ", then the reply's text in pieces), against
/v1/tts/ws for the same sentence and seed (`bench/over_http.py`)."""

from __future__ import annotations

import json
import time
from urllib.parse import quote


def elevenlabs_first_audio(url: str, voice: str, text: str, seed: int) -> float:
    """Seconds from the message that completes the first sentence to its first audio message (the text before it
    was sent earlier, as a language model writes it), as `socket_first_audio` measures /v1/tts/ws."""
    from websockets.sync.client import connect

    query = f"model_id=eleven_flash_v2_5&output_format=pcm_24000&auto_mode=false&seed={seed}"
    address = url.replace("http://", "ws://") + f"/v1/text-to-speech/{quote(voice)}/multi-stream-input?{query}"
    head, tail = text[:-1], text[-1:] + " And"  # the final punctuation arrives last, with the next word
    with connect(address, max_size=None) as socket:
        socket.send(json.dumps({"text": " ", "context_id": "bench", "voice_settings": {"speed": 1.0}}))
        socket.send(json.dumps({"text": head, "context_id": "bench"}))
        time.sleep(0.2)  # the head is buffered, waiting for its end
        started = time.perf_counter()
        socket.send(json.dumps({"text": tail, "context_id": "bench"}))
        while True:
            message = json.loads(socket.recv())
            if message.get("audio"):
                break
            if "error" in message:
                raise RuntimeError(f"elevenlabs socket error: {message}")
        elapsed = time.perf_counter() - started
        socket.send(json.dumps({"context_id": "bench", "close_context": True}))  # a barge-in: the rest is dropped
        socket.send(json.dumps({"close_socket": True}))
    return elapsed
