"""Who speaks a job's sentence: this server's engine (`LocalSpeaker`), or, in a cluster, any replica's.

The runner (`runner.py`) owns the job's order, files and store; a speaker only turns one sentence into PCM. So a
cluster can spread a job's sentences over its replicas by giving the runner a speaker that sends each sentence to
a replica (`cluster/`), and nothing else changes.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from services.engine.protocol import Engine
from services.engine.stream import Preempted
from services.jobs.store import SentenceText
from services.speech import SpeechLimits, SpeechOptions, generation_params
from services.voices import VoiceService


def sentence_seed(request: dict[str, Any], sentence: SentenceText) -> int:
    """Sentence n of a job is spoken with the job's seed + n: its audio depends on nothing else."""
    seed: int = (request["seed"] + sentence.index) % 2**63
    return seed


class SentenceSpeaker(Protocol):
    async def speak(self, request: dict[str, Any], sentence: SentenceText, cancel: threading.Event) -> bytes | None:
        """The sentence's 16-bit PCM (24 kHz mono); None once `cancel` is set. A ServiceError is the job's fault
        (its voice is gone, its text cannot be spoken): the runner fails the job with its message."""
        ...


class LocalSpeaker:
    """This server's engine, as a background request below live speech (the engine's plan.py)."""

    def __init__(self, engine: Engine, voices: VoiceService, limits: SpeechLimits) -> None:
        self.engine = engine
        self.voices = voices
        self.limits = limits

    async def speak(self, request: dict[str, Any], sentence: SentenceText, cancel: threading.Event) -> bytes | None:
        voice = await self.voices.resolve(request["voice"])
        planned = await self.engine.plan(sentence.text, request["language"], False)
        params = generation_params(SpeechOptions(**request["options"]), sentence_seed(request, sentence), self.limits)
        while not cancel.is_set():
            pieces: list[bytes] = []
            stream = self.engine.synthesize(planned, voice, params, cancel, background=True)
            try:
                async for chunk in stream:
                    pieces.append(chunk)
            except Preempted:  # a live stream took the row (the scheduler counts it): start over, same seed, same audio
                continue
            finally:
                await stream.wait_idle()
            return b"".join(pieces) if stream.complete and not cancel.is_set() else None
        return None
