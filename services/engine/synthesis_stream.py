"""A request's sentences as 16-bit PCM chunks, made by the batch scheduler on the model thread."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.engine.scheduler import BatchScheduler
from services.engine.stream import EngineStream, SentenceDone, StepTimings, StreamEnded, StreamReport, SynthesisRequest


class SynthesisStream:
    """Iterate for PCM chunks; `request.cancel` (set by the owner) stops it within one step.

    Generation starts when iteration does: the stream joins the scheduler's batch and runs ahead of its
    reader by at most `BatchLimits.buffer_seconds` of audio, so a slow reader pauses only its own stream.
    """

    def __init__(self, scheduler: BatchScheduler, request: SynthesisRequest) -> None:
        self.sentences_done = 0
        self.report = StreamReport()
        """What the stream cost and sampled; filled in when it ends."""
        self._scheduler = scheduler
        self._request = request
        self._stream: EngineStream | None = None

    @property
    def timings(self) -> StepTimings:
        """Seconds spent per stage (a batched forward pass counts its share for each stream in it); at the end."""
        return self.report.timings

    @property
    def encode_s(self) -> float:
        """Seconds spent turning waveforms into PCM bytes; at the end."""
        return self.report.encode_s

    @property
    def audio_tokens(self) -> tuple[int, ...]:
        """The GPT tokens sampled (once the stream has ended)."""
        return self.report.audio_tokens

    @property
    def buffered_seconds(self) -> float:
        """Audio made and not yet taken by the reader."""
        return self._stream.channel.buffered_seconds() if self._stream is not None else 0.0

    @property
    def text_tokens(self) -> int:
        """Text tokens the GPT reads for this stream, every sentence together."""
        return sum(int(sentence.tokens.shape[-1]) for sentence in self._request.sentences)

    @property
    def complete(self) -> bool:
        """Every sentence has been spoken to its end and handed to the reader."""
        return self.sentences_done == len(self._request.sentences)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        cancel = self._request.cancel
        if cancel.is_set() or self._stream is not None:
            return
        stream = self._stream = EngineStream(self._request)
        channel = stream.channel
        self._scheduler.add(stream)
        while True:
            item = await channel.items.get()
            if isinstance(item, bytes):
                if cancel.is_set():
                    return
                channel.consumed_samples += len(item) // 2
                self._scheduler.wake()  # a paused stream may step again: every read is looked at
                yield item
            elif isinstance(item, SentenceDone):
                self.sentences_done += 1
            else:
                self.report = item.report
                if item.error is not None:
                    raise item.error
                return

    async def wait_idle(self) -> None:
        """Wait until the model thread is done with this stream (call after setting `cancel`, or at the end)."""
        stream = self._stream
        if stream is None:
            return
        channel = stream.channel
        if not channel.released.is_set():
            self._scheduler.wake()  # a paused stream is noticed only when a step runs
            await channel.released.wait()
        while not channel.items.empty():  # drop audio nobody will read; keep the report
            item = channel.items.get_nowait()
            if isinstance(item, StreamEnded):
                self.report = item.report
