"""Run one request through an engine's one decode path and collect what it made (engine-layer tests)."""

from __future__ import annotations

import threading

from services.engine.latents import VoiceLatents
from services.engine.params import GenerationParams
from services.engine.protocol import Engine
from services.engine.text import Sentence


async def tokens_of(
    engine: Engine, sentences: list[Sentence], voice: VoiceLatents, params: GenerationParams
) -> list[int]:
    """The audio tokens a stream samples, every sentence in order."""
    stream = engine.synthesize(sentences, voice, params, threading.Event())
    async for _ in stream:
        pass
    await stream.wait_idle()
    return list(stream.audio_tokens)


async def chunks_of(
    engine: Engine, sentences: list[Sentence], voice: VoiceLatents, params: GenerationParams
) -> list[bytes]:
    """The PCM chunks of a stream read to its end."""
    stream = engine.synthesize(sentences, voice, params, threading.Event())
    chunks = [chunk async for chunk in stream]
    assert stream.complete
    return chunks
