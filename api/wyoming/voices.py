"""What Home Assistant sees of the voices (`info`), and what it asks for (a voice name, never a language)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from api.state import ModelServices
from services.errors import InvalidInput, VoiceNotFound, echoed
from services.language import detect_language
from services.voices import VoiceEntry

PROGRAM_NAME = "xtts"
VERSION = "1.0.0"  # the server's, as the HTTP API's OpenAPI document gives it
XTTS = Attribution(name="Coqui XTTS v2", url="https://github.com/idiap/coqui-ai-TTS")


@dataclass(frozen=True)
class VoiceRequest:
    """A request's `voice`: Home Assistant sends only `name` (and `speaker`, which XTTS voices don't have)."""

    name: str | None = None
    language: str | None = None


def voice_request(data: dict[str, Any]) -> VoiceRequest:
    """The `voice` of a synthesize or synthesize-start event's data (InvalidInput for one of the wrong shape)."""
    voice = data.get("voice")
    if voice is None:
        return VoiceRequest()
    if not isinstance(voice, dict):
        raise InvalidInput(f'voice must be an object like {{"name": "..."}}, not {echoed(voice)}')
    name, language = voice.get("name"), voice.get("language")
    for field, value in (("name", name), ("language", language)):
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"voice.{field} must be a string, not {echoed(value)}")
    return VoiceRequest(name or None, language or None)


def text_of(data: dict[str, Any], event_type: str) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise InvalidInput(f"{event_type} needs its text as a string, not {echoed(text)}")
    return text


def seed_of(data: dict[str, Any]) -> int | None:
    """An optional `seed` (not Wyoming's: for benchmarks and tests that compare runs; Home Assistant sends none)."""
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise InvalidInput(f"seed must be an integer from 0 to 2**63 - 1, not {echoed(seed)}")
    return seed


async def info(model: ModelServices) -> Info:
    """The program and its voices now: a voice saved or deleted over HTTP shows at the next `describe`."""
    languages = list(model.engine.languages)
    voices = [_voice(entry, languages) for entry in await model.voices.catalogue()]
    program = TtsProgram(
        name=PROGRAM_NAME, attribution=XTTS, installed=True, version=VERSION,
        description="Coqui XTTS v2: cloned voices, streamed as they are generated", voices=voices,
        supports_synthesize_streaming=True,
    )  # fmt: skip
    return Info(tts=[program])


def _voice(entry: VoiceEntry, languages: list[str]) -> TtsVoice:
    # Home Assistant lists a voice by its description (falling back to its name) under each of its languages.
    kind = "saved voice" if entry.source == "saved" else "built-in speaker"
    label = entry.name if entry.name == entry.voice_id else f"{entry.name} ({entry.voice_id})"
    return TtsVoice(
        name=entry.voice_id, attribution=XTTS, installed=True, version=None, description=f"{label}, {kind}",
        languages=languages,
    )  # fmt: skip


async def voice_name(model: ModelServices, request: VoiceRequest) -> str:
    """The voice asked for, or the first the catalogue lists (saved voices first, then built-in speakers)."""
    if request.name is not None:
        return request.name
    catalogue = await model.voices.catalogue()
    if not catalogue:
        raise VoiceNotFound("no voice was named and the server has none: save one (POST /clone_speaker)")
    return catalogue[0].voice_id


async def language_for(model: ModelServices, request: VoiceRequest, text: str) -> str:
    """The voice's language if the request gives one, else the text's (as /v1/audio/speech detects it), else the
    voice's first language when the detector is unsure."""
    if request.language is not None:
        return request.language
    first = model.engine.languages[0]
    return await anyio.to_thread.run_sync(detect_language, text, first)
