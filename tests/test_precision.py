"""GPT_PRECISION: each precision against float32 on the same tokens, with the bounds the README states.

Random weights cannot judge how speech sounds; these bounds say how far each precision moves the GPT's
latents, its choice of the next token, and the waveform, on the tiny model (2 layers; the full-size
figures are in the benchmark).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import get_args

import pytest
import torch
from TTS.tts.layers.xtts.hifigan_decoder import HifiDecoder

from config import Settings
from services.engine.gpt_sampler import teacher_forced
from services.engine.model_loader import LoadedModel, ModelChoice, load_model
from services.engine.params import GenerationParams, SamplingSettings
from services.engine.precision import (
    GptPrecision,
    VocoderPrecision,
    apply_gpt_precision,
    apply_vocoder_precision,
)
from services.engine.tts import TTSEngine
from services.engine.vocoder import IncrementalVocoder
from services.errors import ModelUnavailable
from tests.audio_checks import snr_db
from tests.conftest import BUILTIN_SPEAKER, TINY_APP_AUDIO_TOKENS, app_client, app_settings
from tests.engine_runs import tokens_of

TEXTS = ["the first sentence of a longer text.", "a second one follows it here.", "and a third ends it."]
# precision: (latent SNR dB, top-1 agreement, waveform SNR dB) at least; measured 46/0.97/.., 64/1.0/.., 38/0.95/..
BOUNDS = {"bfloat16": (38.0, 0.93, 25.0), "float16": (55.0, 0.99, 40.0), "int8": (32.0, 0.9, 20.0)}


@pytest.fixture(scope="module")
def float32_run(tiny_engine: TTSEngine) -> list[tuple[torch.Tensor, list[int], torch.Tensor, torch.Tensor]]:
    """Per text: tokens, the audio tokens float32 samples, and float32's teacher-forced latents and logits."""
    model = tiny_engine.model
    voice = tiny_engine.builtin_speakers[BUILTIN_SPEAKER]
    runs = []
    for index, text in enumerate(TEXTS):
        sentences = asyncio.run(tiny_engine.plan(text, "en", False))
        params = GenerationParams(SamplingSettings(min_new_tokens=40), seed=index)
        audio = asyncio.run(tokens_of(tiny_engine, sentences, voice, params))
        with torch.inference_mode():
            latents, logits = teacher_forced(model.gpt, voice.gpt_cond_latent, sentences[0].tokens, audio)
        runs.append((sentences[0].tokens, audio, latents, logits))
    return runs


@pytest.fixture(scope="module")
def float32_wave(tiny_loaded: LoadedModel, float32_run: list, full_size_vocoder: HifiDecoder) -> torch.Tensor:
    """float32's latents of the first text as the full-size vocoder decodes them."""
    embedding = tiny_loaded.model.speaker_manager.speakers[BUILTIN_SPEAKER]["speaker_embedding"]
    with torch.inference_mode():
        return full_size_vocoder(float32_run[0][2][None], g=embedding)[0, 0]


@pytest.mark.parametrize("precision", sorted(BOUNDS))
def test_each_precision_stays_within_its_bound_of_float32(
    tiny_loaded: LoadedModel,
    float32_run: list,
    float32_wave: torch.Tensor,
    full_size_vocoder: HifiDecoder,
    precision: str,
) -> None:
    model = tiny_loaded.model
    voice = model.speaker_manager.speakers[BUILTIN_SPEAKER]
    gpt = copy.deepcopy(model.gpt)
    apply_gpt_precision(gpt, precision, torch.device("cpu"))  # type: ignore[arg-type]
    reference_latents, latents, agreements = [], [], []
    with torch.inference_mode():
        # float16 on a CPU without native fp16 arithmetic is slow (it is for GPUs): one text is enough there
        for tokens, audio, float32_latents, float32_logits in float32_run[: 1 if precision == "float16" else None]:
            these_latents, logits = teacher_forced(gpt, voice["gpt_cond_latent"], tokens, audio)
            reference_latents.append(float32_latents)
            latents.append(these_latents)
            agreements.append((logits.argmax(-1) == float32_logits.argmax(-1)).float())
        reference = torch.cat(reference_latents)
        converted = torch.cat(latents)
        # the waveform of the first text, through the full-size vocoder
        converted_wave = full_size_vocoder(latents[0][None], g=voice["speaker_embedding"])[0, 0]
    latent_snr, agreement = snr_db(converted, reference), float(torch.cat(agreements).mean())
    wave_snr = snr_db(converted_wave, float32_wave)
    min_latent_snr, min_agreement, min_wave_snr = BOUNDS[precision]
    assert latent_snr < 150, "the precision changed nothing: was it applied?"
    assert latent_snr >= min_latent_snr, latent_snr
    assert agreement >= min_agreement, agreement
    assert wave_snr >= min_wave_snr, wave_snr


def test_int8_is_refused_off_the_cpu(tiny_loaded: LoadedModel) -> None:
    with pytest.raises(ValueError, match="CPU only"):
        apply_gpt_precision(copy.deepcopy(tiny_loaded.model.gpt), "int8", torch.device("cuda"))


def test_float16_on_the_cpu_is_refused_at_start_up() -> None:
    with pytest.raises(ModelUnavailable, match="float16"):
        load_model(ModelChoice(dummy="tiny", use_cpu=True, gpt_precision="float16"))


def test_the_server_streams_with_an_int8_gpt(tiny_int8_loaded: LoadedModel, tmp_path: Path) -> None:
    engine = TTSEngine(tiny_int8_loaded)
    try:
        with app_client(engine, app_settings(tmp_path, MAX_AUDIO_TOKENS=TINY_APP_AUDIO_TOKENS)) as client:
            model = client.get("/health").json()["model"]
            assert (model["gpt_precision"], model["gpt_precision_reason"]) == ("int8", "set")
            assert model["cpu"] == tiny_int8_loaded.cpu
            body = {"text": "Hello there.", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 1}
            first, second = client.post("/tts_stream", json=body), client.post("/tts_stream", json=body)
            assert first.status_code == 200 and len(first.content) > 44 + 4800
            assert first.content == second.content  # seeded streams stay reproducible in int8
    finally:
        engine.shutdown()


def test_a_bfloat16_vocoder_streams_within_its_bound_of_float32(
    tiny_loaded: LoadedModel, full_size_vocoder: HifiDecoder
) -> None:
    decoder = copy.deepcopy(full_size_vocoder)
    embedding = tiny_loaded.model.speaker_manager.speakers[BUILTIN_SPEAKER]["speaker_embedding"]
    latents = torch.randn(1, 40, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = decoder(latents, g=embedding)[0, 0]
        apply_vocoder_precision(decoder, "bfloat16")
        vocoder = IncrementalVocoder(decoder, embedding)
        chunks = []
        for index in range(latents.shape[1]):
            vocoder.push(latents[:, index])
            if vocoder.pending_frames() >= 4 * vocoder.frames_per_latent:
                chunks.append(vocoder.decode_ready())
        chunks.append(vocoder.finish())
    streamed = torch.cat(chunks)
    assert streamed.dtype == torch.float32 and len(chunks) >= 3
    assert 28.0 <= snr_db(streamed, reference) < 150  # measured 31 dB; 150: it did change precision


def test_the_settings_offer_exactly_the_engines_precisions() -> None:
    """config.py is a leaf (it cannot import the engine), so its two Literals are written twice: keep them equal."""
    assert get_args(Settings.model_fields["GPT_PRECISION"].annotation) == ("auto", *get_args(GptPrecision))
    assert get_args(Settings.model_fields["VOCODER_PRECISION"].annotation) == ("auto", *get_args(VocoderPrecision))
