"""/v1/tts/ws: text streams in, audio streams out, over one WebSocket (for voice agents). This module is the wire
only: it parses client frames into calls on a Conversation (services/conversation.py: contexts, turns, ordering,
look-ahead, barge-in, drain) and sends what it hands back as frames; errors and close codes come from the one
error table (api/errors.py).

Client -> server (JSON text frames): first `{"type": "config", ...}` (the voice, language, output format and
generation settings of /tts_stream), then any number of `{"type": "text", "text", "context_id"}`,
`{"type": "flush", "context_id"}` (speak what is buffered now), `{"type": "clear", "context_id"}` (stop that
context's audio and drop its queued text: barge-in), and `{"type": "close"}` (finish speaking, then close 1000).
`context_id` is optional (one default context).

Server -> client: `ready` after the config, `audio_start` (context_id, segment, text, offset_s, session_id) before
each segment's audio, binary frames of that audio (each segment a whole file in the output format), `audio_end`
after it, `done` once a flushed or closed context has spoken everything, `cleared` after a clear, and `error` (the
HTTP API's codes). On shutdown the segment playing finishes (up to SHUTDOWN_TIMEOUT), then the socket closes 1012.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.errors import CloseCode, socket_close_for, socket_error_event
from api.middleware.api_keys import LOCAL_CALLER, Caller
from api.speech_jobs import options_of, voice_of
from api.state import AppState, app_state
from models.inputs import SocketConfig, SocketControl, SocketMessage, SocketText, parse_socket_message
from services.conversation import Conversation, ConversationConfig, ConversationLimits
from services.errors import IdleTimeout, InvalidInput, ServiceError, UnsupportedData
from services.segments import CLIENT_GONE, ClientGone, Event
from services.sessions import SHUTTING_DOWN

logger = logging.getLogger(__name__)
router = APIRouter(tags=["websocket"])

DEFAULT_CONTEXT = "default"
DRAIN_POLL_S = 0.1  # how soon a socket sees that the server has begun to drain (SIGTERM)


@router.websocket("/v1/tts/ws")
async def tts_socket(websocket: WebSocket) -> None:
    if (state := await accept_when_ready(websocket)) is not None:
        await Socket(websocket, state).serve()


async def accept_when_ready(websocket: WebSocket) -> AppState | None:
    """Accept the handshake; the state if the model is serving, else None after closing with 1013."""
    state = app_state(websocket.app)
    await websocket.accept()
    if state is None or state.model is None or state.status == "draining":
        reason = "the server is shutting down" if state and state.status == "draining" else "the model is not ready"
        await websocket.close(code=CloseCode.TRY_AGAIN_LATER, reason=f"{reason}; try again shortly")
        return None
    return state


class Socket:
    """One connection: client frames become conversation calls, the conversation's output becomes frames.

    The socket API is this class; a wire is `configure` (what starts a conversation), `on_message` (a client
    frame as conversation calls) and `frames` (the conversation's output as frames): this module's wire below,
    ElevenLabs' in api/elevenlabs/socket.py."""

    def __init__(self, websocket: WebSocket, state: AppState) -> None:
        self.websocket = websocket
        self.state = state
        self.id = secrets.token_hex(4)
        self.caller: Caller = websocket.scope.get("state", {}).get("caller", LOCAL_CALLER)
        self.idle_timeout_s = state.settings.WS_IDLE_TIMEOUT
        self.send_lock = asyncio.Lock()  # the reader (events) and the speaker (audio) both send

    async def send(self, item: Event | bytes | ServiceError) -> None:
        async with self.send_lock:
            try:
                for frame in self.frames(item):
                    if isinstance(frame, bytes):
                        await self.websocket.send_bytes(frame)
                    else:
                        await self.websocket.send_text(json.dumps(frame, ensure_ascii=True))
            except WebSocketDisconnect as gone:
                raise ClientGone(gone.code) from gone

    def frames(self, item: Event | bytes | ServiceError) -> list[Event | bytes]:
        """What the client gets for one item of the conversation's output: here, the item itself."""
        return [socket_error_event(item) if isinstance(item, ServiceError) else item]

    async def serve(self) -> None:
        """Configure, then read and speak until `close`, an error that ends the socket, the client leaving, or a
        shutdown; then close with the code that says which."""
        conversation: Conversation | None = None
        close_code: CloseCode | None = CloseCode.NORMAL  # None: the client is gone, nothing to close
        reason = "done"
        try:
            conversation = await self.configure()
            async with anyio.create_task_group() as group:

                async def speak_then_end() -> None:
                    await conversation.run()  # after `close` it finishes what is left; after a drain, its segment
                    group.cancel_scope.cancel()

                group.start_soon(self.read, conversation)
                group.start_soon(self.watch_drain, conversation)
                group.start_soon(speak_then_end)
            if conversation.draining:
                close_code, reason = CloseCode.SERVICE_RESTART, SHUTTING_DOWN
        except* (WebSocketDisconnect, ClientGone) as disconnects:
            close_code = None
            if conversation is not None:  # 1012: uvicorn closed it for a shutdown without waiting for us
                gone = disconnects.exceptions[0]
                code = gone.code if isinstance(gone, WebSocketDisconnect) else next(iter(gone.args), None)
                await conversation.stop(SHUTTING_DOWN if code == CloseCode.SERVICE_RESTART else CLIENT_GONE)
        except* ServiceError as errors:
            error = errors.exceptions[0]
            assert isinstance(error, ServiceError)
            if conversation is not None:
                await conversation.stop(f"socket error: {error.code}")  # before the error event: no audio after it
            await self._quietly(self.send(error))
            close_code = socket_close_for(error, configured=conversation is not None) or CloseCode.POLICY_VIOLATION
            reason = error.message[:120]
        except* Exception as errors:
            logger.error("socket %s failed: %r", self.id, errors.exceptions[0])
            close_code, reason = CloseCode.INTERNAL_ERROR, "server error"
        finally:  # also when uvicorn cancels this task at the end of a shutdown's grace
            if conversation is not None:
                await asyncio.shield(conversation.stop("socket closed"))  # idempotent: the first reason stays
        if close_code is not None:
            await self._quietly(self.websocket.close(code=close_code, reason=reason))

    async def configure(self) -> Conversation:
        """The first message must be a usable config: a voice that exists, a language the model speaks."""
        message = parse_socket_message(await self.receive_text(None))
        if not isinstance(message, SocketConfig):
            raise InvalidInput('the first message must be {"type": "config", ...}')
        model = self.state.model
        assert model is not None
        await model.speech.check_voice(message.language, voice_of(message))
        settings = self.state.settings
        config = ConversationConfig(
            message.language, voice_of(message), options_of(message, message.seed), message.output_format,
            message.sample_rate, self.caller.key_id, timings=message.timings,
        )  # fmt: skip
        limits = ConversationLimits(settings.MAX_TEXT_LENGTH, settings.WS_MAX_WAIT_SECONDS)
        conversation = Conversation(self.id, model.speech, config, limits, self.send)
        await self.send({"type": "ready", "socket_id": self.id})
        return conversation

    async def read(self, conversation: Conversation) -> None:
        """Handle messages until the socket ends (errors that do not end it are reported)."""
        while True:
            raw = await self.receive_text(conversation)
            self.drain_if_stopping(conversation)  # now, not at the next poll: text after SIGTERM is refused
            try:
                await self.on_message(conversation, raw)
            except ServiceError as error:
                if socket_close_for(error, configured=True) is not None:
                    raise
                await self.send(error)

    async def on_message(self, conversation: Conversation, raw: str) -> None:
        await self.handle(conversation, parse_socket_message(raw))

    async def handle(self, conversation: Conversation, message: SocketMessage) -> None:
        if isinstance(message, SocketConfig):
            raise InvalidInput("config was already given; open a new socket for another voice")
        if conversation.closing:
            raise InvalidInput("the socket is closing (close was sent): nothing more is taken")
        if isinstance(message, SocketText):
            conversation.text(message.text, message.context_id or DEFAULT_CONTEXT)
        elif isinstance(message, SocketControl) and message.type == "flush":
            conversation.flush(message.context_id or DEFAULT_CONTEXT)
        elif isinstance(message, SocketControl):
            await conversation.clear(message.context_id or DEFAULT_CONTEXT)
        else:
            conversation.close()

    async def receive_text(self, conversation: Conversation | None) -> str:
        """The next text frame. Raises WebSocketDisconnect, UnsupportedData (a binary frame), IdleTimeout (nothing
        for WS_IDLE_TIMEOUT while nothing was being spoken)."""
        while True:
            try:
                with anyio.fail_after(self.idle_timeout_s):
                    message = await self.websocket.receive()
            except TimeoutError:
                if conversation is not None and conversation.busy:
                    continue  # still speaking: not idle
                raise IdleTimeout(f"no message for {self.idle_timeout_s:g} s (WS_IDLE_TIMEOUT)") from None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", CloseCode.NORMAL))
            if message.get("bytes") is not None:
                raise UnsupportedData("send JSON text frames; binary frames are not accepted")
            return message.get("text") or ""

    async def watch_drain(self, conversation: Conversation) -> None:
        """On SIGTERM (run.py marks the state draining): the segment playing gets SHUTDOWN_TIMEOUT to finish."""
        # A flag polled, not an event awaited: the drain begins in a signal handler, where setting an asyncio.Event
        # is not safe.
        while not self.drain_if_stopping(conversation):  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)

    def drain_if_stopping(self, conversation: Conversation) -> bool:
        if self.state.status == "draining":
            conversation.drain(self.state.settings.SHUTDOWN_TIMEOUT)  # once: later calls change nothing
        return conversation.draining

    async def _quietly(self, sending: Awaitable[None]) -> None:
        """Send if the socket is still there (a closing or closed one has nobody to read it)."""
        try:
            await sending
        except Exception:  # the client is gone or the socket already closed: nothing to tell
            logger.debug("socket %s: nothing sent, it has closed", self.id)
