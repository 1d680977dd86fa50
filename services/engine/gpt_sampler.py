"""XTTS's GPT prompt and sampling, as coqui's generation builds and applies them, with all state per stream.

coqui's `GPT.get_generator` parks the prompt on the model (`store_prefix_emb`) and runs HF's generate
loop; the decoder (batch_decoder.py) instead keeps each stream's prompt and KV cache row its own,
samples with a per-request `torch.Generator` (so a seed reproduces a stream whatever else runs), and
applies the same logits processors in the same order as `transformers`' sampling, so with the same
random state it picks the same tokens. This module holds those pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from TTS.tts.layers.xtts.gpt import GPT

from services.engine.params import SamplingSettings
from services.engine.precision import run_transformer


def logits_processors(gpt: GPT, settings: SamplingSettings, prompt_length: int) -> LogitsProcessorList:
    """transformers' sampling processors in the order its `generate` applies them."""
    processors = LogitsProcessorList()
    if settings.min_new_tokens > 0:
        processors.append(
            MinNewTokensLengthLogitsProcessor(prompt_length, settings.min_new_tokens, gpt.stop_audio_token)
        )
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        processors.append(TopKLogitsWarper(settings.top_k, min_tokens_to_keep=1))
    if settings.top_p < 1.0:
        processors.append(TopPLogitsWarper(settings.top_p, min_tokens_to_keep=1))
    return processors


# Per layer (keys, values) of a voice's conditioning positions.
PrefixKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def conditioning_prefix(gpt: GPT, cond_latent: torch.Tensor) -> PrefixKV:
    """The KV cache of a voice's 32 conditioning positions, computed once per voice.

    They come first in XTTS's prompt and attention is causal, so their keys and values do not depend
    on the text: every sentence in that voice can start its prefill after them.
    """
    cache = DynamicCache()
    run_transformer(gpt, cond_latent, past_key_values=cache, use_cache=True)
    return cached_kv(cache)


def cache_after(prefix: PrefixKV | None) -> DynamicCache:
    """A transformers cache holding `prefix` (None: empty), for a prefill to continue from."""
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(prefix or ()):
        cache.update(keys, values, layer)
    return cache


def cached_kv(cache: DynamicCache) -> PrefixKV:
    """Every position's keys and values per layer, as a prefill left them in `cache`."""
    kv = []
    for layer in cache.layers:
        assert layer.keys is not None and layer.values is not None
        kv.append((layer.keys, layer.values))
    return tuple(kv)


def max_new_tokens(gpt: GPT) -> int:
    """The most audio tokens one sentence may get, as coqui's generate bounds it."""
    return int(gpt.max_gen_mel_tokens)


@dataclass(frozen=True)
class SentencePrompt:
    """What the GPT reads before a sentence's first audio token, as coqui's generate builds it."""

    embeddings: torch.Tensor
    """[1, T, C]: the conditioning latents, the text with its start and stop tokens, the start audio token."""
    conditioning_length: int
    input_ids: torch.Tensor
    """[1, T] ids transformers' processors look at: coqui feeds placeholder ids (1) for all but the last."""

    def after_conditioning(self) -> torch.Tensor:
        """The embeddings after the conditioning positions (which a voice's PrefixKV already holds)."""
        return self.embeddings[:, self.conditioning_length :]


def prompt_positions(text_tokens: torch.Tensor) -> int:
    """Positions a sentence's prompt adds after the conditioning: its text, start and stop text tokens, start audio."""
    return int(text_tokens.shape[-1]) + 3


def sentence_prompt(gpt: GPT, cond_latent: torch.Tensor, text_tokens: torch.Tensor) -> SentencePrompt:
    text = F.pad(text_tokens, (0, 1), value=gpt.stop_text_token)
    text = F.pad(text, (1, 0), value=gpt.start_text_token)
    start = torch.full((1, 1), gpt.start_audio_token, dtype=torch.long, device=text.device)
    embeddings = torch.cat(
        [
            cond_latent,
            gpt.text_embedding(text) + gpt.text_pos_embedding(text),
            gpt.mel_embedding(start) + gpt.mel_pos_embedding(start),
        ],
        dim=1,
    )
    input_ids = torch.ones((1, embeddings.shape[1]), dtype=torch.long, device=text.device)
    input_ids[:, -1] = gpt.start_audio_token
    return SentencePrompt(embeddings, cond_latent.shape[1], input_ids)


def token_limit(gpt: GPT, settings: SamplingSettings) -> int:
    """The most audio tokens this sentence may get: the request's cap within the model's."""
    return min(settings.max_new_tokens or max_new_tokens(gpt), max_new_tokens(gpt))


def audio_token_embedding(gpt: GPT, token: torch.Tensor, index: int) -> torch.Tensor:
    """The GPT's input [1, 1, C] for the `index`-th audio token of a sentence (the start token is 0)."""
    return gpt.mel_embedding(token) + gpt.mel_pos_embedding.get_fixed_embedding(index, token.device)


def sample_token(
    processors: LogitsProcessorList, input_ids: torch.Tensor, logits: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """One audio token [1, 1] from a position's logits, as transformers' sampling picks it (generator None:
    torch's global random state, as coqui's generate uses)."""
    scores = processors(input_ids, logits)  # type: ignore[arg-type]
    return torch.multinomial(F.softmax(scores, dim=-1), num_samples=1, generator=generator)


def teacher_forced(
    gpt: GPT, cond_latent: torch.Tensor, text_tokens: torch.Tensor, audio_tokens: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [n, C], logits [n, vocab]) of a fixed token sequence in one pass, as the decoder sees them.

    Row i is the position that predicts audio token i: its latent is what the vocoder gets for the
    previous token. Comparing precisions on the same tokens separates the weights' error from sampling's
    chaos (tests/test_precision.py, bench/precision.py).
    """
    prompt = sentence_prompt(gpt, cond_latent, text_tokens)
    audio = torch.tensor([audio_tokens[:-1]], dtype=torch.long, device=text_tokens.device)
    positions = torch.arange(1, len(audio_tokens), device=text_tokens.device)
    audio_embeddings = gpt.mel_embedding(audio) + gpt.mel_pos_embedding.emb(positions)[None]
    embeddings = torch.cat([prompt.embeddings, audio_embeddings], dim=1)
    hidden = run_transformer(gpt, embeddings)[0, -len(audio_tokens) :]
    latents = gpt.final_norm(hidden)
    return latents, gpt.mel_head(latents).float()
