"""XTTS's part of a step: each stream's prompt, sampling and vocoder, one GPT forward pass for all.

The one decode path: a stream alone is a batch of one. Per stream, exactly coqui's generation: the same
prompt (gpt_sampler.sentence_prompt), logits processors and sampling (gpt_sampler.sample_token) with the
stream's own random generator, then the incremental vocoder on the chunk schedule. Only the GPT's
decode forward pass is shared (batched_gpt.decode_step); logits and sampling are computed row by row, so
no stream's numbers pass through a kernel whose result depends on the other rows beyond float rounding
in the shared pass. A row whose logits are not finite (absurd latents that got past the door, or a
numerical blow-up) fails alone: it samples nothing, leaves, and the other rows step on untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from transformers.generation.logits_process import LogitsProcessorList
from TTS.tts.models.xtts import Xtts

from services.engine.batched_gpt import SlotKVCache, decode_step
from services.engine.gpt_sampler import (
    PrefixKV,
    audio_token_embedding,
    logits_processors,
    prompt_positions,
    sample_token,
    sentence_prompt,
    token_limit,
)
from services.engine.latents import VoiceLatents
from services.engine.prompt_prefill import PendingPrompt, PrefillChunk, advance_together
from services.engine.scheduler import RowOutput
from services.engine.stream import StepTimings, StreamReport, SynthesisRequest
from services.engine.vocoder import IncrementalVocoder
from services.errors import InvalidLatents


@dataclass
class SentenceState:
    """A row's decoding state for its current sentence."""

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


@dataclass
class RowState:
    """Everything the decoder keeps for one stream, from joining to leaving (model thread only)."""

    generator: torch.Generator | None
    row: int | None = None
    """Its row of the KV cache, once its first sentence is prefilled."""
    sentence_index: int = 0
    sentence: SentenceState | None = None
    """The sentence it is speaking; None before its first and between two whose next prompt is not ready."""
    pending: PendingPrompt | None = None
    """The prompt being prefilled: the current sentence's while `sentence` is None, else the next one's."""
    timings: StepTimings = field(default_factory=StepTimings)
    audio_tokens: list[int] = field(default_factory=list)


class GptBatchDecoder:
    """Owns the batch's KV cache and every stream's row state."""

    def __init__(self, model: Xtts, device: torch.device, voice_prefix: Callable[[VoiceLatents], PrefixKV]) -> None:
        self.model = model
        self.device = device
        self._voice_prefix = voice_prefix
        self.cache = SlotKVCache(model.gpt, device)
        self._rows: dict[SynthesisRequest, RowState] = {}
        self._by_row: list[SynthesisRequest] = []
        self.sentences_started_ahead = 0
        """Later sentences whose prompt was ready when the one before ended (prefilled ahead: no stall)."""
        self.sentences_started_late = 0
        """Later sentences that waited for their prompt after the one before ended."""

    def join(self, request: SynthesisRequest) -> None:
        seed = request.params.seed
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        self._rows[request] = RowState(generator)

    def prompt_left(self, request: SynthesisRequest) -> tuple[int, int]:
        """(positions of the prompt it needs before it can step, positions of its next sentence's prompt still
        to prefill while it speaks); a stream not joined yet needs its first sentence's whole prompt."""
        state = self._rows.get(request)
        if state is None:
            return prompt_positions(request.sentences[0].tokens), 0
        if state.sentence is None:
            return self._pending(request, state).left, 0
        if state.sentence_index + 1 < len(request.sentences):
            return 0, self._pending(request, state).left
        return 0, 0

    def prefill(self, chunks: Sequence[tuple[SynthesisRequest, int | None]]) -> None:
        """Prefill the next `positions` positions (None: all) of each stream's pending prompt, in one forward
        pass; a prompt that completes while its row is between sentences goes into the row at once."""
        started = time.perf_counter()
        work = []
        for request, positions in chunks:
            pending = self._pending(request, self._rows[request])
            work.append(PrefillChunk(pending, partial(self._voice_prefix, request.voice), positions))
        advance_together(self.model.gpt, work)
        for request, _ in chunks:
            state = self._rows[request]
            if state.sentence is None and state.pending is not None and state.pending.left == 0:
                self.sentences_started_late += state.sentence_index > 0
                self._start_sentence(request, state)
        share = (time.perf_counter() - started) / len(chunks)
        for request, _ in chunks:
            self._rows[request].timings.prefill_s += share

    def _pending(self, request: SynthesisRequest, state: RowState) -> PendingPrompt:
        """The prompt the row needs next (made on first ask: its embeddings cost no GPT pass)."""
        index = state.sentence_index if state.sentence is None else state.sentence_index + 1
        if state.pending is None or state.pending.sentence_index != index:
            tokens = request.sentences[index].tokens.to(self.device)
            state.pending = PendingPrompt(index, sentence_prompt(self.model.gpt, request.voice.gpt_cond_latent, tokens))
        return state.pending

    def _start_sentence(self, request: SynthesisRequest, state: RowState) -> None:
        """Put the completed pending prompt into the stream's row and start speaking its sentence."""
        pending = state.pending
        assert pending is not None and pending.sentence_index == state.sentence_index
        state.pending = None
        hidden, kv = pending.result()
        prompt = pending.prompt
        gpt = self.model.gpt
        if state.row is None:
            state.row = self.cache.add_row(kv)
            self._by_row.append(request)
        else:
            self.cache.fill(state.row, kv)
        params = request.params
        state.sentence = SentenceState(
            input_ids=prompt.input_ids,
            processors=logits_processors(gpt, params.sampling, prompt.input_ids.shape[1]),
            limit=token_limit(gpt, params.sampling),
            vocoder=IncrementalVocoder(self.model.hifigan_decoder, request.voice.speaker_embedding, params.speed),
            target_tokens=params.schedule.first(),
            latent=gpt.final_norm(hidden),
        )

    def step(self, requests: list[SynthesisRequest]) -> list[RowOutput]:
        gpt = self.model.gpt
        outputs = []
        continuing: list[RowState] = []
        for request in requests:
            state = self._rows[request]
            sentence = state.sentence
            assert sentence is not None, "step before prefill"
            started = time.perf_counter()
            logits = gpt.mel_head(sentence.latent).float()
            if not torch.isfinite(logits).all():
                outputs.append(RowOutput(error=_non_finite("GPT")))
                continue
            token = sample_token(sentence.processors, sentence.input_ids, logits, state.generator)
            sentence.tokens += 1
            state.timings.tokens += 1
            state.audio_tokens.append(int(token))
            done = int(token) == gpt.stop_audio_token or sentence.tokens == sentence.limit
            if not done:
                sentence.input_ids = torch.cat([sentence.input_ids, token], dim=1)
                sentence.next_input = audio_token_embedding(gpt, token, sentence.tokens)[0, 0]
                continuing.append(state)
            state.timings.gpt_steps_s += time.perf_counter() - started
            started = time.perf_counter()
            chunks = self._vocode(request, sentence, done)
            state.timings.vocoder_s += time.perf_counter() - started
            if not all(torch.isfinite(chunk).all() for chunk in chunks):
                outputs.append(RowOutput(error=_non_finite("vocoder")))
                continue
            if done:
                state.sentence_index += 1
                state.sentence = None
                # the next sentence's prompt, prefilled ahead while this one spoke: no step is lost to it
                if state.pending is not None and state.pending.sentence_index == state.sentence_index:
                    if state.pending.left == 0:
                        self.sentences_started_ahead += 1
                        self._start_sentence(request, state)
            finished = done and state.sentence_index == len(request.sentences)
            outputs.append(RowOutput(chunks=chunks, sentence_done=done, finished=finished))
        if continuing:
            started = time.perf_counter()
            self._forward(continuing)
            share = (time.perf_counter() - started) / len(continuing)
            for state in continuing:
                state.timings.gpt_steps_s += share
        return outputs

    def _vocode(self, request: SynthesisRequest, sentence: SentenceState, done: bool) -> list[torch.Tensor]:
        vocoder = sentence.vocoder
        vocoder.push(sentence.latent)
        if done:
            chunk = vocoder.finish()
            return [chunk] if chunk.numel() else []
        if vocoder.pending_frames() >= sentence.target_tokens * vocoder.frames_per_latent:
            sentence.target_tokens = request.params.schedule.after(sentence.target_tokens)
            return [vocoder.decode_ready()]
        return []

    def _forward(self, continuing: list[RowState]) -> None:
        """One decode pass over the rows from the first to the last continuing stream's; rows between them
        that are not continuing (paused, between sentences, waiting their turn) are computed and ignored."""
        gpt = self.model.gpt
        rows = [state.row for state in continuing]
        assert all(row is not None for row in rows)
        first = min(row for row in rows if row is not None)
        stop = max(row for row in rows if row is not None) + 1
        inputs = torch.zeros(stop - first, gpt.gpt.config.n_embd, device=self.device)
        active = [False] * (stop - first)
        for state in continuing:
            assert state.row is not None and state.sentence is not None and state.sentence.next_input is not None
            inputs[state.row - first] = state.sentence.next_input
            active[state.row - first] = True
        hidden = decode_step(gpt, self.cache, inputs, active, first)
        for state in continuing:
            assert state.row is not None and state.sentence is not None
            offset = state.row - first
            state.sentence.latent = gpt.final_norm(hidden[offset : offset + 1])

    def leave(self, request: SynthesisRequest) -> StreamReport:
        state = self._rows.pop(request)
        if state.row is not None:
            moved = self.cache.remove_row(state.row)
            last = self._by_row.pop()
            if moved is not None:  # the last row's stream now lives in the freed row
                self._by_row[state.row] = last
                self._rows[last].row = state.row
        return StreamReport(state.timings, tuple(state.audio_tokens))


def _non_finite(stage: str) -> InvalidLatents:
    return InvalidLatents(f"this voice's latents drove the {stage} to non-finite numbers; the stream was stopped")
