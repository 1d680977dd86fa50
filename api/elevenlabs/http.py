"""ElevenLabs' HTTP speech API: POST /v1/text-to-speech/{voice_id} and /stream (the audio as it is made), their
/with-timestamps forms (JSON with character timings), and GET /v1/voices in ElevenLabs' shape. What Pipecat's
ElevenLabsHttpTTSService and LiveKit's elevenlabs plugin call when pointed at this server. Errors come in
ElevenLabs' shape, `{"detail": {"status", "message"}}` (api/errors.py)."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from api.deps import CallerDep, SettingsDep, SpeechDep, VoicesDep
from api.disconnect import open_admitted
from api.elevenlabs.wire import ElevenLabsSpeechRequest, http_alignment, output_format
from api.errors import ELEVENLABS_ERROR_RESPONSES
from api.query import well_formed_query
from api.responses import AudioStreamResponse, stream_headers
from api.speech_jobs import speak_whole
from config import Settings
from services.char_timings import CharTimeline, SpeakingRate, spread
from services.encoders import AudioEncoder, encode_whole
from services.engine.pcm import pcm_seconds
from services.formats import MEDIA_TYPES
from services.language import detect_language
from services.speech import SpeechJob, SpeechOptions

router = APIRouter(
    prefix="/v1", tags=["elevenlabs"], responses=ELEVENLABS_ERROR_RESPONSES, dependencies=[Depends(well_formed_query)]
)

VoiceId = Annotated[str, Path(min_length=1, max_length=256, description="A saved voice id or a built-in speaker.")]
_AUDIO: dict[int | str, dict[str, Any]] = {
    200: {"content": {media_type: {} for media_type in MEDIA_TYPES.values()}, "description": "The audio."}
}


async def _job(body: ElevenLabsSpeechRequest, voice_id: str, settings: Settings, caller_key: str | None) -> SpeechJob:
    language = body.language_code
    if language is None:
        language = await anyio.to_thread.run_sync(detect_language, body.text, settings.DEFAULT_LANGUAGE)
    speed = body.voice_settings.speed if body.voice_settings and body.voice_settings.speed else 1.0
    options = SpeechOptions(speed=speed, seed=body.seed)
    return SpeechJob(body.text, language, voice_id, options, owner=caller_key, family="elevenlabs")


@router.post("/text-to-speech/{voice_id}", response_class=Response, responses=_AUDIO, summary="ElevenLabs' speech")
@router.post("/text-to-speech/{voice_id}/stream", response_class=Response, responses=_AUDIO, include_in_schema=False)
async def speech(
    voice_id: VoiceId,
    body: ElevenLabsSpeechRequest,
    request: Request,
    speech: SpeechDep,
    settings: SettingsDep,
    caller: CallerDep,
    output_format_: Annotated[str | None, Query(alias="output_format")] = None,
) -> Response:
    """The audio, streamed as it is made (`/stream` is the same route under ElevenLabs' streaming name)."""
    audio_format, sample_rate = output_format(output_format_)
    encoder = AudioEncoder(audio_format, sample_rate)
    stream = await open_admitted(request, speech, await _job(body, voice_id, settings, caller.key_id))
    return AudioStreamResponse(stream, encoder, stream_headers(stream, sample_rate))


@router.post("/text-to-speech/{voice_id}/with-timestamps", summary="ElevenLabs' speech with character timings")
async def speech_with_timestamps(
    voice_id: VoiceId,
    body: ElevenLabsSpeechRequest,
    request: Request,
    speech: SpeechDep,
    settings: SettingsDep,
    caller: CallerDep,
    output_format_: Annotated[str | None, Query(alias="output_format")] = None,
) -> JSONResponse:
    """`{"audio_base64", "alignment", "normalized_alignment"}` once all of it is spoken; the alignment gives every
    character of `text` its start and end in seconds (spread over the audio by weight: see the README)."""
    audio_format, sample_rate = output_format(output_format_)
    stream, pcm = await speak_whole(request, speech, await _job(body, voice_id, settings, caller.key_id))
    audio = await anyio.to_thread.run_sync(encode_whole, pcm, audio_format, sample_rate)
    timed = http_alignment(spread(body.text, 0.0, pcm_seconds(len(pcm))), 0.0)
    encoded = base64.b64encode(audio).decode("ascii")
    content = {"audio_base64": encoded, "alignment": timed, "normalized_alignment": timed}
    return JSONResponse(content, headers=stream_headers(stream, sample_rate))


@router.post(
    "/text-to-speech/{voice_id}/stream/with-timestamps",
    response_class=Response,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One JSON object a line."}},
    summary="ElevenLabs' streamed speech with character timings",
)
async def stream_with_timestamps(
    voice_id: VoiceId,
    body: ElevenLabsSpeechRequest,
    request: Request,
    speech: SpeechDep,
    settings: SettingsDep,
    caller: CallerDep,
    output_format_: Annotated[str | None, Query(alias="output_format")] = None,
) -> Response:
    """One JSON object a line as the audio is made: `{"audio_base64", "alignment", "normalized_alignment"}`, the
    characters heard in that piece with their start and end in seconds from the start of the whole audio."""
    audio_format, sample_rate = output_format(output_format_)
    job = await _job(body, voice_id, settings, caller.key_id)
    encoder = TimestampedEncoder(AudioEncoder(audio_format, sample_rate), CharTimeline(body.text, SpeakingRate(),
                                                                                       job.options.speed))  # fmt: skip
    stream = await open_admitted(request, speech, job)
    return AudioStreamResponse(stream, encoder, stream_headers(stream, sample_rate))


class TimestampedEncoder:
    """Wraps an AudioEncoder: each piece of audio goes out as a JSON line with the characters heard in it."""

    media_type = "application/x-ndjson"

    def __init__(self, audio: AudioEncoder, timeline: CharTimeline) -> None:
        self.audio = audio
        self.timeline = timeline
        self._offset_s = 0.0  # where the next line's characters are timed from
        self._prefix = b""

    @property
    def needs_thread(self) -> bool:
        return self.audio.needs_thread

    def start(self) -> bytes:
        self._prefix = self.audio.start()  # a WAV header goes out with the first piece
        return b""

    def encode(self, pcm: bytes) -> bytes:
        return self._line(*self.timeline.take(pcm))

    def finish(self) -> bytes:
        pcm, timings = self.timeline.finish()
        return self._line(pcm, timings, finishing=True)

    def _line(self, pcm: bytes, timings: Any, finishing: bool = False) -> bytes:
        data = self._prefix + (self.audio.encode(pcm) if pcm else b"")
        if finishing:  # the encoder is flushed only after the held-back audio went in (mp3: EOFError otherwise)
            data += self.audio.finish()
        self._prefix = b""
        if not data and timings is None:
            return b""
        line: dict[str, object] = {"audio_base64": base64.b64encode(data).decode("ascii")}
        if timings is not None:
            line["alignment"] = line["normalized_alignment"] = http_alignment(timings, self._offset_s)
            self._offset_s += timings.end_ms / 1000
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"


@router.get("/voices", summary="Voices, in ElevenLabs' shape")
async def voices(voices: VoicesDep) -> dict[str, object]:
    """`{"voices": [{"voice_id", "name", "category", ...}]}`: saved voices (`cloned`), then built-in speakers
    (`premade`), as LiveKit's and ElevenLabs' clients read them."""
    return {
        "voices": [
            {
                "voice_id": entry.voice_id,
                "name": entry.name,
                "category": "cloned" if entry.source == "saved" else "premade",
                "labels": {},
                "description": None,
                "preview_url": None,
                "settings": None,
            }
            for entry in await voices.catalogue()
        ],
        "has_more": False,
        "total_count": None,
        "next_page_token": None,
    }
