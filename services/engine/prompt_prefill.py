"""A sentence's prompt prefilled a chunk at a time (vLLM's chunked prefill), ready before its row needs it.

A prompt is the voice's conditioning prefix (cached per voice) followed by the sentence's text and the
start-audio token. Its positions are run through the GPT a chunk at a time, between decode steps, into a
cache of its own: the row it is for may still be speaking its previous sentence, so the prompt's keys and
values are copied into that row only once the previous sentence has ended (`SlotKVCache.fill`). Attention
is causal, so a chunk sees exactly the positions before it, as in one pass; only float rounding differs.
Several prompts' chunks due in the same step run in one forward pass (`advance_together`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from TTS.tts.layers.xtts.gpt import GPT

from services.engine.batched_gpt import PromptCache, prefill_together
from services.engine.gpt_sampler import PrefixKV, SentencePrompt


@dataclass
class PendingPrompt:
    """One sentence's prompt, prefilled as far as `done` (model thread only)."""

    sentence_index: int
    prompt: SentencePrompt
    done: int = 0
    _cache: PromptCache | None = None
    _hidden: torch.Tensor | None = None

    @property
    def positions(self) -> int:
        """Positions to prefill after the voice's cached conditioning prefix."""
        return int(self.prompt.embeddings.shape[1] - self.prompt.conditioning_length)

    @property
    def left(self) -> int:
        return self.positions - self.done

    def next_chunk(
        self, gpt: GPT, voice_prefix: Callable[[], PrefixKV], positions: int | None
    ) -> tuple[PromptCache, torch.Tensor, int] | None:
        """Its cache (made on first ask, holding the voice's prefix), the embeddings [T, C] of its next `positions`
        positions (None: the rest) and where they end; None when nothing is left."""
        if self._cache is None:
            self._cache = PromptCache(gpt, voice_prefix(), self.positions)
        stop = self.positions if positions is None else min(self.positions, self.done + positions)
        if stop <= self.done:
            return None
        return self._cache, self.prompt.after_conditioning()[0, self.done : stop], stop

    def prefilled_to(self, stop: int, hidden: torch.Tensor) -> None:
        """Its positions up to `stop` are in its cache; `hidden` [1, C] is the last one's hidden state."""
        self.done = stop
        self._hidden = hidden

    def result(self) -> tuple[torch.Tensor, PrefixKV]:
        """The last position's hidden state [1, C] (before XTTS's final norm) and every position's keys and
        values, prefix included, for the row; once `left` is 0."""
        assert self.left == 0 and self._cache is not None and self._hidden is not None, "prompt not complete"
        return self._hidden, self._cache.kv()


@dataclass(frozen=True)
class PrefillChunk:
    """The next `positions` positions (None: the rest) of a pending prompt, whose voice prefix is `voice_prefix()`."""

    pending: PendingPrompt
    voice_prefix: Callable[[], PrefixKV]
    positions: int | None = None


def advance_together(gpt: GPT, chunks: Sequence[PrefillChunk]) -> None:
    """Prefill each chunk's positions, all of them in one forward pass (batched_gpt.prefill_together)."""
    work = [
        (chunk.pending, next_chunk)
        for chunk in chunks
        if (next_chunk := chunk.pending.next_chunk(gpt, chunk.voice_prefix, chunk.positions)) is not None
    ]
    if not work:
        return
    hidden = prefill_together(gpt, [cache for _, (cache, _, _) in work], [embeddings for _, (_, embeddings, _) in work])
    for (pending, (_, _, stop)), last in zip(work, hidden, strict=True):
        pending.prefilled_to(stop, last)
