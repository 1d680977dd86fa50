"""Speech endpoints: /tts_stream streams audio as it is generated, /tts returns it whole."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response

from api.deps import CallerDep, SpeechDep
from api.disconnect import open_admitted
from api.errors import ERROR_RESPONSES
from api.query import well_formed_query
from api.responses import AudioStreamResponse, stream_headers
from api.speech_jobs import options_of, speak_whole, voice_of
from models.inputs import SpeechRequest
from services.encoders import AudioEncoder, encode_whole
from services.formats import MEDIA_TYPES
from services.speech import SpeechJob

router = APIRouter(tags=["speech"], responses=ERROR_RESPONSES, dependencies=[Depends(well_formed_query)])

_AUDIO_CONTENT: dict[str, dict[str, Any]] = {media_type: {} for media_type in MEDIA_TYPES.values()}
_WAV_RESPONSE = {"content": _AUDIO_CONTENT, "description": "WAV (16-bit mono, 24 kHz) or the output_format asked for."}


def speech_job(body: SpeechRequest, owner: str | None) -> SpeechJob:
    """What the speech service needs of a /tts or /tts_stream body."""
    return SpeechJob(body.text, body.language, voice_of(body), options_of(body, body.seed), body.session_id, owner)


@router.post(
    "/tts_stream",
    response_class=Response,
    responses={200: _WAV_RESPONSE, **ERROR_RESPONSES},
    summary="Stream speech as it is generated",
)
async def tts_stream(body: SpeechRequest, request: Request, speech: SpeechDep, caller: CallerDep) -> Response:
    """Answers with a WAV header at once, then 16-bit mono PCM at 24 kHz chunk by chunk
    (or MP3, Opus, AAC, FLAC, raw PCM, encoded as it goes, with `output_format`).

    The session id is in `X-Session-ID` (see /stream_status and /stream_cancel). Bad input is
    refused with a 4xx before any audio; a failure mid-stream ends the stream early.
    """
    output_format = "pcm" if body.output_format == "wav" and not body.add_wav_header else body.output_format
    encoder = AudioEncoder(output_format, body.sample_rate)
    stream = await open_admitted(request, speech, speech_job(body, caller.key_id))
    return AudioStreamResponse(stream, encoder, stream_headers(stream, body.sample_rate))


@router.post(
    "/tts",
    response_class=Response,
    responses={
        200: {
            "content": {**_AUDIO_CONTENT, "application/json": {"schema": {"type": "string", "format": "base64"}}},
            "description": "The whole WAV; or, for coqui xtts-streaming-server clients, its base64 as a JSON string.",
        },
        **ERROR_RESPONSES,
    },
    summary="Synthesise the whole text, then answer",
)
async def tts(
    body: SpeechRequest,
    request: Request,
    speech: SpeechDep,
    caller: CallerDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The complete WAV. With `Accept: application/json`, or when coqui's latents form is sent without
    asking for audio, the WAV comes as a base64 JSON string, as coqui's xtts-streaming-server answers."""
    stream, pcm = await speak_whole(request, speech, speech_job(body, caller.key_id))
    headers = stream_headers(stream, body.sample_rate)
    audio = await anyio.to_thread.run_sync(encode_whole, pcm, body.output_format, body.sample_rate)
    if body.output_format == "wav" and _wants_base64(accept, explicit_latents=body.speaker_id is None):
        return JSONResponse(base64.b64encode(audio).decode("ascii"), headers=headers)
    return Response(audio, media_type=MEDIA_TYPES[body.output_format], headers=headers)


def _wants_base64(accept: str | None, explicit_latents: bool) -> bool:
    accepted = (accept or "").lower()
    if "application/json" in accepted:
        return True
    # coqui's clients post latents with requests' default "*/*" and base64-decode the body.
    return explicit_latents and "audio/" not in accepted
