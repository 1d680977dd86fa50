"""Chunked prefill and look-ahead: a prompt run a few positions at a time is the prompt run at once.

The policy's rules (who gets the chunk, when a prompt is whole) are in tests/test_plan.py; here the
numbers: the keys, values and last hidden state of a prompt prefilled in chunks equal one pass's, and a
two-sentence stream whose prompts are prefilled in chunks of 8 while another stream speaks samples exactly
coqui's tokens, with its second sentence's prompt ready before its first sentence ended.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from functools import partial

import pytest
import torch
from TTS.tts.layers.xtts.gpt import GPT

from services.engine.batched_gpt import prefill
from services.engine.gpt_sampler import SentencePrompt, conditioning_prefix, prompt_positions, sentence_prompt
from services.engine.model_loader import LoadedModel
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.plan import BatchLimits
from services.engine.precision import apply_gpt_precision
from services.engine.prompt_prefill import PendingPrompt, PrefillChunk, advance_together
from services.engine.tts import TTSEngine
from tests.audio_checks import snr_db
from tests.engine_runs import coquis_tokens

pytestmark = pytest.mark.engine

TWO_SENTENCES = (  # over 250 characters: the planner packs shorter texts into one sentence
    "The first sentence is long enough that the planner cannot pack the second one in with it, as it "
    "counts characters against coqui's limit of two hundred and fifty. The second sentence follows it "
    "and is spoken in the same row of the batch, after a prefill of its own, with the same generator."
)


@pytest.fixture(scope="module")
def chunked_engine(tiny_loaded: LoadedModel) -> Iterator[TTSEngine]:
    engine = TTSEngine(tiny_loaded, limits=BatchLimits(max_batch_size=4, prefill_chunk=8))
    yield engine
    engine.shutdown()


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_a_prompt_prefilled_in_chunks_equals_one_pass(tiny_loaded: LoadedModel, chunk: int) -> None:
    gpt = tiny_loaded.model.gpt
    torch.manual_seed(0)
    cond = torch.randn(1, 32, gpt.gpt.config.n_embd)
    tokens = torch.randint(0, 100, (1, 11))
    prompt = sentence_prompt(gpt, cond, tokens)
    with torch.inference_mode():
        prefix = conditioning_prefix(gpt, cond)
        whole_hidden, whole_kv = prefill(gpt, prompt.after_conditioning(), prefix)
        pending = PendingPrompt(0, prompt)
        assert pending.positions == prompt_positions(tokens) == 14
        while pending.left:
            before = pending.left
            advance_together(gpt, [PrefillChunk(pending, lambda: prefix, chunk)])
            assert pending.left == max(before - chunk, 0)
        hidden, kv = pending.result()
    assert torch.allclose(hidden, whole_hidden, atol=1e-5)
    for (keys, values), (whole_keys, whole_values) in zip(kv, whole_kv, strict=True):
        assert keys.shape == whole_keys.shape  # the voice's prefix, then every prompt position
        assert torch.allclose(keys, whole_keys, atol=1e-5) and torch.allclose(values, whole_values, atol=1e-5)


def three_prompts(gpt: GPT) -> list[tuple[torch.Tensor, SentencePrompt]]:
    """Three voices' conditioning latents with sentences of 5, 17 and 30 text tokens."""
    generator = torch.Generator().manual_seed(3)
    width = gpt.gpt.config.n_embd
    return [
        (cond, sentence_prompt(gpt, cond, torch.randint(0, 100, (1, length), generator=generator)))
        for cond, length in ((torch.randn(1, 32, width, generator=generator), n) for n in (5, 17, 30))
    ]


def prefilled(gpt: GPT, prompts: list[tuple[torch.Tensor, SentencePrompt]], together: bool) -> list[torch.Tensor]:
    """Each prompt's last hidden state and keys, flattened, prefilled in chunks of 8: all together, or each alone."""
    pending = [PendingPrompt(0, prompt) for _, prompt in prompts]
    prefixes = [conditioning_prefix(gpt, cond) for cond, _ in prompts]
    chunks = [PrefillChunk(one, partial(lambda p: p, prefix), 8) for one, prefix in zip(pending, prefixes, strict=True)]
    while any(one.left for one in pending):
        for group in [chunks] if together else [[chunk] for chunk in chunks]:
            advance_together(gpt, group)
    results = [one.result() for one in pending]
    return [torch.cat([hidden.flatten(), *(keys.flatten() for keys, _ in kv)]) for hidden, kv in results]


def test_prompts_prefilled_together_equal_each_alone_and_one_pass(tiny_loaded: LoadedModel) -> None:
    gpt = tiny_loaded.model.gpt
    prompts = three_prompts(gpt)
    with torch.inference_mode():
        together = prefilled(gpt, prompts, together=True)
        alone = prefilled(gpt, prompts, together=False)
        one_pass = []
        for cond, prompt in prompts:
            hidden, kv = prefill(gpt, prompt.after_conditioning(), conditioning_prefix(gpt, cond))
            one_pass.append(torch.cat([hidden.flatten(), *(keys.flatten() for keys, _ in kv)]))
    for mine, solo, reference in zip(together, alone, one_pass, strict=True):
        assert torch.allclose(mine, solo, atol=1e-5)
        assert torch.allclose(mine, reference, atol=1e-5)


def test_int8_prompts_run_on_bfloat16_weights_where_asked_within_a_bound_and_batch_invariant(
    tiny_loaded: LoadedModel,
) -> None:
    reference_gpt = tiny_loaded.model.gpt
    prompts = three_prompts(reference_gpt)
    with torch.inference_mode():
        reference = prefilled(reference_gpt, prompts, together=False)
        results = {}
        for bf16_prefill in (False, True):
            gpt = copy.deepcopy(reference_gpt)
            choice = apply_gpt_precision(gpt, "int8", torch.device("cpu"), bf16_prefill=bf16_prefill)
            assert ("bfloat16 weights" in choice.reason) == bf16_prefill
            together = prefilled(gpt, prompts, together=True)
            # exact integer products, per-row quantization and per-row attention: the same bits alone
            alone = prefilled(gpt, prompts, together=False)
            assert all(torch.equal(a, b) for a, b in zip(together, alone, strict=True))
            results[bf16_prefill] = together
    for bf16_prefill, together in results.items():
        for mine, float32 in zip(together, reference, strict=True):
            assert snr_db(mine, float32) >= 30, (bf16_prefill, snr_db(mine, float32))
    assert not torch.equal(results[True][0], results[False][0]), "the bfloat16 weights were not used"


def test_an_incomplete_prompt_has_no_result(tiny_loaded: LoadedModel) -> None:
    gpt = tiny_loaded.model.gpt
    cond = torch.zeros(1, 32, gpt.gpt.config.n_embd)
    pending = PendingPrompt(0, sentence_prompt(gpt, cond, torch.ones(1, 5, dtype=torch.long)))
    with torch.inference_mode():
        advance_together(gpt, [PrefillChunk(pending, lambda: conditioning_prefix(gpt, cond), 2)])
    with pytest.raises(AssertionError, match="not complete"):
        pending.result()


def test_chunked_prompts_beside_another_stream_sample_coquis_tokens_and_never_stall(
    chunked_engine: TTSEngine,
) -> None:
    engine = chunked_engine
    voice = engine.builtin_speakers["Dummy Bass"]
    sampling = SamplingSettings(temperature=0.9, top_p=0.7, top_k=20, repetition_penalty=2.0, max_new_tokens=30)
    params = GenerationParams(sampling, seed=5)
    decoder = engine.scheduler.decoder
    before = (decoder.sentences_started_ahead, decoder.sentences_started_late)  # type: ignore[attr-defined]

    async def speak(text: str, params: GenerationParams, started: asyncio.Event | None = None) -> list[int]:
        sentences = await engine.plan(text, "en", True)
        stream = engine.synthesize(sentences, voice, params, threading.Event())
        async for _ in stream:
            if started is not None:
                started.set()
        await stream.wait_idle()
        return list(stream.audio_tokens)

    async def beside_another() -> list[int]:
        started = asyncio.Event()
        other = asyncio.ensure_future(
            speak("Somebody else is speaking all the while.", GenerationParams(SamplingSettings(), seed=1), started)
        )
        await started.wait()  # ours joins a batch that is decoding: its next sentence goes a chunk per step
        tokens = await speak(TWO_SENTENCES, params)
        await other
        return tokens

    tokens = asyncio.run(beside_another())
    sentences = asyncio.run(engine.plan(TWO_SENTENCES, "en", True))
    assert len(sentences) == 2

    assert tokens == coquis_tokens(engine, sentences, voice, sampling, seed=5)
    ahead, late = decoder.sentences_started_ahead - before[0], decoder.sentences_started_late - before[1]  # type: ignore[attr-defined]
    assert (ahead, late) == (1, 0)  # the second sentence's prompt was ready when the first ended
