"""Request models: every field documented for Swagger, every check that needs no model done here."""

from __future__ import annotations

import json
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from models.generation import GenerationOptions, IgnoredOptions, from_text, option
from services.engine.languages import XTTS_LANGUAGES
from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.errors import InvalidInput, clipped, echoed
from services.formats import OUTPUT_FORMATS, TELEPHONY_FORMATS, OutputFormat, default_rate, format_problem
from services.ids import ID_PATTERN

_LANGUAGE_ALIASES = {"zh": "zh-cn", "zh-hans": "zh-cn", "zh_cn": "zh-cn"}

# A saved voice's id or a proposed session id: checked once, here, where requests come in (422).
ClientId = Annotated[
    str,
    Field(pattern=ID_PATTERN, description="1-64 characters of A-Z, a-z, 0-9, '_' or '-'.", examples=["my-voice"]),
]


# Latents squeezed or not: [N, 1024], [1, N, 1024], flat N x 1024 (N frames, 32 from v2's cloning);
# [512], [1, 512], [512, 1], [1, 512, 1].
NestedFloats = list[float] | list[list[float]] | list[list[list[float]]]


def _normalise_language(value: str) -> str:
    code = value.strip().lower()
    code = _LANGUAGE_ALIASES.get(code, code)
    if code not in XTTS_LANGUAGES:
        raise ValueError(f"unsupported language {echoed(value)}; supported: {', '.join(XTTS_LANGUAGES)}")
    return code


def well_formed(value: str) -> str:
    """Text that UTF-8 can hold: JSON may carry lone surrogates ("\\ud800"), which no tokenizer, file or log takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"text is not well-formed Unicode (a lone surrogate at character {error.start})") from None
    return value


def _not_blank(value: str) -> str:
    well_formed(value)
    if not value.strip():
        raise ValueError("text is empty")
    return value


# Free text stored or echoed (names, descriptions, instructions).
Text = Annotated[str, AfterValidator(well_formed)]


Language = Annotated[
    str,
    AfterValidator(_normalise_language),
    Field(
        description="Language of the text (ISO code; `zh` means `zh-cn`).",
        examples=["en"],
        json_schema_extra={"enum": list(XTTS_LANGUAGES)},
    ),
]


class VoiceAndFormat(IgnoredOptions, GenerationOptions):
    """Whose voice, which language and output format, and every generation setting (strict JSON numbers): shared
    by /tts, /tts_stream and the WebSocket's config."""

    language: Language
    speaker_id: Text | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="A saved voice id or a built-in speaker name (see /saved_voices and /available_speakers).",
    )
    gpt_cond_latent: NestedFloats | None = Field(
        None,
        description="GPT conditioning latents, N x 1024 floats (N = 32 from /clone_speaker; 1-512 accepted).",
    )
    speaker_embedding: NestedFloats | None = Field(
        None, description="Speaker embedding, 512 floats (coqui's /clone_speaker output)."
    )
    audio_file_path: Text | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="A reference clip on the server to clone the voice from (the seed's clients send it): read only "
        "inside REFERENCE_AUDIO_DIR (relative to it, or absolute); without that setting, or outside it, 403.",
    )
    output_format: OutputFormat = Field(
        "wav",
        description="wav, pcm (16-bit little-endian mono), mp3, opus (in Ogg), aac (ADTS), flac, or G.711 for "
        "telephony: ulaw (mu-law) or alaw, a byte a sample, no header, at 8 kHz unless sample_rate says otherwise.",
    )
    sample_rate: int = Field(
        OUTPUT_SAMPLE_RATE,
        description=f"Output sample rate: 8000-48000 (XTTS makes {OUTPUT_SAMPLE_RATE}; ulaw and alaw default to 8000).",
    )

    @model_validator(mode="after")
    def _format_and_rate(self) -> Self:
        if self.output_format in TELEPHONY_FORMATS and "sample_rate" not in self.model_fields_set:
            self.sample_rate = default_rate(self.output_format)
        if problem := format_problem(self.output_format, self.sample_rate):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _one_voice(self) -> Self:
        has_latents = self.gpt_cond_latent is not None or self.speaker_embedding is not None
        if (self.speaker_id is not None) + has_latents + (self.audio_file_path is not None) > 1:
            raise ValueError(
                "give one of speaker_id, gpt_cond_latent with speaker_embedding, or audio_file_path, not several"
            )
        if has_latents and (self.gpt_cond_latent is None or self.speaker_embedding is None):
            raise ValueError("give both gpt_cond_latent and speaker_embedding")
        if self.speaker_id is None and not has_latents and self.audio_file_path is None:
            raise ValueError("give speaker_id, or both gpt_cond_latent and speaker_embedding")
        return self


class SpeechRequest(VoiceAndFormat):
    """Text to speak and whose voice: a `speaker_id`, or explicit latents as coqui's xtts-streaming-server sends."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"text": "Hello world.", "language": "en", "speaker_id": "my-voice"}]}
    )

    text: Annotated[str, AfterValidator(_not_blank)] = Field(
        description="Text to speak (at most MAX_TEXT_LENGTH characters).", examples=["Hello world."]
    )
    add_wav_header: bool = Field(
        True, description="/tts_stream only: start with a WAV header; false sends bare 16-bit PCM."
    )
    session_id: ClientId | None = Field(
        None, description="Propose the session id (else one is made; see /stream_status); a duplicate is 409."
    )

    @model_validator(mode="before")
    @classmethod
    def _embedded_body(cls, data: object) -> object:
        """`{"request": {...}, "options": {...}}`: FastAPI's embedded form of a route with two body models, as
        coqui's xtts-streaming-server test client posts it; its fields are this body's."""
        if isinstance(data, dict) and "request" in data and set(data) <= {"request", "options"}:
            request, options = data["request"], data.get("options") or {}
            if not isinstance(request, dict) or not isinstance(options, dict):
                raise ValueError('"request" and "options" must be JSON objects')
            return {**request, **options}
        return data

    @field_validator("stream_chunk_size", mode="before")
    @classmethod
    def _coquis_text(cls, value: object) -> object:
        """coqui's xtts-streaming-server declares it a string, and its clients send "20"."""
        return from_text(value)


# -- /v1/tts/ws messages ----------------------------------------------------------------------------------------


class SocketConfig(VoiceAndFormat):
    """The WebSocket's first message: the voice, language, output format and generation settings of /tts_stream
    (`output_format` defaults to pcm here: 16-bit mono, no header)."""

    type: Literal["config"]
    output_format: OutputFormat = Field(
        "pcm", description="pcm, wav, mp3, opus, aac, flac, ulaw or alaw; each segment whole."
    )
    timings: bool = Field(
        False,
        description="Send a `timings` event before each piece of audio: the characters heard in it, with their start "
        "times and durations in ms from that piece's start.",
    )


class SocketText(BaseModel):
    type: Literal["text"]
    text: Annotated[str, AfterValidator(well_formed)]
    context_id: ClientId | None = None


class SocketControl(BaseModel):
    type: Literal["flush", "clear"]
    context_id: ClientId | None = None


class SocketClose(BaseModel):
    type: Literal["close"]


SocketMessage = SocketConfig | SocketText | SocketControl | SocketClose
_SOCKET_MESSAGES = TypeAdapter(Annotated[SocketMessage, Field(discriminator="type")])


def parse_socket_message(raw: str) -> SocketMessage:
    """A client frame as a message; raises InvalidInput (malformed JSON, unknown type, bad fields)."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise InvalidInput(f"not JSON: {error}") from None
    if not isinstance(data, dict) or "type" not in data:
        raise InvalidInput('a message is a JSON object with a "type"')
    if data["type"] not in {"config", "text", "flush", "clear", "close"}:
        raise InvalidInput(f"unknown message type {echoed(data['type'])}; use config, text, flush, clear or close")
    try:
        return _SOCKET_MESSAGES.validate_python(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{clipped('.'.join(str(part) for part in problem['loc'][1:])) or 'message'}: {problem['msg']}"
            for problem in error.errors()[:5]
        )
        raise InvalidInput(f"bad {data['type']} message: {problems}") from None


class CloneOptions(BaseModel):
    """The `options` form field of /clone_speaker, as JSON (strict: JSON numbers and booleans)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    response_format: Literal["latents", "save"] = Field(
        "latents", description="`latents` returns {gpt_cond_latent, speaker_embedding}; `save` stores the voice."
    )
    save_id: ClientId | None = Field(None, description="Id to save under (required with `save`); " + ID_PATTERN)
    name: Text | None = Field(None, max_length=200, description="Display name (defaults to save_id).")
    description: Text = Field("", max_length=2000)
    overwrite: bool = Field(False, description="Replace a saved voice with the same id instead of answering 409.")
    gpt_cond_len: int = Field(6, ge=1, le=60, description="Seconds of audio used for the GPT conditioning latents.")
    gpt_cond_chunk_len: int = Field(6, ge=1, le=60, description="Chunk seconds averaged for the GPT latents.")
    max_ref_length: int = Field(30, ge=1, le=120, description="Seconds of each file decoded and used.")
    sound_norm_refs: bool = Field(False, description="Normalise each reference's loudness first.")
    librosa_trim_db: float | None = Field(None, gt=0, le=120, description="Trim silence quieter than this (dB).")

    @model_validator(mode="after")
    def _save_needs_id(self) -> CloneOptions:
        if self.response_format == "save" and not self.save_id:
            raise ValueError("response_format 'save' needs a save_id")
        if self.gpt_cond_chunk_len > self.gpt_cond_len:
            raise ValueError("gpt_cond_chunk_len must not exceed gpt_cond_len")
        return self


class SaveVoiceRequest(BaseModel):
    """A voice to save from latents (what /clone_speaker returned, or latents from coqui's server)."""

    gpt_cond_latent: NestedFloats = Field(description="N x 1024 floats (N = 32 from cloning, 1-512), squeezed or not.")
    speaker_embedding: NestedFloats = Field(description="512 floats, squeezed or not.")
    name: Text | None = Field(None, max_length=200)
    description: Text = Field("", max_length=2000)
    overwrite: bool = Field(False, description="Replace an existing voice with this id instead of answering 409.")


OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip


class OpenAISpeechRequest(BaseModel):
    """OpenAI's POST /v1/audio/speech body, plus an optional `language`."""

    model_config = ConfigDict(strict=True)

    model: str = Field("tts-1", description="Any id from /v1/models; all use the one XTTS model.")
    input: Annotated[str, AfterValidator(_not_blank)] = Field(description="Text to speak.")
    voice: Text = Field(
        min_length=1,
        max_length=256,
        description="A saved voice id, a built-in speaker, or an OpenAI voice name mapped by OPENAI_VOICE_MAP.",
    )
    response_format: OutputFormat = Field(
        "mp3",
        description=f"One of {', '.join(OUTPUT_FORMATS)}; pcm is 16-bit little-endian mono at 24 kHz; ulaw and "
        "alaw (G.711, for telephony) at 8 kHz.",
    )
    speed: float = option("speed")
    language: Language | None = Field(
        None, description="Not in OpenAI's API: the text's language; detected from the text when left out."
    )
    instructions: Text | None = Field(None, max_length=4096, description="Accepted and ignored (XTTS takes none).")
    seed: int | None = option(
        "seed", description="Not in OpenAI's API: seed for reproducible speech (the one used is in X-Seed)."
    )
    stream_format: Literal["audio", "sse"] = Field(
        "audio",
        description="`audio`: the file's bytes as they are made; `sse`: server-sent events, `speech.audio.delta` "
        "(base64 of the same bytes) then `speech.audio.done` (token usage). Any model may stream either.",
    )
