"""From a speech request to an admitted, running audio stream: every check before any model work."""

from __future__ import annotations

import asyncio
import logging
import time

from models.inputs import SpeechRequest
from services.admission import AdmissionGate
from services.errors import InvalidInput, ServiceError, UnsupportedLanguage
from services.gpt_sampler import SamplingSettings
from services.latents import VoiceLatents, normalize_latents
from services.sessions import SessionRegistry, StreamState
from services.synthesis import ChunkSchedule
from services.tts import AudioStream, GenerationParams, TTSEngine
from services.voices import VoiceService

logger = logging.getLogger(__name__)


class SpeechService:
    """Validates, resolves the voice, plans the text, takes a slot, then opens the stream."""

    def __init__(
        self,
        engine: TTSEngine,
        voices: VoiceService,
        sessions: SessionRegistry,
        gate: AdmissionGate,
        max_text_length: int,
        first_chunk_tokens: int,
        max_audio_tokens: int | None = None,
    ) -> None:
        self.engine = engine
        self.voices = voices
        self.sessions = sessions
        self.gate = gate
        self.max_text_length = max_text_length
        self.first_chunk_tokens = first_chunk_tokens
        self.max_audio_tokens = max_audio_tokens

    async def start(self, request: SpeechRequest) -> AudioStream:
        """An admitted stream; raises a ServiceError (and holds nothing) if the request cannot be served."""
        if request.language not in self.engine.languages:
            raise UnsupportedLanguage(
                f"this model does not speak {request.language!r}; it speaks {', '.join(self.engine.languages)}"
            )
        if len(request.text) > self.max_text_length:
            raise InvalidInput(
                f"text has {len(request.text)} characters; MAX_TEXT_LENGTH is {self.max_text_length}",
                max_text_length=self.max_text_length,
            )
        started = time.perf_counter()
        voice, voice_name = await self._voice(request)
        latents_s = time.perf_counter() - started
        sentences = await self.engine.plan(request.text, request.language, request.enable_text_splitting)
        session = self.sessions.create(request.session_id, voice_name, request.language, len(request.text))
        session.add_timing("latents", latents_s)
        try:
            session.add_timing("queue", await self.gate.acquire())
        except asyncio.CancelledError:
            self.sessions.finish(session, StreamState.CANCELLED, "client disconnected while queued")
            raise
        except ServiceError as error:
            self.sessions.finish(session, StreamState.FAILED, error.message)
            raise
        admitted_at = time.perf_counter()
        return self.engine.open_stream(
            sentences,
            voice,
            self._params(request),
            session,
            self.sessions,
            release=lambda: self.gate.release(time.perf_counter() - admitted_at),
        )

    async def _voice(self, request: SpeechRequest) -> tuple[VoiceLatents, str]:
        if request.speaker_id is not None:
            return await self.voices.resolve(request.speaker_id), request.speaker_id
        assert request.gpt_cond_latent is not None and request.speaker_embedding is not None
        latents = normalize_latents(
            request.gpt_cond_latent, request.speaker_embedding, self.engine.latent_dim, self.engine.embedding_dim
        )
        return latents.to(self.engine.device), "(latents)"

    def _params(self, request: SpeechRequest) -> GenerationParams:
        return GenerationParams(
            sampling=SamplingSettings(
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k,
                repetition_penalty=request.repetition_penalty,
                max_new_tokens=self.max_audio_tokens,
            ),
            speed=request.speed,
            schedule=ChunkSchedule(
                first_tokens=min(self.first_chunk_tokens, request.stream_chunk_size),
                max_tokens=request.stream_chunk_size,
            ),
            seed=request.seed,
        )
