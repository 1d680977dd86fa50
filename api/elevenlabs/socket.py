"""ElevenLabs' WebSocket input streaming, as Pipecat's ElevenLabsTTSService and LiveKit's elevenlabs plugin speak
it: /v1/text-to-speech/{voice_id}/multi-stream-input (contexts) and /stream-input (one context).

The socket API is api/tts_socket.py's `Socket` over the same Conversation (services/conversation.py); this module
is only the wire: what a client frame means, and how the conversation's output goes out.

Client -> server, JSON: `{"text", "context_id", "voice_settings"}` (a context's first text, `" "`, opens it;
`voice_settings.speed` is XTTS's speed); `{"text": "...", "context_id"}` more text; `{"context_id", "flush": true}`
speak what is buffered; `{"text": "", "context_id"}` a keep-alive; `{"context_id", "close_context": true}` closes
the context; `{"close_socket": true}` finishes and closes the socket. On /stream-input there is no `context_id`,
`flush` or `try_trigger_generation` speaks what is buffered, and `{"text": ""}` ends the input.

`close_context` is a barge-in: the context's audio stops within a chunk, its text is dropped, `isFinal` follows.
One case is not: a close right after the client ended its input with a flush (what Pipecat sends at the end of
every reply, `flush` then `close_context`, and LiveKit, `{"text": "", "flush": true}` then `close_context`, both
waiting for the rest of the audio and then `isFinal`); that context finishes speaking first, and a second close
(Pipecat's, on an interruption) stops it at once.

Server -> client: `{"audio": base64, "alignment", "normalizedAlignment", "contextId"}` per piece of audio, the
alignment (`chars`, `charStartTimesMs`, `charDurationsMs`) holding the characters heard in that piece with times
from its start; `{"isFinal": true, "contextId"}` once a closed context is done; errors as `{"error": code,
"message", "contextId"}`. /stream-input's messages carry no `contextId`.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Annotated

from fastapi import APIRouter, Path, WebSocket
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from api.elevenlabs.wire import VoiceSettings, WellFormed, alignment, output_format
from api.errors import MESSAGE_LIMIT
from api.state import AppState
from api.tts_socket import Socket, accept_when_ready
from models.inputs import Language
from services.char_timings import CharTimings
from services.conversation import Conversation, ConversationConfig, ConversationLimits
from services.errors import InvalidInput, ServiceError, clipped, echoed
from services.segments import Event
from services.speech import SpeechOptions

router = APIRouter(prefix="/v1/text-to-speech", tags=["elevenlabs"])

VoiceId = Annotated[str, Path(min_length=1, max_length=256)]
SINGLE_CONTEXT = "stream-input"
DEFAULT_INACTIVITY_S = 20  # ElevenLabs' default; its clients keep a socket alive with a message every 10 s
MAX_INACTIVITY_S = 180
MAX_SEED = 4294967295  # as the HTTP body's (api/elevenlabs/wire.py)
_LANGUAGE: TypeAdapter[str] = TypeAdapter(Language)


class ClientMessage(BaseModel):
    """Any client frame of either socket (their fields overlap; what a frame means is decided by which are set)."""

    model_config = ConfigDict(extra="ignore")

    text: WellFormed | None = None
    context_id: WellFormed | None = Field(None, min_length=1, max_length=256)
    voice_settings: VoiceSettings | None = None
    flush: bool = False
    try_trigger_generation: bool = False
    close_context: bool = False
    close_socket: bool = False


@router.websocket("/{voice_id}/multi-stream-input")
async def multi_stream_input(websocket: WebSocket, voice_id: VoiceId) -> None:
    if (state := await accept_when_ready(websocket)) is not None:
        await ElevenLabsSocket(websocket, state, voice_id, multi=True).serve()


@router.websocket("/{voice_id}/stream-input")
async def stream_input(websocket: WebSocket, voice_id: VoiceId) -> None:
    if (state := await accept_when_ready(websocket)) is not None:
        await ElevenLabsSocket(websocket, state, voice_id, multi=False).serve()


def _seed(value: str | None) -> int | None:
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_SEED:
        raise InvalidInput(f"seed must be a whole number 0-{MAX_SEED}")
    return int(value)


@dataclasses.dataclass
class _Context:
    """What the wire keeps of a context: its end of input and close, and whether its alignment has begun."""

    flushed: bool = False
    """Flushed with no text since: a close now lets it finish."""
    closing: bool = False
    """Closed gracefully: `isFinal` once its audio is out."""
    spoken: bool = False
    """Characters have gone out (the next segment's alignment starts with the space between them)."""


class ElevenLabsSocket(Socket):
    """ElevenLabs' wire over the socket API: query parameters configure it, frames are ElevenLabs' messages."""

    def __init__(self, websocket: WebSocket, state: AppState, voice_id: str, multi: bool) -> None:
        super().__init__(websocket, state)
        self.voice_id = voice_id
        self.multi = multi
        self.contexts: dict[str, _Context] = {}
        self.conversation: Conversation | None = None
        self.speaking: str | None = None  # the context whose segment is playing
        self.pending: CharTimings | None = None  # characters of audio not sent yet
        self.auto_mode = False
        self.segment_started = False  # no timings sent yet for the segment playing

    async def configure(self) -> Conversation:
        """From the handshake's query: `output_format`, `language_code`, `inactivity_timeout`, `auto_mode`, and
        `seed` (this server's extension, as in the HTTP body: a context's first segment gets it, segment n seed + n)
        (`model_id`, `sync_alignment` and the rest are taken: alignment always comes with the audio)."""
        query = self.websocket.query_params
        audio_format, sample_rate = output_format(query.get("output_format"))
        settings = self.state.settings
        try:
            language = _LANGUAGE.validate_python(query.get("language_code") or settings.DEFAULT_LANGUAGE)
            inactivity = int(query.get("inactivity_timeout") or DEFAULT_INACTIVITY_S)
        except ValidationError as error:
            raise InvalidInput(f"language_code: {error.errors()[0]['msg']}") from None
        except ValueError:
            raise InvalidInput("inactivity_timeout must be a whole number of seconds") from None
        if not 1 <= inactivity <= MAX_INACTIVITY_S:
            raise InvalidInput(f"inactivity_timeout must be 1-{MAX_INACTIVITY_S} seconds")
        seed = _seed(query.get("seed"))
        self.idle_timeout_s = inactivity
        self.auto_mode = query.get("auto_mode", "false").lower() == "true"
        model = self.state.model
        assert model is not None
        await model.speech.check_voice(language, self.voice_id)
        config = ConversationConfig(
            language, self.voice_id, SpeechOptions(seed=seed), audio_format, sample_rate, self.caller.key_id,
            family="elevenlabs", timings=True,
        )  # fmt: skip
        limits = ConversationLimits(settings.MAX_TEXT_LENGTH, settings.WS_MAX_WAIT_SECONDS)
        self.conversation = Conversation(self.id, model.speech, config, limits, self.send)
        return self.conversation

    async def on_message(self, conversation: Conversation, raw: str) -> None:
        try:
            message = ClientMessage.model_validate_json(raw)
        except ValidationError as error:
            raise InvalidInput(f"not a message of this socket: {clipped(str(error.errors()[0]['msg']))}") from None
        context_id = (message.context_id or "default") if self.multi else SINGLE_CONTEXT
        if message.close_socket:
            for context in self.contexts.values():
                context.closing = True
            conversation.close()
        elif message.close_context:
            await self._close_context(conversation, context_id)
        elif conversation.closing:
            return  # keep-alives and late text after close_socket / the end of input
        elif message.text is not None or message.flush or message.try_trigger_generation:
            await self._text(conversation, context_id, message)

    async def _text(self, conversation: Conversation, context_id: str, message: ClientMessage) -> None:
        context = self.contexts.setdefault(context_id, _Context())
        if context.closing:
            if message.text:
                raise InvalidInput(f"context {echoed(context_id)} was closed; open a new one")
            return  # a keep-alive of a context finishing
        if message.voice_settings is not None and message.voice_settings.speed is not None:
            self._set_speed(conversation, message.voice_settings.speed)
        text = message.text or ""
        if text:  # "" alone is a keep-alive (or, on /stream-input, the end of input)
            conversation.text(text, context_id)
            context.flushed = context.flushed and not text.strip()
        ends = message.text == "" and (message.flush or not self.multi)  # LiveKit's end of a context's input
        if message.flush or message.try_trigger_generation or ends or (self.auto_mode and text.strip()):
            conversation.flush(context_id)
            context.flushed = True
        if ends and not self.multi:  # /stream-input: speak everything, then isFinal and close
            context.closing = True
            conversation.close()
            if context_id not in conversation.turns:
                await self.send({"type": "done", "context_id": context_id})

    async def _close_context(self, conversation: Conversation, context_id: str) -> None:
        context = self.contexts.setdefault(context_id, _Context())
        if context.flushed and not context.closing and context_id in conversation.turns:
            context.closing = True  # the end of a reply: it finishes, then isFinal
            return
        context.closing = True
        await conversation.clear(context_id)  # barge-in: `cleared`, then isFinal

    def _set_speed(self, conversation: Conversation, speed: float) -> None:
        """voice_settings.speed: the segments opened from now on speak at it."""
        config = conversation.config
        conversation.config = dataclasses.replace(config, options=dataclasses.replace(config.options, speed=speed))

    def frames(self, item: Event | bytes | ServiceError) -> list[Event | bytes]:
        if isinstance(item, ServiceError):
            error: Event = {"error": item.code, "message": clipped(item.message, MESSAGE_LIMIT)}
            segment = self.conversation.speaking if self.conversation is not None else None
            return [self._tagged(error, segment.turn.context_id if segment is not None else None)]
        if isinstance(item, bytes):
            return [self._audio(item)]
        kind, context_id = item.get("type"), str(item.get("context_id"))
        if kind == "audio_start":
            self.speaking, self.pending, self.segment_started = context_id, None, True
        elif kind == "timings":
            return self._timings(item, context_id)
        elif kind == "audio_end" and self.pending is not None and not item.get("interrupted"):
            return [self._audio(b"")]  # characters whose audio the encoder had not given out yet
        elif kind in ("done", "cleared"):
            context = self.contexts.get(context_id)
            if kind == "cleared" or (context is not None and context.closing):
                self.contexts.pop(context_id, None)
                return [self._tagged({"isFinal": True}, context_id)]
        return []

    def _timings(self, item: Event, context_id: str) -> list[Event | bytes]:
        chars, starts = list(item["chars"]), list(item["char_start_times_ms"])  # type: ignore[call-overload]
        durations = list(item["char_durations_ms"])  # type: ignore[call-overload]
        context = self.contexts.setdefault(context_id, _Context())
        if self.segment_started and context.spoken and chars[0] != " ":  # a new turn's first word: not glued on
            chars, starts, durations = [" ", *chars], [0, *starts], [0, *durations]
        context.spoken, self.segment_started = True, False
        timings = CharTimings(chars, starts, durations)
        if self.pending is not None:  # audio the encoder held back: one message for both
            shift = self.pending.end_ms
            timings = CharTimings(
                self.pending.chars + chars, self.pending.start_ms + [start + shift for start in starts],
                self.pending.duration_ms + durations,
            )  # fmt: skip
        self.pending = timings
        return []

    def _audio(self, audio: bytes) -> Event:
        message: Event = {"audio": base64.b64encode(audio).decode("ascii") if audio else None}
        if self.pending is not None:
            message["alignment"] = message["normalizedAlignment"] = alignment(self.pending)
            self.pending = None
        return self._tagged(message, self.speaking)

    def _tagged(self, message: Event, context_id: str | None) -> Event:
        if self.multi and context_id is not None:
            message["contextId"] = context_id
        return message
