"""What the serving layer needs of an engine: `TTSEngine` is one, tests' `FakeEngine` another."""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
import torch

from services.engine.cloning import CloneSettings
from services.engine.latents import LatentValues, VoiceLatents
from services.engine.params import GenerationParams
from services.engine.scheduler import BatchScheduler
from services.engine.synthesis_stream import SynthesisStream
from services.engine.text import Sentence


class ModelFacts(Protocol):
    """What /health and the logs say about the loaded model (`model_loader.LoadedModel` is one)."""

    @property
    def source(self) -> str: ...
    @property
    def dummy(self) -> bool: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def load_seconds(self) -> float: ...
    @property
    def gpt_precision(self) -> str: ...
    @property
    def vocoder_precision(self) -> str: ...
    @property
    def gpt_precision_reason(self) -> str: ...
    @property
    def cpu(self) -> str: ...
    @property
    def vocoder_backend(self) -> str: ...
    @property
    def vocoder_reason(self) -> str: ...
    @property
    def gpt_kernels(self) -> str: ...
    @property
    def gpt_kernels_reason(self) -> str: ...


class Engine(Protocol):
    """A TTS model behind one model thread: plans text, makes speech streams, clones voices."""

    @property
    def loaded(self) -> ModelFacts: ...

    device: torch.device
    latent_dim: int
    embedding_dim: int
    languages: list[str]
    builtin_speakers: dict[str, VoiceLatents]
    scheduler: BatchScheduler
    jobs_submitted: int

    def normalize_latents(self, gpt_cond_latent: LatentValues, speaker_embedding: LatentValues) -> VoiceLatents:
        """Latents in any of coqui's shapes, checked against this model and put on its device."""
        ...

    async def plan(self, text: str, language: str, split: bool) -> list[Sentence]:
        """The text as sentences of tokens (raises InvalidInput if nothing is left to speak)."""
        ...

    def synthesize(
        self,
        sentences: list[Sentence],
        voice: VoiceLatents,
        params: GenerationParams,
        cancel: threading.Event,
        background: bool = False,
    ) -> SynthesisStream:
        """The sentences' audio as 16-bit PCM chunks; stops once `cancel` is set; `background`: below live speech."""
        ...

    async def clone_voice(self, clips: list[np.ndarray], settings: CloneSettings) -> VoiceLatents:
        """Voice latents from reference clips (mono float at 22050 Hz)."""
        ...

    def warm_up(self) -> float:
        """One short generation so the first request pays no lazy start-up (blocks; returns seconds)."""
        ...

    def shutdown(self) -> None:
        """Stop the model thread and end every stream still running."""
        ...
