"""Request and response bodies of xtts-api-server's API (daswer123/xtts-api-server), as its clients send them.

SillyTavern's "XTTSv2" provider sends the settings as strings once a slider has moved ("0.75", "50"): plain decimal
text is taken as the number (`TextValues`), as upstream's lax pydantic models do; "1_000" and `true` for a number
are not.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.generation import TextValues, all_optional, option
from models.inputs import Language, Text

# Upstream's /languages: English name -> code, in its order (Chinese is "zh-cn").
LANGUAGE_NAMES = {
    "Arabic": "ar", "Brazilian Portuguese": "pt", "Chinese": "zh-cn", "Czech": "cs", "Dutch": "nl", "English": "en",
    "French": "fr", "German": "de", "Italian": "it", "Polish": "pl", "Russian": "ru", "Spanish": "es",
    "Turkish": "tr", "Japanese": "ja", "Korean": "ko", "Hungarian": "hu", "Hindi": "hi",
}  # fmt: skip


# Upstream's names, order and defaults; the rest of each setting (bounds, description) is models/generation.py's.
class TtsSettings(TextValues):
    """The server-wide generation settings its clients set, with upstream's defaults (chunks of up to 100 tokens
    where coqui's are 20)."""

    temperature: float = option("temperature")
    speed: float = option("speed")
    length_penalty: float = option("length_penalty", description="Kept and reported; XTTS streaming ignores it.")
    repetition_penalty: float = option("repetition_penalty")
    top_p: float = option("top_p")
    top_k: int = option("top_k")
    enable_text_splitting: bool = option("enable_text_splitting")
    stream_chunk_size: int = option("stream_chunk_size", default=100)


# TtsSettings' fields, each optional (None: unchanged); mypy cannot follow a base class made at import time.
class TtsSettingsUpdate(all_optional(TtsSettings, "TtsSettingsUpdate")):  # type: ignore[misc]
    """POST /set_tts_settings: upstream's clients send all eight fields; here any subset changes just those."""

    model_config = ConfigDict(extra="ignore")


class SynthesisRequest(BaseModel):
    """POST /tts_to_audio/: what to say, the voice (`speaker_wav`: a saved voice or built-in speaker name,
    `.wav` optional) and the language code."""

    text: Text = Field(min_length=1, examples=["Hello world."])
    speaker_wav: Text = Field(min_length=1, max_length=256, examples=["my-voice"])
    language: Language


class Speaker(BaseModel):
    """One entry of GET /speakers, as SillyTavern reads it."""

    name: str
    voice_id: str
    preview_url: str
