"""Helpers every speech router shares: a body's voice and options as the service takes them, and a
whole utterance collected for routes that answer once it is spoken."""

from __future__ import annotations

from dataclasses import fields

from fastapi import Request
from pydantic import BaseModel

from api.disconnect import open_admitted, until_disconnected
from models.inputs import VoiceAndFormat
from services.speech import GivenLatents, ReferenceAudio, SpeechJob, SpeechOptions, SpeechService, Voice
from services.speech_stream import SpeechStream


def voice_of(body: VoiceAndFormat) -> Voice:
    """The voice a body names: a speaker id, the latents it carries, or a reference file on the server."""
    if body.speaker_id is not None:
        return body.speaker_id
    if body.audio_file_path is not None:
        return ReferenceAudio(body.audio_file_path)
    # the model's validator has made sure both are there
    assert body.gpt_cond_latent is not None and body.speaker_embedding is not None
    return GivenLatents(body.gpt_cond_latent, body.speaker_embedding)


_OPTION_NAMES = tuple(option.name for option in fields(SpeechOptions))


def options_of(body: BaseModel, seed: int | None) -> SpeechOptions:
    """How to speak, as a body of any API family asks: each generation setting it has (named as in
    GenerationOptions), the defaults for those it lacks; `seed` passed apart (a socket derives one per sentence)."""
    given = {name: getattr(body, name) for name in _OPTION_NAMES if name in type(body).model_fields}
    return SpeechOptions(**{**given, "seed": seed})


async def speak_whole(request: Request, speech: SpeechService, job: SpeechJob) -> tuple[SpeechStream, bytes]:
    """All of a job's 16-bit PCM, once it is spoken; stops (and raises ClientDisconnected) if the client leaves."""
    stream = await open_admitted(request, speech, job)
    async with stream:
        pcm = await until_disconnected(
            request, _collect(stream), on_disconnect=lambda: stream.cancel("client disconnected")
        )
    return stream, pcm


async def _collect(stream: SpeechStream) -> bytes:
    return b"".join([chunk async for chunk in stream])
