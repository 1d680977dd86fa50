"""Encoding a stream's PCM for the wire, shared by the HTTP response and the socket's segments."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio

from services.speech_stream import SpeechStream


class StreamEncoder(Protocol):
    """Turns a stream's PCM into the bytes on the wire (an AudioEncoder, or a wrapper around one)."""

    media_type: str

    @property
    def needs_thread(self) -> bool: ...

    def start(self) -> bytes: ...

    def encode(self, pcm: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


async def encode_chunk(encoder: StreamEncoder, stream: SpeechStream, work: Callable[..., bytes], *args: bytes) -> bytes:
    """`work(*args)` of `encoder`: FFmpeg encoders do real work, so off the event loop (not on the model
    thread either), timed as the stream's `encode` stage; plain PCM and WAV inline."""
    if not encoder.needs_thread:
        return work(*args)
    started = time.perf_counter()
    encoded = await anyio.to_thread.run_sync(work, *args)
    stream.add_timing("encode", time.perf_counter() - started)
    return encoded
