"""/v1/tts/ws: text streams in, audio streams out, over one WebSocket (for voice agents).

Client -> server (JSON text frames): first `{"type": "config", ...}` (the voice, language, output format and
generation settings of /tts_stream), then any number of `{"type": "text", "text", "context_id"}`,
`{"type": "flush", "context_id"}` (speak what is buffered now), `{"type": "clear", "context_id"}` (stop that
context's audio and drop its queued text: barge-in), and `{"type": "close"}` (finish speaking, then close 1000).
`context_id` is optional (one default context).

Server -> client: `audio_start` (context_id, segment, text, offset_s, session_id) before each segment's audio,
binary frames of that audio (each segment a whole file in the output format), `audio_end` after it, `done` once
a flushed or closed context has spoken everything, `cleared` after a clear, and `error` (the HTTP API's codes).

Text is cut into sentences as they complete (TextSegmenter: coqui's splitter rules; WS_MAX_WAIT_SECONDS forces a
cut for text with no punctuation). Contexts are spoken in the order they arrived, each segment as a session of
its own (id `<socket>-<context>-<segment>`, so /stream_status works) through the same admission, queue, metrics
and logs as HTTP; the next segment is generated while the current one plays. Segment n of a context is seeded
with seed + n.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.access import LOCAL_CALLER, Caller
from api.responses import encode_chunk
from api.speech_jobs import options_of, voice_of
from api.state import app_state
from models.inputs import SocketConfig, SocketMessage, parse_socket_message
from services.encoders import AudioEncoder
from services.engine.pcm import pcm_seconds
from services.engine.text_segmenter import TextSegmenter
from services.errors import ServiceError
from services.speech import SpeechJob, SpeechService
from services.speech_stream import SpeechStream

logger = logging.getLogger(__name__)
router = APIRouter(tags=["websocket"])

DEFAULT_CONTEXT = "default"
# RFC 6455 close codes
NORMAL, UNSUPPORTED_DATA, POLICY_VIOLATION, INTERNAL_ERROR = 1000, 1003, 1008, 1011


@dataclass
class Context:
    """One utterance stream of a socket: its text buffer, its sentences waiting to be spoken, its progress."""

    context_id: str
    segmenter: TextSegmenter
    ready: deque[str] = field(default_factory=deque)
    segments_made: int = 0
    audio_seconds: float = 0.0
    finishing: bool = False  # flushed or closed: done once everything buffered is spoken
    cleared: bool = False


@dataclass
class Segment:
    context: Context
    index: int
    text: str
    stream: SpeechStream | None = None
    opening: asyncio.Task[SpeechStream] | None = None


class SocketError(Exception):
    """A problem to report as an `error` event; `close_code` ends the socket with it."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


class Conversation:
    """One socket's state and its two tasks: reading messages, and speaking segments in order."""

    def __init__(self, websocket: WebSocket, speech: SpeechService, caller: Caller, limits: SocketLimits) -> None:
        self.websocket = websocket
        self.speech = speech
        self.caller = caller
        self.limits = limits
        self.socket_id = secrets.token_hex(4)
        self.config: SocketConfig | None = None
        self.contexts: dict[str, Context] = {}
        self.order: deque[Context] = deque()  # contexts in order of arrival, the head is speaking
        self.closing = False
        self.wake = asyncio.Event()
        self.configured = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.speaking: Segment | None = None
        self.next_up: Segment | None = None

    # -- sending ----------------------------------------------------------------------------------------------

    async def send_event(self, event: dict[str, object]) -> None:
        async with self.send_lock:
            await self.websocket.send_text(json.dumps(event, ensure_ascii=True))

    async def send_audio(self, data: bytes) -> None:
        if data:
            async with self.send_lock:
                await self.websocket.send_bytes(data)

    async def report(self, error: SocketError | ServiceError) -> None:
        await self.send_event({"type": "error", "error": error.code, "message": error.message})

    # -- reading ----------------------------------------------------------------------------------------------

    async def read(self) -> None:
        """Handle messages until `close`, an error that ends the socket, or idleness."""
        while not self.closing:
            try:
                with anyio.fail_after(self.limits.idle_timeout_s):
                    message = await self.websocket.receive()
            except TimeoutError:
                if self.speaking is not None or any(context.ready for context in self.order):
                    continue  # still speaking: not idle
                raise SocketError(
                    "idle_timeout", f"no message for {self.limits.idle_timeout_s:g} s (WS_IDLE_TIMEOUT)", NORMAL
                ) from None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                raise SocketError(
                    "unsupported_data", "send JSON text frames; binary frames are not accepted", UNSUPPORTED_DATA
                )
            try:
                await self.handle(parse_socket_message(message.get("text") or ""))
            except SocketError as error:
                if error.close_code is not None:
                    raise
                await self.report(error)
            except ServiceError as error:
                if self.config is None:  # no usable config: nothing can go on
                    raise SocketError(error.code, error.message, POLICY_VIOLATION) from None
                await self.report(error)
            self.tick()

    async def handle(self, message: SocketMessage) -> None:
        if self.config is None:
            if message.type != "config":
                raise SocketError("invalid_input", "the first message must be {\"type\": \"config\", ...}",
                                  POLICY_VIOLATION)  # fmt: skip
            assert isinstance(message, SocketConfig)
            await self.check_voice(message)
            self.config = message
            self.configured.set()
            await self.send_event({"type": "ready", "socket_id": self.socket_id})
            return
        if message.type == "config":
            raise SocketError("invalid_input", "config was already given; open a new socket for another voice")
        if message.type == "close":
            self.closing = True
            for context in self.order:
                self.finish(context)
            return
        context_id = getattr(message, "context_id", None) or DEFAULT_CONTEXT
        if message.type == "text":
            text = getattr(message, "text", "")
            if len(text) > self.limits.max_text_length:
                raise SocketError(
                    "invalid_input", f"a text message has {len(text)} characters; MAX_TEXT_LENGTH is "
                    f"{self.limits.max_text_length}",
                )  # fmt: skip
            context = self.context(context_id)
            context.ready.extend(context.segmenter.push(text))
        elif message.type == "flush":
            if context_id in self.contexts:
                self.finish(self.contexts[context_id])
        elif message.type == "clear":
            await self.clear(context_id)

    async def check_voice(self, config: SocketConfig) -> None:
        """Refuse an unknown voice or bad latents at config time, not at the first sentence."""
        try:
            await self.speech.check_voice(config.language, voice_of(config))
        except ServiceError as error:
            voice = config.speaker_id or "(latents)"
            raise SocketError(error.code, f"{error.message} (voice {voice})", POLICY_VIOLATION) from None

    def context(self, context_id: str) -> Context:
        context = self.contexts.get(context_id)
        if context is None:
            assert self.config is not None
            segmenter = TextSegmenter(self.config.language, self.limits.max_sentence_chars, self.limits.max_wait_s)
            context = self.contexts[context_id] = Context(context_id, segmenter)
            self.order.append(context)
        return context

    def finish(self, context: Context) -> None:
        context.ready.extend(context.segmenter.flush())
        context.finishing = True

    async def clear(self, context_id: str) -> None:
        context = self.contexts.get(context_id)
        if context is not None:
            context.cleared = True
            context.ready.clear()
            context.segmenter.clear()
            for segment in (self.speaking, self.next_up):
                if segment is not None and segment.context is context:
                    cancel_segment(segment, "cleared by the client")
            self.contexts.pop(context_id, None)
            with contextlib.suppress(ValueError):
                self.order.remove(context)
        await self.send_event({"type": "cleared", "context_id": context_id})

    def tick(self) -> None:
        """Cut text that has waited too long, and wake the speaker."""
        for context in self.order:
            context.ready.extend(context.segmenter.due())
        self.wake.set()

    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.tick()

    # -- speaking ---------------------------------------------------------------------------------------------

    def take_next(self) -> Segment | None:
        """The next segment in order: the head context's next sentence (later contexts wait their turn)."""
        if not self.order or not self.order[0].ready:
            return None  # a finished head gets its `done` from `finish_head` once its last segment has played
        head = self.order[0]
        segment = Segment(head, head.segments_made, head.ready.popleft())
        head.segments_made += 1
        return segment

    def open(self, segment: Segment) -> None:
        """Start generating a segment now (it may play after the current one)."""
        config = self.config
        assert config is not None
        options = options_of(config, None if config.seed is None else config.seed + segment.index)
        session_id = f"{self.socket_id}-{segment.context.context_id}-{segment.index}"[:64]
        job = SpeechJob(segment.text, config.language, voice_of(config), options, session_id, self.caller.key_id)

        async def opened() -> SpeechStream:
            stream = await self.speech.open(job)
            segment.stream = stream
            await stream.admit()
            return stream

        segment.opening = asyncio.ensure_future(opened())

    async def speak(self) -> None:
        """Play segments in order, one generating ahead; `done` for finished contexts; return once closed."""
        assert self.config is not None
        while True:
            if self.speaking is None:
                self.speaking, self.next_up = self.next_up, None
                if self.speaking is None and (segment := self.take_next()) is not None:
                    self.open(segment)
                    self.speaking = segment
            if self.speaking is None:
                if await self.finish_head():
                    continue
                if self.closing and not self.order:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            if self.next_up is None and (upcoming := self.take_next()) is not None:
                self.open(upcoming)
                self.next_up = upcoming
            await self.play(self.speaking)
            self.speaking = None

    async def finish_head(self) -> bool:
        """Send `done` for the head context if it is flushed and spoken; True if it moved on."""
        if not self.order:
            return False
        head = self.order[0]
        if head.finishing and not head.ready and not head.segmenter.buffer.strip():
            self.order.popleft()
            self.contexts.pop(head.context_id, None)
            await self.send_event({"type": "done", "context_id": head.context_id})
            return True
        return False

    async def play(self, segment: Segment) -> None:
        context = segment.context
        assert segment.opening is not None and self.config is not None
        try:
            stream = await segment.opening
        except ServiceError as error:  # overloaded, unknown voice...: this segment is lost, say so
            await self.report(error)
            return
        except asyncio.CancelledError:
            if context.cleared:
                return
            raise
        if context.cleared:  # admitted just before the clear: give its slot back unheard
            await stream.close()
            return
        encoder = AudioEncoder(self.config.output_format, self.config.sample_rate)
        started_offset = context.audio_seconds
        await self.send_event({
            "type": "audio_start", "context_id": context.context_id, "segment": segment.index,
            "text": segment.text, "offset_s": round(started_offset, 3), "session_id": stream.session.id,
        })  # fmt: skip
        async with stream:
            await self.send_audio(encoder.start())
            async for pcm in stream:
                if context.cleared:
                    break
                context.audio_seconds += pcm_seconds(len(pcm))
                encoded = await encode_chunk(encoder, stream, encoder.encode, pcm)
                await self.send_audio(encoded)
                stream.count_sent(len(encoded))
            if stream.complete and not context.cleared:
                await self.send_audio(await encode_chunk(encoder, stream, encoder.finish))
        end: dict[str, object] = {"type": "audio_end", "context_id": context.context_id, "segment": segment.index}
        if not stream.complete:
            end["interrupted"] = True
        await self.send_event(end)

    async def stop(self, reason: str) -> None:
        """Stop generating and give back every slot this socket holds (the socket has ended)."""
        for segment in (self.speaking, self.next_up):
            if segment is None:
                continue
            cancel_segment(segment, reason)
            if segment.opening is not None:
                with contextlib.suppress(BaseException):
                    await segment.opening
            if segment.stream is not None:
                await segment.stream.close()


def cancel_segment(segment: Segment, reason: str) -> None:
    if segment.stream is not None:
        segment.stream.cancel(reason)
    if segment.opening is not None and not segment.opening.done():
        segment.opening.cancel()


@dataclass(frozen=True)
class SocketLimits:
    max_text_length: int
    idle_timeout_s: float
    max_wait_s: float
    max_sentence_chars: int = 250


@router.websocket("/v1/tts/ws")
async def tts_socket(websocket: WebSocket) -> None:
    state = app_state(websocket.app)
    if state is None or state.model is None:
        await websocket.close(code=1013, reason="the model is not ready; try again shortly")  # try again later
        return
    settings = state.settings
    await websocket.accept()
    caller: Caller = websocket.scope.get("state", {}).get("caller", LOCAL_CALLER)
    limits = SocketLimits(settings.MAX_TEXT_LENGTH, settings.WS_IDLE_TIMEOUT, settings.WS_MAX_WAIT_SECONDS)
    conversation = Conversation(websocket, state.model.speech, caller, limits)
    close_code, reason = NORMAL, "done"
    disconnected = False
    try:
        async with anyio.create_task_group() as group:

            async def speak_then_stop() -> None:
                await conversation.speak()  # after `close`, it finishes what is left
                group.cancel_scope.cancel()

            group.start_soon(conversation.tick_forever)
            group.start_soon(conversation.read)
            await conversation.configured.wait()
            group.start_soon(speak_then_stop)
    except* WebSocketDisconnect:
        disconnected = True
    except* SocketError as errors:
        error = errors.exceptions[0]
        assert isinstance(error, SocketError)
        await conversation.stop(f"socket error: {error.code}")  # before the error event: no audio after it
        with contextlib.suppress(Exception):
            await conversation.report(error)
        close_code, reason = error.close_code or POLICY_VIOLATION, error.message[:120]
    except* Exception as errors:
        logger.error("socket %s failed: %r", conversation.socket_id, errors.exceptions[0])
        close_code, reason = INTERNAL_ERROR, "server error"
    await conversation.stop("client disconnected" if disconnected else "socket closed")  # idempotent
    if not disconnected:
        with contextlib.suppress(Exception):
            await websocket.close(code=close_code, reason=reason)
