"""Helpers every speech router shares: a body's voice and options as the service takes them, and a
whole utterance collected for routes that answer once it is spoken."""

from __future__ import annotations

from fastapi import Request

from api.disconnect import open_admitted, until_disconnected
from models.inputs import GenerationOptions, VoiceAndFormat
from services.speech import GivenLatents, SpeechJob, SpeechOptions, SpeechService
from services.speech_stream import SpeechStream


def voice_of(body: VoiceAndFormat) -> str | GivenLatents:
    """The voice a body names: a speaker id, or the latents it carries."""
    if body.speaker_id is not None:
        return body.speaker_id
    # the model's validator has made sure both are there
    assert body.gpt_cond_latent is not None and body.speaker_embedding is not None
    return GivenLatents(body.gpt_cond_latent, body.speaker_embedding)


def options_of(body: GenerationOptions, seed: int | None) -> SpeechOptions:
    """How to speak, as a body asks (`seed` passed apart: a socket derives one per sentence)."""
    return SpeechOptions(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        repetition_penalty=body.repetition_penalty,
        speed=body.speed,
        stream_chunk_size=body.stream_chunk_size,
        enable_text_splitting=body.enable_text_splitting,
        seed=seed,
    )



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
