"""Speaking a Wyoming request: a whole text as one session (`synthesize`), or text streamed in pieces spoken sentence
by sentence as each is complete (`synthesize-start` ... `synthesize-stop`, through the socket API's Conversation)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from wyoming.tts import SynthesizeStopped

from api.state import ModelServices
from api.wyoming.voices import VoiceRequest, language_for
from api.wyoming.wire import Wire
from config import Settings
from services.conversation import Conversation, ConversationConfig, ConversationLimits
from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.errors import InvalidInput, ServiceError
from services.segments import CLIENT_GONE, ClientGone, Event
from services.speech import SpeechJob, SpeechOptions, SpeechService
from services.text_segmenter import TextSegmenter

FAMILY = "wyoming"  # the sessions' API family (/metrics, /health)
CONTEXT = "wyoming"  # a stream is one context of its conversation


async def speak_whole(wire: Wire, speech: SpeechService, job: SpeechJob) -> None:
    """`audio-start`, the chunks as the model makes them, one `audio-stop`. A ServiceError is raised (after the
    session recorded it) for the caller to send, which also closes audio it cut short."""
    stream = await speech.open(job)
    await stream.admit()  # a full server: Overloaded; it closes the stream itself when it fails or is cancelled
    async with stream:
        try:
            async for pcm in stream:
                started = time.perf_counter()
                await wire.audio_chunk(pcm)  # the first one opens the audio: after the model's first chunk
                stream.count_sent(len(pcm))
                stream.add_timing("send", time.perf_counter() - started)
        except ClientGone:
            stream.cancel(CLIENT_GONE)
            raise
    if not wire.audio_open:  # nothing was generated (cancelled before the first chunk): still one start, one stop
        await wire.audio_start()
    await wire.audio_stop()


@dataclass(frozen=True)
class StreamSettings:
    """How a stream is spoken: the voice and options, and the language when the request named one."""

    voice: str
    request: VoiceRequest
    options: SpeechOptions


class StreamedSynthesis:
    """One `synthesize-start` ... `synthesize-stop`. Its language is the request's, else the one detected in its
    first complete sentence (until then the text waits, cut by a segmenter of the voice's first language); from
    then on a Conversation speaks each sentence as soon as it is complete, one generating ahead of the one sent."""

    def __init__(
        self, stream_id: str, model: ModelServices, settings: Settings, how: StreamSettings, wire: Wire
    ) -> None:
        self.id = stream_id
        self.model = model
        self.how = how
        self.wire = wire
        self.limits = ConversationLimits(settings.MAX_TEXT_LENGTH, settings.WS_MAX_WAIT_SECONDS)
        first_language = how.request.language or model.engine.languages[0]
        self.probe = TextSegmenter(first_language, self.limits.max_sentence_chars, self.limits.max_wait_s)
        self.held = ""  # text that came before the language was known
        self.conversation: Conversation | None = None
        self._begun = asyncio.Event()  # the conversation exists, or the stream stopped without text
        if how.request.language is not None:
            self._begin(how.request.language)

    async def push(self, text: str) -> None:
        """A `synthesize-chunk`: any piece of text (Home Assistant sends the language model's, mid-word too)."""
        if len(text) > self.limits.max_text_length:
            raise InvalidInput(
                f"a synthesize-chunk has {len(text)} characters; MAX_TEXT_LENGTH is {self.limits.max_text_length}"
            )
        if self.conversation is not None:
            self.conversation.text(text, CONTEXT)
            return
        self.held += text
        if self.probe.push(text):  # the first sentence is complete: it decides the language
            self._begin(await language_for(self.model, self.how.request, self.held))

    async def stop(self) -> None:
        """`synthesize-stop`: speak what is left, then `synthesize-stopped`."""
        if self.conversation is None and self.held.strip():
            self._begin(await language_for(self.model, self.how.request, self.held))
        if self.conversation is not None:
            self.conversation.close()
        self._begun.set()

    def _begin(self, language: str) -> None:
        config = ConversationConfig(
            language, self.how.voice, self.how.options, "pcm", OUTPUT_SAMPLE_RATE, owner=None, family=FAMILY
        )
        self.conversation = Conversation(self.id, self.model.speech, config, self.limits, self._send)
        if self.held:
            self.conversation.text(self.held, CONTEXT)
            self.held = ""
        self._begun.set()

    async def speak(self) -> None:
        """Speak the sentences in order as they come, until `stop()`; then `synthesize-stopped`. A sentence that
        cannot be spoken (a full server) gets an `error` event and the next one goes on."""
        conversation: Conversation | None = None
        try:
            await self._begun.wait()
            conversation = self.conversation
            if conversation is not None:
                await conversation.run()
        except* ServiceError as errors:  # a stream that failed while sending its audio: the rest is not spoken
            error = errors.exceptions[0]
            assert isinstance(error, ServiceError)
            if conversation is not None:
                await conversation.stop(f"wyoming error: {error.code}")
            await self.wire.error(error)
        finally:  # also when the client left (the task is cancelled): every slot back
            if conversation is not None:
                await asyncio.shield(conversation.stop(CLIENT_GONE))  # the first reason recorded stays
        await self.wire.send(SynthesizeStopped())

    async def _send(self, item: Event | bytes | ServiceError) -> None:
        """The conversation's output as Wyoming events: each sentence its own audio-start/chunks/audio-stop."""
        if isinstance(item, bytes):
            await self.wire.audio_chunk(item)
        elif isinstance(item, ServiceError):
            await self.wire.error(item)
        elif item["type"] == "audio_start":
            await self.wire.audio_start()
        elif item["type"] == "audio_end":
            await self.wire.audio_stop()
        # `done` and `cleared` have no Wyoming event: synthesize-stopped ends the stream
