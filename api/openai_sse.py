"""OpenAI's `stream_format: "sse"` for /v1/audio/speech: the audio stream's bytes as server-sent events.

Each `speech.audio.delta` event carries the next bytes of exactly the stream `stream_format: "audio"` would
send (base64), so joining the decoded deltas gives the same file (one WAV header, one MP3 stream); a
`speech.audio.done` event with token usage ends a stream that finished. No `[DONE]` line: OpenAI's spec
has none, and clients that parse every `data:` line as JSON would choke on it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from services.encoders import AudioEncoder


def sse_event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class SpeechEventEncoder:
    """Wraps an AudioEncoder: its bytes go out in delta events; `usage` is read once the stream finished."""

    media_type = "text/event-stream"

    def __init__(self, audio: AudioEncoder, usage: Callable[[], tuple[int, int]]) -> None:
        self.audio = audio
        self.usage = usage

    @property
    def needs_thread(self) -> bool:
        return self.audio.needs_thread

    def start(self) -> bytes:
        return self._delta(self.audio.start())

    def encode(self, pcm: bytes) -> bytes:
        return self._delta(self.audio.encode(pcm))

    def finish(self) -> bytes:
        input_tokens, output_tokens = self.usage()
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        return self._delta(self.audio.finish()) + sse_event({"type": "speech.audio.done", "usage": usage})

    @staticmethod
    def _delta(data: bytes) -> bytes:
        if not data:
            return b""
        return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
