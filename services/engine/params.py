"""How to speak, as the engine takes it: sampling knobs, the chunk schedule, speed and seed.

The one definition of these settings below the API: every API family's options map onto
`GenerationParams` (see `services/speech.py`), and the decoder reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingSettings:
    """XTTS's sampling knobs; defaults are coqui's (XTTS v2's published config)."""

    temperature: float = 0.75
    top_p: float = 0.85
    top_k: int = 50
    repetition_penalty: float = 5.0
    # Benchmarks pin the token count: random weights rarely sample the stop token.
    min_new_tokens: int = 0
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class ChunkSchedule:
    """Chunk sizes in GPT tokens: a short first chunk for a fast start, then doubling up to `max_tokens`."""

    first_tokens: int = 1
    max_tokens: int = 20

    def first(self) -> int:
        return min(self.first_tokens, self.max_tokens)

    def after(self, tokens: int) -> int:
        return min(max(tokens * 2, 1), self.max_tokens)


@dataclass(frozen=True)
class GenerationParams:
    """Everything about how to speak, besides what and in whose voice."""

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    speed: float = 1.0
    schedule: ChunkSchedule = field(default_factory=ChunkSchedule)
    seed: int | None = None
    """Seeds the stream's own random generator; None samples from torch's global one (as coqui does)."""
