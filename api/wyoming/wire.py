"""One Wyoming connection's way out: events written one at a time, audio always closed by exactly one `audio-stop`."""

from __future__ import annotations

import asyncio
import logging

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Eventable, async_write_event

from services.engine.pcm import CHANNELS, OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES
from services.errors import ServiceError
from services.segments import ClientGone

logger = logging.getLogger(__name__)

AUDIO_FORMAT = {"rate": OUTPUT_SAMPLE_RATE, "width": SAMPLE_WIDTH_BYTES, "channels": CHANNELS}


class Wire:
    """Writes a connection's events. Several tasks write (the reader's answers, a request being spoken): a lock keeps
    each event whole. Raises ClientGone once the client has gone."""

    def __init__(self, writer: asyncio.StreamWriter, connection_id: str) -> None:
        self.writer = writer
        self.connection_id = connection_id
        self.audio_open = False
        """An `audio-start` went out and its `audio-stop` has not."""
        self._lock = asyncio.Lock()

    async def send(self, message: Eventable) -> None:
        async with self._lock:
            if self.writer.is_closing():
                raise ClientGone()
            try:
                await async_write_event(message.event(), self.writer)
            except (ConnectionError, OSError) as gone:
                raise ClientGone() from gone

    async def error(self, error: ServiceError) -> None:
        """An `error` event (Home Assistant shows its text), then the `audio-stop` of audio it cut short."""
        logger.info("wyoming %s: %s (%s)", self.connection_id, error.code, error.message)
        await self.send(Error(text=error.message, code=error.code))
        await self.audio_stop()

    async def audio_start(self) -> None:
        await self.audio_stop()  # never two starts without a stop between them
        await self.send(AudioStart(**AUDIO_FORMAT))
        self.audio_open = True

    async def audio_chunk(self, pcm: bytes) -> None:
        if not self.audio_open:
            await self.audio_start()
        await self.send(AudioChunk(audio=pcm, **AUDIO_FORMAT))

    async def audio_stop(self) -> None:
        if self.audio_open:
            self.audio_open = False
            await self.send(AudioStop())
