"""Speech endpoints: /tts_stream streams WAV as it is generated, /tts returns it whole."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from api.deps import SpeechDep
from api.disconnect import start_unless_disconnected
from api.responses import ERROR_RESPONSES, AudioStreamResponse
from models.inputs import SpeechRequest
from services.audio import wav_base64, wav_file, wav_header
from services.tts import AudioStream

router = APIRouter(tags=["speech"])

_WAV_RESPONSE = {"content": {"audio/wav": {}}, "description": "16-bit mono PCM WAV at 24 kHz."}


def _stream_headers(stream: AudioStream) -> dict[str, str]:
    return {"X-Session-ID": stream.session.id, "X-Seed": str(stream.seed), "X-Sample-Rate": "24000"}


@router.post(
    "/tts_stream",
    response_class=Response,
    responses={200: _WAV_RESPONSE, **ERROR_RESPONSES},
    summary="Stream speech as it is generated",
)
async def tts_stream(body: SpeechRequest, request: Request, speech: SpeechDep) -> Response:
    """Answers with a WAV header at once, then 16-bit mono PCM at 24 kHz chunk by chunk.

    The session id is in `X-Session-ID` (see /stream_status and /stream_cancel). Bad input is
    refused with a 4xx before any audio; a failure mid-stream ends the stream early.
    """
    stream = await start_unless_disconnected(request, speech.start(body))
    prefix = wav_header(None) if body.add_wav_header else b""
    media_type = "audio/wav" if body.add_wav_header else "audio/L16; rate=24000; channels=1"
    return AudioStreamResponse(stream, prefix, media_type, _stream_headers(stream))


@router.post(
    "/tts",
    response_class=Response,
    responses={
        200: {
            "content": {"audio/wav": {}, "application/json": {"schema": {"type": "string", "format": "base64"}}},
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
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The complete WAV. With `Accept: application/json`, or when coqui's latents form is sent without
    asking for audio, the WAV comes as a base64 JSON string, as coqui's xtts-streaming-server answers."""
    stream = await start_unless_disconnected(request, speech.start(body))
    pcm = await _collect(stream)
    headers = _stream_headers(stream)
    if _wants_base64(accept, explicit_latents=body.speaker_id is None):
        return JSONResponse(wav_base64(pcm), headers=headers)
    return Response(wav_file(pcm), media_type="audio/wav", headers=headers)


async def _collect(stream: AudioStream) -> bytes:
    failure: BaseException | None = None
    try:
        return b"".join([chunk async for chunk in stream])
    except BaseException as error:
        failure = error
        raise
    finally:
        await stream.close(failure)


def _wants_base64(accept: str | None, explicit_latents: bool) -> bool:
    accepted = (accept or "").lower()
    if "application/json" in accepted:
        return True
    # coqui's clients post latents with requests' default "*/*" and base64-decode the body.
    return explicit_latents and "audio/" not in accepted
