"""From a speech job to a registered stream: every check, the voice and the text plan before any slot."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from services.admission import AdmissionGate
from services.engine.latents import LatentValues, VoiceLatents
from services.engine.params import ChunkSchedule, GenerationParams, SamplingSettings
from services.engine.protocol import Engine
from services.errors import InvalidInput, UnsupportedLanguage, echoed
from services.peers import SessionDirectory
from services.sessions import SessionRegistry, StreamSession, new_session_id
from services.speech_stream import SpeechStream
from services.voices import VoiceService


@dataclass(frozen=True)
class GivenLatents:
    """A voice sent with the request as coqui's latents (any of their shapes), not yet checked."""

    gpt_cond_latent: LatentValues
    speaker_embedding: LatentValues


@dataclass(frozen=True)
class ReferenceAudio:
    """A voice cloned from an audio file on the server (`audio_file_path`): read only inside REFERENCE_AUDIO_DIR."""

    path: str


Voice = str | GivenLatents | ReferenceAudio
"""Whose voice a job speaks in: a saved voice id or built-in speaker name, latents, or a reference file."""


@dataclass(frozen=True)
class SpeechOptions:
    """How to speak: the settings of the API's GenerationOptions (models/generation.py), field for field, with the
    engine's defaults (coqui's); `generation_params` turns them into the engine's settings."""

    temperature: float = SamplingSettings.temperature
    top_p: float = SamplingSettings.top_p
    top_k: int = SamplingSettings.top_k
    repetition_penalty: float = SamplingSettings.repetition_penalty
    speed: float = GenerationParams.speed
    stream_chunk_size: int = ChunkSchedule.max_tokens
    enable_text_splitting: bool = True
    """Split the text into sentences (the engine's `plan`); not a generation parameter."""
    seed: int | None = None
    """None: a random one, reported with the stream."""


@dataclass(frozen=True)
class SpeechJob:
    """What to say, in whose voice and how: what every speech route hands the service."""

    text: str
    language: str
    voice: Voice
    options: SpeechOptions = field(default_factory=SpeechOptions)
    session_id: str | None = None
    """A client-proposed session id (already checked against the id pattern)."""
    owner: str | None = None
    """Who asks (an API key's id): only they, or an admin, may read or cancel the session."""
    family: str = "http"
    """The API it came through (StreamSession.family): /metrics and /health count sessions by it."""


@dataclass(frozen=True)
class SpeechLimits:
    """The server's settings that shape every stream."""

    max_text_length: int
    first_chunk_tokens: int
    max_audio_tokens: int | None = None


class SpeechService:
    """Checks a job, resolves its voice and plans its text, then hands out its stream (not yet admitted)."""

    def __init__(
        self,
        engine: Engine,
        voices: VoiceService,
        sessions: SessionRegistry,
        gate: AdmissionGate,
        limits: SpeechLimits,
        directory: SessionDirectory | None = None,
    ) -> None:
        self.engine = engine
        self.voices = voices
        self.sessions = sessions
        self.gate = gate
        self.limits = limits
        self.directory = directory  # other replicas' sessions: a client-chosen id must be new there too

    async def open(self, job: SpeechJob) -> SpeechStream:
        """A registered, queued stream; raises a ServiceError (holding nothing) if the job cannot be served.

        The caller then awaits `stream.admit()` for a slot and uses the stream with `async with`.
        """
        self._check_language(job.language)
        if len(job.text) > self.limits.max_text_length:
            raise InvalidInput(
                f"text has {len(job.text)} characters; MAX_TEXT_LENGTH is {self.limits.max_text_length}",
                max_text_length=self.limits.max_text_length,
            )
        if job.session_id is not None and self.directory is not None:
            await self.directory.ensure_unused_elsewhere(job.session_id, job.owner)
        started = time.perf_counter()
        voice, voice_name = await self._voice(job.voice)
        latents_s = time.perf_counter() - started
        sentences = await self.engine.plan(job.text, job.language, job.options.enable_text_splitting)
        seed = job.options.seed if job.options.seed is not None else secrets.randbits(63)
        params = generation_params(job.options, seed, self.limits)
        session = StreamSession(
            id=job.session_id or new_session_id(),
            voice=voice_name,
            language=job.language,
            characters=len(job.text),
            chunks_total=len(sentences),
            owner=job.owner,
            family=job.family,
        )
        session.add_timing("latents", latents_s)
        stream = SpeechStream(
            session,
            seed,
            lambda cancel: self.engine.synthesize(sentences, voice, params, cancel),
            self.gate,
            self.sessions,
        )
        self.sessions.register(stream)
        return stream

    async def check_voice(self, language: str, voice: Voice) -> None:
        """Raise the ServiceError `open` would for this language and voice, holding nothing."""
        self._check_language(language)
        await self._voice(voice)

    def _check_language(self, language: str) -> None:
        if language not in self.engine.languages:
            raise UnsupportedLanguage(
                f"this model does not speak {echoed(language)}; it speaks {', '.join(self.engine.languages)}"
            )

    async def _voice(self, voice: Voice) -> tuple[VoiceLatents, str]:
        if isinstance(voice, str):
            return await self.voices.resolve(voice), voice
        if isinstance(voice, ReferenceAudio):
            return await self.voices.clone_files([voice.path]), "(reference file)"
        return self.engine.normalize_latents(voice.gpt_cond_latent, voice.speaker_embedding), "(latents)"


def generation_params(options: SpeechOptions, seed: int, limits: SpeechLimits) -> GenerationParams:
    """The engine's settings for a job's options and seed: the one conversion from the API's settings to the
    engine's (all but `enable_text_splitting`, which goes to the engine's `plan`)."""
    return GenerationParams(
        sampling=SamplingSettings(
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            repetition_penalty=options.repetition_penalty,
            max_new_tokens=limits.max_audio_tokens,
        ),
        speed=options.speed,
        schedule=ChunkSchedule(
            first_tokens=min(limits.first_chunk_tokens, options.stream_chunk_size),
            max_tokens=options.stream_chunk_size,
        ),
        seed=seed,
    )
