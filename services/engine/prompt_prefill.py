"""A sentence's prompt prefilled a chunk at a time (vLLM's chunked prefill), ready before its row needs it.

A prompt is the voice's conditioning prefix (cached per voice) followed by the sentence's text and the
start-audio token. Its positions are run through the GPT a chunk at a time, between decode steps, into a
cache of its own: the row it is for may still be speaking its previous sentence, so the prompt's keys and
values are copied into that row only once the previous sentence has ended (`SlotKVCache.fill`). Attention
is causal, so a chunk sees exactly the positions before it, as in one pass; only float rounding differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from TTS.tts.layers.xtts.gpt import GPT

from services.engine.gpt_sampler import PrefixKV, SentencePrompt, cache_after, cached_kv
from services.engine.precision import run_transformer


@dataclass
class PendingPrompt:
    """One sentence's prompt, prefilled as far as `done` (model thread only)."""

    sentence_index: int
    prompt: SentencePrompt
    done: int = 0
    _cache: DynamicCache | None = None
    _hidden: torch.Tensor | None = None

    @property
    def positions(self) -> int:
        """Positions to prefill after the voice's cached conditioning prefix."""
        return int(self.prompt.embeddings.shape[1] - self.prompt.conditioning_length)

    @property
    def left(self) -> int:
        return self.positions - self.done

    def advance(self, gpt: GPT, voice_prefix: Callable[[], PrefixKV], positions: int | None = None) -> None:
        """Prefill the next `positions` positions (None: the rest)."""
        if self._cache is None:
            self._cache = cache_after(voice_prefix())
        stop = self.positions if positions is None else min(self.positions, self.done + positions)
        if stop <= self.done:
            return
        chunk = self.prompt.after_conditioning()[:, self.done : stop]
        hidden = run_transformer(gpt, chunk, past_key_values=self._cache, use_cache=True)
        self._hidden = hidden[:, -1]
        self.done = stop

    def result(self) -> tuple[torch.Tensor, PrefixKV]:
        """The last position's hidden state [1, C] (before XTTS's final norm) and every position's keys and
        values, prefix included, for the row; once `left` is 0."""
        assert self.left == 0 and self._cache is not None and self._hidden is not None, "prompt not complete"
        return self._hidden, cached_kv(self._cache)
