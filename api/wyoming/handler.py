"""One Wyoming connection: its events in, answers and audio out.

The reader never waits for speech: a request is spoken by a task of its own (requests of one connection in the
order they came), so the next events are read meanwhile: a stream's `synthesize-chunk`s while its first sentence
is spoken, and the end of the connection, which cancels what it asked for (its sessions end, their slots free).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from wyoming.event import Event
from wyoming.info import Describe, SelectProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from api.state import AppState, ModelServices
from api.wyoming.speaking import FAMILY, StreamedSynthesis, StreamSettings, speak_whole
from api.wyoming.voices import PROGRAM_NAME, info, language_for, seed_of, text_of, voice_name, voice_request
from api.wyoming.wire import Wire
from services.errors import InvalidInput, NotReady, ServiceError, echoed
from services.segments import ClientGone
from services.speech import SpeechJob, SpeechOptions

logger = logging.getLogger(__name__)

EVENTS_TAKEN = "describe, synthesize, synthesize-start, synthesize-chunk, synthesize-stop, ping"


class WyomingHandler(AsyncEventHandler):
    """A connection's state: the request being spoken (and those queued behind it), and the open stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: AppState,
        connection_id: str,
        forget: Callable[[WyomingHandler], None] | None = None,
    ) -> None:
        super().__init__(reader, writer)
        self.state = state
        self.id = connection_id
        self.forget = forget  # called once the connection has ended
        self.wire = Wire(writer, connection_id)
        self.work: asyncio.Task[None] | None = None  # the last request scheduled; each waits for the one before
        self.tasks: set[asyncio.Task[None]] = set()  # every request not yet spoken
        self.stream: StreamedSynthesis | None = None
        self.refused_stream = False  # a synthesize-start that got an error: its chunks are dropped, its stop answered
        self.requests = 0

    async def run(self) -> None:
        try:
            await super().run()  # its `finally` calls disconnect(): the requests are cancelled either way
        except (ConnectionError, OSError):  # a client that reset the connection has gone, as one that closed it
            logger.debug("wyoming %s: the client reset the connection", self.id)

    async def handle_event(self, event: Event) -> bool:
        """Answer one event; False ends the connection (the client is gone)."""
        try:
            try:
                await self._handle(event)
            except ServiceError as error:
                await self.wire.error(error)
            except Exception:  # a fault of ours: logged here, never a traceback on the wire
                logger.exception("wyoming %s: %s failed", self.id, event.type)
                await self.wire.error(ServiceError(f"the server failed to handle {event.type}; see its log"))
        except ClientGone:
            return False
        return True

    async def _handle(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.wire.send(await info(self._model()))
        elif Synthesize.is_type(kind):
            if self.stream is None and not self.refused_stream:
                await self._synthesize(event.data)
            # else: Home Assistant repeats a stream's whole text for servers that don't stream: not spoken twice
        elif SynthesizeStart.is_type(kind):
            await self._start(event.data)
        elif SynthesizeChunk.is_type(kind):
            text = text_of(event.data, kind)
            if self.stream is not None:
                await self.stream.push(text)
            elif not self.refused_stream:
                raise InvalidInput("synthesize-chunk outside a stream: send synthesize-start first")
        elif SynthesizeStop.is_type(kind):
            await self._stop()
        elif Ping.is_type(kind):
            await self.wire.send(Pong(text=event.data.get("text")))
        elif SelectProgram.is_type(kind):
            if event.data.get("name") != PROGRAM_NAME:
                raise InvalidInput(f"no program {echoed(event.data.get('name'))}; this server has {PROGRAM_NAME!r}")
        else:
            raise InvalidInput(f"unknown event type {echoed(kind)}; this server takes {EVENTS_TAKEN}")

    async def _synthesize(self, data: dict[str, object]) -> None:
        model = self._model()
        text = text_of(data, "synthesize")
        if not text.strip():
            raise InvalidInput("synthesize needs some text to speak")
        request = voice_request(data)
        voice = await voice_name(model, request)
        language = await language_for(model, request, text)
        job = SpeechJob(
            text, language, voice, SpeechOptions(seed=seed_of(data)), self._session_id(), family=FAMILY
        )  # fmt: skip
        self._schedule(lambda: speak_whole(self.wire, model.speech, job))

    async def _start(self, data: dict[str, object]) -> None:
        if self.stream is not None or self.refused_stream:
            raise InvalidInput("a stream is already open: send synthesize-stop before the next synthesize-start")
        try:
            model = self._model()
            request = voice_request(data)
            voice = await voice_name(model, request)
            await model.speech.check_voice(request.language or model.engine.languages[0], voice)
            how = StreamSettings(voice, request, SpeechOptions(seed=seed_of(data)))
        except ServiceError:
            self.refused_stream = True  # its chunks are dropped and its stop still answered (no client left waiting)
            raise
        self.stream = StreamedSynthesis(self._session_id(), model, self.state.settings, how, self.wire)
        self._schedule(self.stream.speak)

    async def _stop(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.stop()
        elif self.refused_stream:
            self.refused_stream = False
            await self.wire.send(SynthesizeStopped())
        else:
            raise InvalidInput("synthesize-stop outside a stream: send synthesize-start first")

    def _model(self) -> ModelServices:
        model = self.state.model
        if model is None or self.state.status != "ready":
            why = "is shutting down" if self.state.status == "draining" else "is loading its model"
            raise NotReady(f"the server {why}; try again shortly", retry_after_s=5)
        return model

    def _session_id(self) -> str:
        self.requests += 1
        return f"wy-{self.id}-{self.requests}"

    def _schedule(self, speak: Callable[[], Awaitable[None]]) -> None:
        """Speak after the requests before it, without holding up the reader."""
        previous = self.work

        async def in_turn() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                try:
                    await speak()
                except ServiceError as error:
                    await self.wire.error(error)
            except ClientGone:
                self.writer.close()  # the reader sees the end and cancels the rest
            except Exception:
                logger.exception("wyoming %s: a request failed", self.id)
                with contextlib.suppress(ClientGone):
                    await self.wire.error(ServiceError("the server failed to speak this; see its log"))

        self.work = task = asyncio.create_task(in_turn(), name=f"wyoming {self.id} request {self.requests}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def disconnect(self) -> None:
        """The client has gone (or the server stops): cancel what it asked for; its sessions record why."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self.forget is not None:
            self.forget(self)
