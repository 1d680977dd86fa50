"""The output formats and sample rates the server can send: names only, no encoder (schemas import this)."""

from __future__ import annotations

from typing import Literal, get_args

from services.engine.pcm import OUTPUT_SAMPLE_RATE

OutputFormat = Literal["wav", "pcm", "mp3", "opus", "aac", "flac", "ulaw", "alaw"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
MEDIA_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "ulaw": "audio/basic",  # G.711 mu-law, one byte a sample, no header (RFC 2046's audio/basic)
    "alaw": "audio/x-alaw-basic",
}
TELEPHONY_FORMATS: tuple[str, ...] = ("ulaw", "alaw")
TELEPHONY_SAMPLE_RATE = 8000
"""What G.711 formats default to (telephone networks); other rates are taken when asked for."""
SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, OUTPUT_SAMPLE_RATE, 32000, 44100, 48000)
# Opus only encodes at these; every other format takes every rate above.
OPUS_SAMPLE_RATES: tuple[int, ...] = (8000, 12000, 16000, OUTPUT_SAMPLE_RATE, 48000)


def sample_rates_for(output_format: str) -> tuple[int, ...]:
    return OPUS_SAMPLE_RATES if output_format == "opus" else SAMPLE_RATES


def default_rate(output_format: str) -> int:
    """The sample rate a format is sent at when the request names none: 8 kHz for telephony, else XTTS's own."""
    return TELEPHONY_SAMPLE_RATE if output_format in TELEPHONY_FORMATS else OUTPUT_SAMPLE_RATE


def format_problem(output_format: str, sample_rate: int) -> str | None:
    """Why an output format/rate pair cannot be encoded, or None if it can."""
    if output_format not in MEDIA_TYPES:
        return f"output_format must be one of {', '.join(OUTPUT_FORMATS)}"
    if sample_rate not in SAMPLE_RATES:
        return f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}"
    if sample_rate not in sample_rates_for(output_format):
        return f"{output_format} supports sample rates {', '.join(map(str, sample_rates_for(output_format)))}"
    return None
