"""xtts-api-server's API (daswer123/xtts-api-server), under /xtts-api so it cannot collide with coqui's routes.

SillyTavern's "XTTSv2" TTS provider (provider URL `http://host:port/xtts-api`) calls GET /speakers,
POST /set_tts_settings, POST /tts_to_audio/ and, in streaming mode, points an <audio> element at
GET /tts_stream/?text=...&speaker_wav=...&language=...; it plays each voice's `preview_url` (/sample).
`speaker_wav` names a saved voice or built-in speaker (a trailing `.wav` is ignored); this server never
reads a file path from a request. Errors keep upstream's `detail` key next to ours.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from api.deps import CallerDep, SpeechDep, VoicesDep, XttsApiDep
from api.disconnect import open_admitted
from api.errors import XTTS_API_ERROR_RESPONSES
from api.middleware.api_keys import Caller
from api.query import well_formed_query
from api.responses import AudioStreamResponse, stream_headers
from api.speech_jobs import options_of, speak_whole
from api.state import XttsApiState
from models.inputs import Language, Text
from models.xtts_api import LANGUAGE_NAMES, Speaker, SynthesisRequest, TtsSettings, TtsSettingsUpdate
from services.encoders import AudioEncoder, encode_whole
from services.speech import SpeechJob, SpeechOptions

PREFIX = "/xtts-api"
# Its clients build query strings by hand (SillyTavern's <audio src>): a malformed one is 422, not guessed at.
router = APIRouter(
    prefix=PREFIX,
    tags=["xtts-api-server"],
    responses=XTTS_API_ERROR_RESPONSES,
    dependencies=[Depends(well_formed_query)],
)

PREVIEW_TEXT = "Hello! This is how my voice sounds."
_WAV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"audio/wav": {}}, "description": "16-bit mono WAV at 24 kHz."}
}


def _voice_id(speaker_wav: str) -> str:
    name = speaker_wav.strip()
    return name[:-4] if name.lower().endswith(".wav") else name


async def _job(text: str, speaker_wav: str, language: str, state: XttsApiState, caller: Caller) -> SpeechJob:
    options = options_of(await state.settings_for(caller.key_id), seed=None)
    return SpeechJob(text, language, _voice_id(speaker_wav), options, owner=caller.key_id)


@router.get("/speakers_list", summary="Voice names")
async def speakers_list(voices: VoicesDep) -> list[str]:
    return [entry.voice_id for entry in await voices.catalogue()]


@router.get("/speakers", summary="Voices with a preview URL, as SillyTavern lists them")
async def speakers(request: Request, voices: VoicesDep) -> list[Speaker]:
    return [
        Speaker(
            name=entry.voice_id,
            voice_id=entry.voice_id,
            preview_url=str(request.url_for("xtts_api_sample", file_name=quote(f"{entry.voice_id}.wav"))),
        )
        for entry in await voices.catalogue()
    ]


@router.get("/languages", summary="Languages, English name to code")
async def languages() -> dict[str, dict[str, str]]:
    return {"languages": LANGUAGE_NAMES}


@router.get("/get_tts_settings", summary="The server-wide generation settings")
async def get_tts_settings(state: XttsApiDep, caller: CallerDep) -> TtsSettings:
    return await state.settings_for(caller.key_id)


@router.post("/set_tts_settings", summary="Change the server-wide generation settings")
async def set_tts_settings(update: TtsSettingsUpdate, state: XttsApiDep, caller: CallerDep) -> dict[str, str]:
    """They apply to this API's speech routes (/tts_to_audio/, /tts_stream), not to coqui's or OpenAI's; with API
    keys on, to the calling key's requests only. Kept beside the voices: every replica applies them, and they
    survive a restart."""
    await state.change_settings(caller.key_id, update.model_dump(exclude_none=True))
    return {"message": "Settings successfully applied"}


@router.post("/tts_to_audio/", response_class=Response, responses=_WAV, summary="Speak, answer the whole WAV")
@router.post("/tts_to_audio", response_class=Response, include_in_schema=False)
async def tts_to_audio(
    body: SynthesisRequest, request: Request, speech: SpeechDep, state: XttsApiDep, caller: CallerDep
) -> Response:
    job = await _job(body.text, body.speaker_wav, body.language, state, caller)
    stream, pcm = await speak_whole(request, speech, job)
    audio = await anyio.to_thread.run_sync(encode_whole, pcm, "wav", 24000)
    headers = {**stream_headers(stream, 24000), "Content-Disposition": 'attachment; filename="output.wav"'}
    return Response(audio, media_type="audio/wav", headers=headers)


@router.get("/tts_stream", response_class=Response, responses=_WAV, summary="Stream speech (GET, for <audio src>)")
@router.get("/tts_stream/", response_class=Response, include_in_schema=False)
async def tts_stream(
    request: Request,
    speech: SpeechDep,
    state: XttsApiDep,
    caller: CallerDep,
    text: Annotated[Text, Query(min_length=1)],
    speaker_wav: Annotated[Text, Query(min_length=1, max_length=256)],
    language: Annotated[Language, Query()],
) -> Response:
    """A WAV header at once, then 16-bit PCM as it is made: a browser can play it from `<audio src>`."""
    stream = await open_admitted(request, speech, await _job(text, speaker_wav, language, state, caller))
    return AudioStreamResponse(stream, AudioEncoder("wav"), stream_headers(stream, 24000))


@router.get(
    "/sample/{file_name:path}",
    response_class=Response,
    responses=_WAV,
    summary="A voice's preview",
    name="xtts_api_sample",
)
async def sample(
    file_name: str, request: Request, speech: SpeechDep, voices: VoicesDep, state: XttsApiDep, caller: CallerDep
) -> Response:
    """A short sentence in the voice, made on first request (through the queue like any speech) and kept."""
    voice_id = _voice_id(file_name)
    await voices.resolve(voice_id)  # 404 for a voice that is gone, even with its preview kept
    audio = state.previews.get(voice_id)
    if audio is None:
        job = SpeechJob(PREVIEW_TEXT, "en", voice_id, SpeechOptions(seed=0), owner=caller.key_id)
        _, pcm = await speak_whole(request, speech, job)
        audio = state.previews[voice_id] = await anyio.to_thread.run_sync(encode_whole, pcm, "wav", 24000)
    return Response(audio, media_type="audio/wav")
