"""Run one request through an engine's one decode path and collect what it made (engine-layer tests)."""

from __future__ import annotations

import threading

import torch

from services.engine.latents import VoiceLatents
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.protocol import Engine
from services.engine.text import Sentence
from services.engine.tts import TTSEngine


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


def coquis_tokens(
    engine: TTSEngine, sentences: list[Sentence], voice: VoiceLatents, sampling: SamplingSettings, seed: int
) -> list[int]:
    """The tokens coqui's own `GPT.generate` samples for each sentence in turn, from torch's global generator seeded
    once (as a stream carries its generator from sentence to sentence); on the model thread."""

    def generate() -> list[int]:
        torch.manual_seed(seed)
        expected: list[int] = []
        with torch.inference_mode():
            for sentence in sentences:
                expected += engine.model.gpt.generate(
                    cond_latents=voice.gpt_cond_latent, text_inputs=sentence.tokens, do_sample=True,
                    top_p=sampling.top_p, top_k=sampling.top_k, temperature=sampling.temperature,
                    repetition_penalty=sampling.repetition_penalty, max_new_tokens=sampling.max_new_tokens,
                    num_return_sequences=1, num_beams=1, length_penalty=1.0,
                )[0].tolist()  # fmt: skip
        return expected

    return engine.submit(generate).result()
