"""OpenAI's speech API: POST /v1/audio/speech (audio or server-sent events), GET /v1/models, and the voice and
model lists Open WebUI and Kokoro-FastAPI clients read (GET /v1/audio/voices, /v1/audio/models)."""

from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Depends, Request, Response

from api.deps import CallerDep, EngineDep, SettingsDep, SpeechDep, VoicesDep
from api.disconnect import open_admitted
from api.errors import OPENAI_ERROR_RESPONSES
from api.openai_sse import SpeechEventEncoder
from api.query import well_formed_query
from api.responses import AudioStreamResponse, StreamEncoder, stream_headers
from api.speech_jobs import options_of
from models.inputs import OPENAI_VOICES, OpenAISpeechRequest
from services.encoders import AudioEncoder
from services.errors import ModelNotFound, echoed
from services.formats import MEDIA_TYPES, default_rate
from services.language import detect_language
from services.speech import SpeechJob

router = APIRouter(
    prefix="/v1", tags=["openai"], responses=OPENAI_ERROR_RESPONSES, dependencies=[Depends(well_formed_query)]
)
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


@router.get("/audio/models", summary="Speech models, as Open WebUI reads them")
async def audio_models() -> dict[str, object]:
    return {"object": "list", "models": [{"id": model_id, "name": model_id} for model_id in MODEL_IDS]}


@router.get("/audio/voices", summary="Voices, as Open WebUI and Kokoro-FastAPI clients read them")
async def audio_voices(voices: VoicesDep, settings: SettingsDep, legacy: bool = False) -> dict[str, object]:
    """Saved voices, built-in speakers, then the OpenAI voice names OPENAI_VOICE_MAP maps: `{"voices": [{"id",
    "name"}]}` (Open WebUI's shape); `?legacy=true` gives Kokoro-FastAPI's older list of ids."""
    entries = [
        {"id": entry.voice_id, "name": entry.name, "object": "voice", "source": entry.source}
        for entry in await voices.catalogue()
    ]
    entries += [
        {"id": name, "name": name, "object": "voice", "source": "openai_voice_map"}
        for name in settings.openai_voice_map
    ]
    if legacy:
        return {"voices": [entry["id"] for entry in entries]}
    return {"object": "list", "voices": entries}


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={
        200: {
            "content": {
                **{media_type: {} for media_type in MEDIA_TYPES.values()},
                "text/event-stream": {"schema": {"type": "string"}},
            },
            "description": "The audio as it is made; with `stream_format: sse`, OpenAI's speech events.",
        }
    },
    summary="OpenAI-compatible speech, streamed as it is generated",
)
async def speech(
    body: OpenAISpeechRequest,
    request: Request,
    speech: SpeechDep,
    engine: EngineDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> Response:
    """Errors come in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""
    if body.model not in MODEL_IDS:
        raise ModelNotFound(f"the model {echoed(body.model)} does not exist; see /v1/models", param="model")
    encoder = AudioEncoder(body.response_format, default_rate(body.response_format))
    language = body.language
    if language is None:
        language = await anyio.to_thread.run_sync(detect_language, body.input, settings.DEFAULT_LANGUAGE)
    builtin_names = sorted(engine.builtin_speakers)
    voice = _voice(body.voice, settings.openai_voice_map, settings.OPENAI_DEFAULT_VOICE, builtin_names)
    job = SpeechJob(body.input, language, voice, options_of(body, body.seed), owner=caller.key_id)
    stream = await open_admitted(request, speech, job)
    headers = {**stream_headers(stream, encoder.sample_rate), "X-Language": language}
    wire: StreamEncoder = encoder
    if body.stream_format == "sse":
        wire = SpeechEventEncoder(encoder, stream.token_usage)
    return AudioStreamResponse(stream, wire, headers)


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
