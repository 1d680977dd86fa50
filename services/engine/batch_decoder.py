"""XTTS's part of a batched step: each stream's sampling and vocoder, one GPT forward pass for all.

Per stream, exactly what `synthesis.stream_sentence` does alone: the same prompt, logits processors,
random generator, chunk schedule and incremental vocoder. Only the GPT's decode forward pass is
shared (batched_gpt.decode_step); logits and sampling are computed row by row, so no stream's numbers
pass through a kernel whose result depends on the other rows beyond float rounding in the shared pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.generation.logits_process import LogitsProcessorList
from TTS.tts.models.xtts import Xtts

from services.engine.batched_gpt import SlotKVCache, decode_step, prefill
from services.engine.gpt_sampler import (
    PrefixKV,
    audio_token_embedding,
    logits_processors,
    sentence_prompt,
    token_limit,
)
from services.engine.latents import VoiceLatents
from services.engine.scheduler import StepOutput, StreamWork
from services.engine.vocoder import IncrementalVocoder


@dataclass
class _Sentence:
    """A stream's decoding state for its current sentence."""

    row: int
    input_ids: torch.Tensor
    processors: LogitsProcessorList
    limit: int
    vocoder: IncrementalVocoder
    target_tokens: int
    latent: torch.Tensor
    """[1, C]: the normed hidden state that predicts the next token."""
    tokens: int = 0
    next_input: torch.Tensor | None = None
    """[C]: the embedding of the token just sampled, for the next forward pass."""


class GptBatchDecoder:
    """Owns the batch's KV cache; one row per running stream."""

    def __init__(self, model: Xtts, device: torch.device, voice_prefix: Callable[[VoiceLatents], PrefixKV]) -> None:
        self.model = model
        self.device = device
        self._voice_prefix = voice_prefix
        self.cache = SlotKVCache(model.gpt, device)
        self._by_row: list[StreamWork] = []

    def begin_sentence(self, work: StreamWork) -> None:
        started = time.perf_counter()
        gpt = self.model.gpt
        prefix = self._voice_prefix(work.voice)
        prompt = sentence_prompt(gpt, work.voice.gpt_cond_latent, work.sentence.tokens.to(self.device))
        hidden, kv = prefill(gpt, prompt.after_conditioning(), prefix)
        state: _Sentence | None = work.decoding
        if state is None:
            row = self.cache.add_row(kv)
            self._by_row.append(work)
        else:
            row = state.row
            self.cache.fill(row, kv)
        params = work.params
        work.decoding = _Sentence(
            row=row,
            input_ids=prompt.input_ids,
            processors=logits_processors(gpt, params.sampling, prompt.input_ids.shape[1]),
            limit=token_limit(gpt, params.sampling),
            vocoder=IncrementalVocoder(self.model.hifigan_decoder, work.voice.speaker_embedding, params.speed),
            target_tokens=min(params.schedule.first_tokens, params.schedule.max_tokens),
            latent=gpt.final_norm(hidden),
        )
        work.timings.prefill_s += time.perf_counter() - started

    def step(self, works: list[StreamWork]) -> list[StepOutput]:
        gpt = self.model.gpt
        outputs = []
        continuing: list[_Sentence] = []
        for work in works:
            state: _Sentence = work.decoding
            started = time.perf_counter()
            scores = state.processors(state.input_ids, gpt.mel_head(state.latent).float())  # type: ignore[arg-type]
            token = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1, generator=work.generator)
            state.tokens += 1
            work.timings.tokens += 1
            work.audio_tokens.append(int(token))
            done = int(token) == gpt.stop_audio_token or state.tokens == state.limit
            if not done:
                state.input_ids = torch.cat([state.input_ids, token], dim=1)
                state.next_input = audio_token_embedding(gpt, token, state.tokens)[0, 0]
                continuing.append(state)
            work.timings.gpt_steps_s += time.perf_counter() - started
            started = time.perf_counter()
            outputs.append(StepOutput(chunks=self._vocode(work, state, done), sentence_done=done))
            work.timings.vocoder_s += time.perf_counter() - started
        if continuing:
            started = time.perf_counter()
            self._forward(continuing)
            share = (time.perf_counter() - started) / len(continuing)
            for state in continuing:
                self._by_row[state.row].timings.gpt_steps_s += share
        return outputs

    def _vocode(self, work: StreamWork, state: _Sentence, done: bool) -> list[torch.Tensor]:
        vocoder = state.vocoder
        vocoder.push(state.latent)
        if done:
            chunk = vocoder.finish()
            return [chunk] if chunk.numel() else []
        if vocoder.pending_frames() >= state.target_tokens * vocoder.frames_per_latent:
            state.target_tokens = work.params.schedule.after(state.target_tokens)
            return [vocoder.decode_ready()]
        return []

    def _forward(self, continuing: list[_Sentence]) -> None:
        """One decode pass over the rows from the first to the last continuing stream's; rows between them
        that are not continuing (paused, between sentences, waiting their turn) are computed and ignored."""
        gpt = self.model.gpt
        first = min(state.row for state in continuing)
        stop = max(state.row for state in continuing) + 1
        inputs = torch.zeros(stop - first, gpt.gpt.config.n_embd, device=self.device)
        active = [False] * (stop - first)
        for state in continuing:
            assert state.next_input is not None
            inputs[state.row - first] = state.next_input
            active[state.row - first] = True
        hidden = decode_step(gpt, self.cache, inputs, active, first)
        for state in continuing:
            offset = state.row - first
            state.latent = gpt.final_norm(hidden[offset : offset + 1])

    def release(self, work: StreamWork) -> None:
        state: _Sentence | None = work.decoding
        work.decoding = None
        if state is None:
            return
        moved = self.cache.remove_row(state.row)
        last = self._by_row.pop()
        if moved is not None:  # the last row's stream now lives in the freed row
            self._by_row[state.row] = last
            last.decoding.row = state.row
