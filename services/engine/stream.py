"""One stream as the engine sees it: the request (immutable) and the channel its results travel on.

Three owners, one object each: the request below never changes; the channel is the only thing the
model thread and the event loop share (the model thread posts, the loop reads, each side writes its own
counter); the decoder's row state (batch_decoder.RowState) and the scheduler's step record
(scheduler._Scheduled) live on the model thread and are never seen by the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from services.engine.latents import VoiceLatents
from services.engine.params import GenerationParams
from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.engine.text import Sentence


@dataclass
class StepTimings:
    """Seconds spent in each stage of a generation, summed over its sentences."""

    prefill_s: float = 0.0
    gpt_steps_s: float = 0.0
    vocoder_s: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class StreamReport:
    """What a stream cost and sampled, posted once when it leaves the batch."""

    timings: StepTimings = field(default_factory=StepTimings)
    audio_tokens: tuple[int, ...] = ()
    """Every audio token sampled, all sentences in order (the stop tokens included)."""
    encode_s: float = 0.0


@dataclass(frozen=True)
class SentenceDone:
    """Channel item: a sentence has been spoken to its end."""


@dataclass(frozen=True)
class StreamEnded:
    """Channel item, the last one: nothing more will come; `error` says why it ended early, if it did."""

    report: StreamReport
    error: Exception | None = None


class Preempted(Exception):
    """A background stream's row went to a live stream: it ended early, and its owner starts it over."""


@dataclass(frozen=True, eq=False)  # identity: the decoder and scheduler key their state on the stream
class SynthesisRequest:
    """What to say, in whose voice, how; and the flag its owner sets to stop it."""

    sentences: list[Sentence]
    voice: VoiceLatents
    params: GenerationParams
    cancel: threading.Event
    background: bool = False
    """A long-form job's work: it gets only the rows and steps live streams leave, and may be preempted."""


class StreamChannel:
    """The one place both threads touch: PCM and events from the model thread, reads counted by the loop.

    Created on the event loop that reads it. The model thread writes only `produced_samples` and posts
    items through `post`; the loop writes only `consumed_samples`.
    """

    def __init__(self) -> None:
        self.items: asyncio.Queue[bytes | SentenceDone | StreamEnded] = asyncio.Queue()
        self.produced_samples = 0
        self.consumed_samples = 0
        self.released = asyncio.Event()
        """Set once the model thread will not touch this stream again."""
        self._loop = asyncio.get_running_loop()

    def buffered_seconds(self) -> float:
        """Audio made but not yet taken by the reader."""
        return (self.produced_samples - self.consumed_samples) / OUTPUT_SAMPLE_RATE

    def post_audio(self, pcm: bytes) -> None:
        """Model thread: a chunk of 16-bit PCM."""
        self.produced_samples += len(pcm) // 2
        self._call(self.items.put_nowait, pcm)

    def post(self, item: SentenceDone | StreamEnded) -> None:
        """Model thread: an event; after StreamEnded the stream is released."""
        self._call(self.items.put_nowait, item)
        if isinstance(item, StreamEnded):
            self._call(self.released.set)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed (shutdown): nobody is listening any more
            pass


@dataclass(eq=False)
class EngineStream:
    """A request and its channel: all that passes between the serving layer and the model thread."""

    request: SynthesisRequest
    channel: StreamChannel = field(default_factory=StreamChannel)
