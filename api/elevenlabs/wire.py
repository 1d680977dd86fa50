"""ElevenLabs' wire, shared by its HTTP routes and sockets: output formats, languages, voice settings, request
bodies and character alignments, named and cased as ElevenLabs' API reference and its clients (Pipecat's
ElevenLabsTTSService and ElevenLabsHttpTTSService, LiveKit's elevenlabs plugin) spell them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from models.inputs import Language, well_formed
from services.char_timings import CharTimings
from services.errors import InvalidInput, echoed
from services.formats import SAMPLE_RATES, OutputFormat

DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"
_OUTPUT_FORMAT = re.compile(r"(pcm|ulaw|alaw|mp3|opus|wav)_(\d{4,5})(?:_(\d{2,3}))?")


def output_format(value: str | None) -> tuple[OutputFormat, int]:
    """`pcm_24000`, `ulaw_8000`, `mp3_44100_128`, ... as (our format, sample rate). The bit rate of mp3 and opus
    is taken and not followed (ours are speech-tuned: 96 and 48 kbit/s)."""
    text = value or DEFAULT_OUTPUT_FORMAT
    match = _OUTPUT_FORMAT.fullmatch(text)
    rate = int(match.group(2)) if match else 0
    kind = match.group(1) if match else ""
    allowed = (8000,) if kind in ("ulaw", "alaw") else (48000,) if kind == "opus" else SAMPLE_RATES
    if match is None or rate not in allowed:
        raise InvalidInput(
            f"output_format {echoed(text)} is not one of pcm_<rate> ({', '.join(map(str, SAMPLE_RATES))}), "
            "ulaw_8000, alaw_8000, mp3_<rate>_<kbps>, opus_48000_<kbps> or wav_<rate>",
            param="output_format",
        )
    return _FORMATS[kind], rate


_FORMATS: dict[str, OutputFormat] = {
    "pcm": "pcm",
    "ulaw": "ulaw",
    "alaw": "alaw",
    "mp3": "mp3",
    "opus": "opus",
    "wav": "wav",
}


class VoiceSettings(BaseModel):
    """ElevenLabs' voice settings: `speed` is followed (XTTS's speed), the others are taken and have no effect."""

    model_config = ConfigDict(extra="ignore")

    speed: float | None = Field(None, ge=0.25, le=4.0, description="Speaking rate, XTTS's `speed` (1.0: as is).")
    stability: float | None = None
    similarity_boost: float | None = None
    style: float | None = None
    use_speaker_boost: bool | None = None


WellFormed = Annotated[str, AfterValidator(well_formed)]


class ElevenLabsSpeechRequest(BaseModel):
    """The body of POST /v1/text-to-speech/{voice_id}[/stream][/with-timestamps]: ElevenLabs' fields that XTTS can
    follow are followed (`text`, `language_code`, `voice_settings.speed`, `seed`); the rest (`model_id`,
    `previous_text`, `apply_text_normalization`, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    text: WellFormed = Field(min_length=1, description="Text to speak.", examples=["Hello world."])
    model_id: str | None = Field(None, description="Any ElevenLabs model id: all are the one XTTS model.")
    language_code: Language | None = Field(None, description="ISO 639-1; detected from the text when left out.")
    voice_settings: VoiceSettings | None = None
    seed: int | None = Field(None, ge=0, le=4294967295, description="Seed for reproducible speech (X-Seed).")


def alignment(timings: CharTimings) -> dict[str, list[str] | list[int]]:
    """The sockets' alignment: times in ms from the start of the message's audio."""
    return {"chars": timings.chars, "charStartTimesMs": timings.start_ms, "charDurationsMs": timings.duration_ms}


def http_alignment(timings: CharTimings, offset_s: float) -> dict[str, list[str] | list[float]]:
    """HTTP's with-timestamps alignment: seconds from the start of the whole audio."""
    return {
        "characters": timings.chars,
        "character_start_times_seconds": [round(offset_s + start / 1000, 3) for start in timings.start_ms],
        "character_end_times_seconds": [
            round(offset_s + (start + duration) / 1000, 3)
            for start, duration in zip(timings.start_ms, timings.duration_ms, strict=True)
        ],
    }
