"""OpenAI's speech API: POST /v1/audio/speech and GET /v1/models, streaming like /tts_stream."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Request, Response

from api.deps import EngineDep, SettingsDep, SpeechDep
from api.disconnect import open_admitted
from api.responses import AudioStreamResponse, stream_headers
from models.inputs import OPENAI_VOICES, OpenAISpeechRequest
from services.encoders import AudioEncoder
from services.errors import ModelNotFound
from services.formats import MEDIA_TYPES
from services.language import detect_language
from services.speech import SpeechJob, SpeechOptions

router = APIRouter(prefix="/v1", tags=["openai"])
MODEL_IDS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "xtts-v2")
_CREATED = int(time.time())


@router.get("/models", summary="Models, as OpenAI lists them")
async def models() -> dict[str, object]:
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "xtts"} for model_id in MODEL_IDS
        ],
    }


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={200: {"content": {media_type: {} for media_type in MEDIA_TYPES.values()}}},
    summary="OpenAI-compatible speech, streamed as it is generated",
)
async def speech(
    body: OpenAISpeechRequest, request: Request, speech: SpeechDep, engine: EngineDep, settings: SettingsDep
) -> Response:
    """Errors come in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    if body.model not in MODEL_IDS:
        raise ModelNotFound(f"the model {body.model!r} does not exist; see /v1/models", param="model")
    encoder = AudioEncoder(body.response_format)
    language = body.language
    if language is None:
        language = await anyio.to_thread.run_sync(detect_language, body.input, settings.DEFAULT_LANGUAGE)
    builtin_names = sorted(engine.builtin_speakers)
    voice = _voice(body.voice, settings.openai_voice_map, settings.OPENAI_DEFAULT_VOICE, builtin_names)
    job = SpeechJob(body.input, language, voice, SpeechOptions(speed=body.speed))
    stream = await open_admitted(request, speech, job)
    headers = {**stream_headers(stream, encoder.sample_rate), "X-Language": language}
    return AudioStreamResponse(stream, encoder, headers)


def _voice(name: str, voice_map: dict[str, str], default: str, builtin_names: list[str]) -> str:
    """A mapped OpenAI voice name, or the name itself (a saved voice or built-in speaker)."""
    mapped = voice_map.get(name.lower())
    if mapped:
        return mapped
    if name.lower() in OPENAI_VOICES:
        fallback = default or next(iter(builtin_names), "")
        if fallback:
            return fallback
    return name
