"""Request and response bodies of xtts-api-server's API (daswer123/xtts-api-server), as its clients send them.

SillyTavern's "XTTSv2" provider sends the settings as strings once a slider has moved ("0.75", "50"):
pydantic's lax mode turns numeric strings into numbers, as upstream's models do.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.inputs import Language, Text

# Upstream's /languages: English name -> code, in its order (Chinese is "zh-cn").
LANGUAGE_NAMES = {
    "Arabic": "ar", "Brazilian Portuguese": "pt", "Chinese": "zh-cn", "Czech": "cs", "Dutch": "nl", "English": "en",
    "French": "fr", "German": "de", "Italian": "it", "Polish": "pl", "Russian": "ru", "Spanish": "es",
    "Turkish": "tr", "Japanese": "ja", "Korean": "ko", "Hungarian": "hu", "Hindi": "hi",
}  # fmt: skip


class TtsSettings(BaseModel):
    """The server-wide generation settings its clients set (upstream's defaults)."""

    temperature: float = Field(0.75, gt=0, le=5)
    speed: float = Field(1.0, ge=0.25, le=4.0)
    length_penalty: float = Field(1.0, ge=-10, le=10, description="Kept and reported; XTTS streaming ignores it.")
    repetition_penalty: float = Field(5.0, ge=1, le=50)
    top_p: float = Field(0.85, gt=0, le=1)
    top_k: int = Field(50, ge=0, le=1024, description="0 turns top-k off.")
    enable_text_splitting: bool = True
    stream_chunk_size: int = Field(100, ge=1, le=400, description="Largest streamed chunk, in GPT tokens.")


class TtsSettingsUpdate(BaseModel):
    """POST /set_tts_settings: upstream's clients send all eight fields; here any subset changes just those."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, gt=0, le=5)
    speed: float | None = Field(None, ge=0.25, le=4.0)
    length_penalty: float | None = Field(None, ge=-10, le=10)
    repetition_penalty: float | None = Field(None, ge=1, le=50)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1024)
    enable_text_splitting: bool | None = None
    stream_chunk_size: int | None = Field(None, ge=1, le=400)


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
