"""A conversation's pieces: a context's turn, and a turn's sentences as speech sessions (segments), each opened
ahead of its turn to play (its first chunk pulled, so the engine generates it while the one before plays), then
played to the client through the conversation's send callback, or released unheard."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from services.char_timings import CharTimeline, CharTimings, SpeakingRate
from services.encoders import AudioEncoder
from services.engine.pcm import pcm_seconds
from services.errors import ServiceError
from services.formats import OutputFormat
from services.speech import SpeechJob, SpeechService
from services.speech_stream import SpeechStream
from services.stream_encoding import encode_chunk
from services.text_segmenter import TextSegmenter

Event = dict[str, object]
Send = Callable[[Event | bytes | ServiceError], Awaitable[None]]
"""Where the conversation's output goes, in order: an event, a segment's audio, or an error to report. It raises
ClientGone once there is nobody to send to."""


class ClientGone(Exception):
    """The client has gone: nothing can be sent to it any more."""


CLIENT_GONE = "client disconnected"
CLEARED = "cleared by the client"


@dataclass
class Turn:
    """A context's current utterance: its text buffer, its sentences waiting to be spoken, its progress."""

    context_id: str
    segmenter: TextSegmenter
    ready: deque[str] = field(default_factory=deque)
    segments_made: int = 0
    audio_seconds: float = 0.0
    finishing: bool = False  # flushed or closed: done once everything buffered is spoken
    cleared: bool = False

    def finish(self) -> None:
        self.ready.extend(self.segmenter.flush())
        self.finishing = True

    @property
    def spoken(self) -> bool:
        return self.finishing and not self.ready and not self.segmenter.buffer.strip()


@dataclass
class Segment:
    """One sentence of a turn, as a speech session (opened ahead of its turn to play)."""

    turn: Turn
    index: int
    text: str
    stream: SpeechStream | None = None
    opening: asyncio.Task[SpeechStream] | None = None
    chunks: AsyncIterator[bytes] | None = None
    first_chunk: bytes | None = None
    """Pulled when it opened: the engine generates a stream once it is read, so this starts the look-ahead."""

    async def pcm(self) -> AsyncGenerator[bytes, None]:
        """Its PCM chunks, the one pulled at opening first."""
        if self.first_chunk is None or self.chunks is None:
            return
        yield self.first_chunk
        async for chunk in self.chunks:
            yield chunk

    async def close_chunks(self) -> None:
        if isinstance(self.chunks, AsyncGenerator):
            await self.chunks.aclose()

    def cancel(self, reason: str) -> None:
        if self.stream is not None:
            self.stream.cancel(reason)
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()

    def open(self, speech: SpeechService, job: SpeechJob) -> None:
        """Start generating it now (it may play after the segment playing)."""

        async def opened() -> SpeechStream:
            stream = self.stream = await speech.open(job)
            await stream.admit()
            self.chunks = aiter(stream)
            self.first_chunk = await anext(self.chunks, None)  # generating now, ahead of its turn to play
            return stream

        self.opening = asyncio.ensure_future(opened())

    async def release(self, reason: str) -> None:
        """Stop it and give its slot back (recording `reason` unless it had finished)."""
        self.cancel(reason)
        if self.opening is not None:
            await asyncio.wait([self.opening])  # its own outcome; our cancellation still propagates
        if self.stream is not None:
            await self.stream.close()
        await self.close_chunks()


async def play(
    segment: Segment,
    send: Send,
    output_format: OutputFormat,
    sample_rate: int,
    rate: SpeakingRate | None = None,
    speed: float = 1.0,
) -> None:
    """Send a segment to the client: `audio_start`, its audio (a whole file in `output_format`), `audio_end`; or
    the error that lost it. With a speaking `rate`, each piece of audio follows a `timings` event: the characters
    heard in it (services/char_timings.py; a later segment of a turn starts with the space between sentences)."""
    turn = segment.turn
    opening = segment.opening
    assert opening is not None
    await asyncio.wait([opening])  # not `await opening`: its cancellation is not this task's
    if opening.cancelled() or turn.cleared:  # cleared or drained before it played: its slot back, unheard
        await segment.release(CLEARED)  # (the reason it was cancelled with stays)
        return
    if (error := opening.exception()) is not None:  # overloaded, draining, a model failure...: it is lost
        if segment.stream is not None:
            await segment.stream.close(error)  # (admit closed it already if that failed)
        await segment.close_chunks()
        if not isinstance(error, ServiceError):
            raise error  # a fault
        await send(error)  # say so
        return
    stream = opening.result()
    encoder = AudioEncoder(output_format, sample_rate)
    timeline = None
    if rate is not None:
        timeline = CharTimeline(segment.text if segment.index == 0 else " " + segment.text, rate, speed)
    await send({
        "type": "audio_start", "context_id": turn.context_id, "segment": segment.index, "text": segment.text,
        "offset_s": round(turn.audio_seconds, 3), "session_id": stream.session.id,
    })  # fmt: skip
    async with stream, contextlib.aclosing(segment.pcm()) as chunks:
        try:
            await _send_audio(send, stream, encoder.start())
            async for pcm in chunks:
                if turn.cleared:
                    break
                turn.audio_seconds += pcm_seconds(len(pcm))
                if timeline is not None:
                    pcm, timings = timeline.take(pcm)
                    await _send_timings(send, segment, timings)
                if pcm:
                    await _send_audio(send, stream, await encode_chunk(encoder, stream, encoder.encode, pcm))
            if stream.complete and not turn.cleared:
                if timeline is not None:
                    pcm, timings = timeline.finish()
                    await _send_timings(send, segment, timings)
                    if pcm:
                        await _send_audio(send, stream, await encode_chunk(encoder, stream, encoder.encode, pcm))
                await _send_audio(send, stream, await encode_chunk(encoder, stream, encoder.finish))
        except ClientGone:
            stream.cancel(CLIENT_GONE)  # a cancel, not a failure of the stream
            raise
        finally:
            await segment.close_chunks()
    end: Event = {"type": "audio_end", "context_id": turn.context_id, "segment": segment.index}
    if not stream.complete:
        end["interrupted"] = True
    await send(end)


async def _send_timings(send: Send, segment: Segment, timings: CharTimings | None) -> None:
    if timings is not None:
        await send({
            "type": "timings", "context_id": segment.turn.context_id, "segment": segment.index,
            "chars": timings.chars, "char_start_times_ms": timings.start_ms, "char_durations_ms": timings.duration_ms,
        })  # fmt: skip


async def _send_audio(send: Send, stream: SpeechStream, data: bytes) -> None:
    if data:
        started = time.perf_counter()
        await send(data)
        stream.count_sent(len(data))
        stream.add_timing("send", time.perf_counter() - started)
