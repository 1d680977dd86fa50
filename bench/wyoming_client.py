"""`make bench`'s Wyoming client: first audio of a plain `synthesize`, sent as Home Assistant sends it (a voice name,
no language), against POST /tts_stream for the same sentence and seed (`bench/over_http.py`)."""

from __future__ import annotations

import asyncio
import time

from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice


async def _first_audio(port: int, text: str, voice: str, seed: int) -> float:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        request = Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event()
        request.data["seed"] = seed  # this server's extension: the same seed as the HTTP request's
        started = time.perf_counter()
        await client.write_event(request)
        while (event := await client.read_event()) is not None:
            if event.type == "audio-chunk":
                return time.perf_counter() - started  # leaving now cancels the rest, as the socket's `clear` does
            if event.type == "error":
                raise RuntimeError(f"wyoming error: {event.data}")
    raise RuntimeError("the Wyoming server closed the connection before any audio")


def wyoming_first_audio(port: int, text: str, voice: str, seed: int) -> float:
    """Seconds from the `synthesize` to its first `audio-chunk`."""
    return asyncio.run(_first_audio(port, text, voice, seed))
