"""A voice agent's conversation: text arriving in pieces on named contexts, spoken sentence by sentence in order,
one sentence generating ahead of the one playing, with barge-in (`clear`) and a graceful `drain`.

It knows nothing of sockets: it reads calls (`text`, `flush`, `clear`, `close`, `drain`) and hands what the client
should get to a send callback: events (dicts, the protocol's JSON), audio (bytes, each segment a whole file in the
output format), or a ServiceError to report. `api/tts_socket.py` is its wire.

A context speaks in turns: text, then a flush (or `close`), then `done` once every sentence is spoken; its next
text starts the next turn, as does text after a `clear`. Within a turn, segments count from 0, `offset_s` is where
a segment starts in the turn's audio, and segment n is seeded with seed + n (so a turn says what /tts_stream
says with that seed). Every segment is a session of its own, `<conversation id>-<n>`, n counting every
segment of the conversation: ids never repeat, whatever the contexts and turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from services.char_timings import SpeakingRate
from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.errors import InvalidInput, NotReady
from services.formats import OutputFormat
from services.segments import CLEARED, Segment, Send, Turn, play
from services.sessions import SHUTTING_DOWN
from services.speech import SpeechJob, SpeechOptions, SpeechService, Voice
from services.text_segmenter import TextSegmenter

logger = logging.getLogger(__name__)

TICK_S = 0.1  # how often text that has waited too long is looked at


@dataclass(frozen=True)
class ConversationConfig:
    """How every segment is spoken: the config a conversation starts with."""

    language: str
    voice: Voice
    options: SpeechOptions
    """Generation settings; `seed` is a turn's first segment's (segment n gets seed + n)."""
    output_format: OutputFormat = "pcm"
    sample_rate: int = OUTPUT_SAMPLE_RATE
    owner: str | None = None
    """The API key (its id) the sessions belong to."""
    family: str = "websocket"
    """The API the conversation came through: every segment's session says so (StreamSession.family)."""
    timings: bool = False
    """Send a `timings` event (the characters heard, with their times) before each piece of audio."""


@dataclass(frozen=True)
class ConversationLimits:
    max_text_length: int
    max_wait_s: float
    """Text without sentence-final punctuation is spoken after this long (WS_MAX_WAIT_SECONDS)."""
    max_sentence_chars: int = 250


class Conversation:
    """One client's turns on any number of contexts, spoken in the order they arrived. `run()` speaks until
    `close()` (everything spoken) or `drain()` (the segment playing finished); `stop()` ends it at once."""

    def __init__(
        self,
        conversation_id: str,
        speech: SpeechService,
        config: ConversationConfig,
        limits: ConversationLimits,
        send: Send,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = conversation_id
        self.speech = speech
        self.config = config
        self.limits = limits
        self.send = send
        self.clock = clock
        self.turns: dict[str, Turn] = {}
        self.order: deque[Turn] = deque()  # turns in order of arrival; the head is speaking
        self.speaking: Segment | None = None
        self.next_up: Segment | None = None
        self.segments_opened = 0  # every segment of the conversation: the session ids' counter
        self.rate = SpeakingRate()  # how fast this voice speaks: the character timings' pace
        self.closing = False
        self.draining = False
        self._cut_off: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()

    # -- what the client asks ---------------------------------------------------------------------------------

    def text(self, text: str, context_id: str) -> None:
        """More text of a context; complete sentences become segments at once."""
        if self.draining:
            raise NotReady("the server is shutting down: this text will not be spoken", retry_after_s=5)
        if len(text) > self.limits.max_text_length:
            raise InvalidInput(
                f"a text message has {len(text)} characters; MAX_TEXT_LENGTH is {self.limits.max_text_length}"
            )
        turn = self._turn(context_id)
        turn.ready.extend(turn.segmenter.push(text))
        self._wake.set()

    def flush(self, context_id: str) -> None:
        """Speak what the context has buffered; `done` follows once it is all spoken."""
        if (turn := self.turns.get(context_id)) is not None:
            turn.finish()
            self._wake.set()

    async def clear(self, context_id: str) -> None:
        """Barge-in: stop the context's audio within one chunk, drop its text; `cleared` follows."""
        turn = self.turns.pop(context_id, None)
        if turn is not None:
            turn.cleared = True
            turn.ready.clear()
            turn.segmenter.clear()
            for segment in (self.speaking, self.next_up):
                if segment is not None and segment.turn is turn:
                    segment.cancel(CLEARED)
            with contextlib.suppress(ValueError):
                self.order.remove(turn)
        await self.send({"type": "cleared", "context_id": context_id})
        self._wake.set()

    def close(self) -> None:
        """No more input: speak everything buffered, then `run()` returns."""
        self.closing = True
        for turn in self.order:
            turn.finish()
        self._wake.set()

    def drain(self, grace_s: float) -> None:
        """The server is stopping: take no more text and start nothing new; the segment playing may finish
        within `grace_s`, then it is cut off. `run()` returns once it has ended."""
        if self.draining:
            return
        self.draining = True
        for turn in self.order:
            turn.ready.clear()
            turn.segmenter.clear()
        if self.next_up is not None:
            self.next_up.cancel(SHUTTING_DOWN)  # generating ahead for nothing: free its row now
        if self.speaking is not None:
            self._cut_off = asyncio.get_running_loop().call_later(grace_s, self.speaking.cancel, SHUTTING_DOWN)
        self._wake.set()

    @property
    def busy(self) -> bool:
        """Something is being spoken or waits to be (the client is not idle)."""
        return self.speaking is not None or any(turn.ready for turn in self.order)

    # -- speaking ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Play segments in order, one generating ahead; `done` for every spoken turn."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._tick)
            await self._speak()
            group.cancel_scope.cancel()

    async def stop(self, reason: str) -> None:
        """Stop generating and give back every slot held (idempotent)."""
        if self._cut_off is not None:
            self._cut_off.cancel()
        for segment in (self.speaking, self.next_up):
            if segment is not None:
                await segment.release(SHUTTING_DOWN if self.draining else reason)

    async def _speak(self) -> None:
        while True:
            if self.speaking is None:
                if self.draining:  # the look-ahead is not played
                    if self.next_up is not None:
                        await self.next_up.release(SHUTTING_DOWN)
                        self.next_up = None
                    return
                self.speaking, self.next_up = self.next_up, None
                if self.speaking is None and (segment := self._take_next()) is not None:
                    self.speaking = self._open(segment)
            if self.speaking is None:
                if self.closing and not self.order:
                    return
                if not await self._finish_head():
                    self._wake.clear()
                    await self._wake.wait()
                continue
            if self.next_up is None and (upcoming := self._take_next()) is not None:
                self.next_up = self._open(upcoming)
            config = self.config
            rate = self.rate if config.timings else None
            await play(self.speaking, self.send, config.output_format, config.sample_rate, rate, config.options.speed)
            self.speaking = None

    async def _tick(self) -> None:
        """Cut text that has waited too long (no punctuation) into segments."""
        while True:
            await asyncio.sleep(TICK_S)
            for turn in self.order:
                if due := turn.segmenter.due():
                    turn.ready.extend(due)
                    self._wake.set()

    def _turn(self, context_id: str) -> Turn:
        turn = self.turns.get(context_id)
        if turn is None:
            segmenter = TextSegmenter(
                self.config.language, self.limits.max_sentence_chars, self.limits.max_wait_s, self.clock
            )
            turn = self.turns[context_id] = Turn(context_id, segmenter)
            self.order.append(turn)
        return turn

    def _take_next(self) -> Segment | None:
        """The head turn's next sentence (later turns wait theirs); none while draining."""
        if self.draining or not self.order or not self.order[0].ready:
            return None
        head = self.order[0]
        segment = Segment(head, head.segments_made, head.ready.popleft())
        head.segments_made += 1
        return segment

    def _open(self, segment: Segment) -> Segment:
        """Start generating a segment now (it may play after the current one)."""
        config = self.config
        seed = config.options.seed
        options = dataclasses.replace(config.options, seed=None if seed is None else seed + segment.index)
        session_id = f"{self.id}-{self.segments_opened}"  # never the same twice, whatever the context and turn
        self.segments_opened += 1
        segment.open(
            self.speech,
            SpeechJob(segment.text, config.language, config.voice, options, session_id, config.owner, config.family),
        )
        return segment

    async def _finish_head(self) -> bool:
        """Send `done` for the head turn if it is flushed and spoken; True if it moved on."""
        if not self.order or not self.order[0].spoken:
            return False
        head = self.order.popleft()
        if self.turns.get(head.context_id) is head:
            del self.turns[head.context_id]
        await self.send({"type": "done", "context_id": head.context_id})
        return True
