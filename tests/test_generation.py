"""The generation core against coqui's own code paths, in-process with the tiny model."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import soundfile
import torch
import torch.nn.functional as F

from services.engine.cloning import CloneSettings, conditioning_windows
from services.engine.gpt_sampler import StepTimings, conditioning_prefix, sample_audio_latents
from services.engine.params import SamplingSettings
from services.engine.latents import VoiceLatents
from services.engine.model_loader import LoadedModel
from services.engine.params import ChunkSchedule, GenerationParams
from services.engine.synthesis import stream_sentence
from services.engine.tts import TTSEngine
from services.engine.vocoder import IncrementalVocoder
from tests.conftest import BUILTIN_SPEAKER


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    assert signal.shape == reference.shape, (signal.shape, reference.shape)
    noise = (signal - reference).pow(2).sum()
    return float(10 * torch.log10(reference.pow(2).sum() / noise.clamp_min(1e-20)))


def as_voice(speaker: dict[str, torch.Tensor]) -> VoiceLatents:
    return VoiceLatents(speaker["gpt_cond_latent"], speaker["speaker_embedding"])


@pytest.fixture(scope="module")
def voice(tiny_loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return tiny_loaded.model.speaker_manager.speakers[BUILTIN_SPEAKER]


@pytest.mark.parametrize("speed", [1.0, 1.3, 0.8])
@pytest.mark.parametrize("chunk_tokens", [1, 4, 20])
def test_streamed_waveform_matches_a_one_shot_decode_of_the_same_latents(
    tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor], speed: float, chunk_tokens: int
) -> None:
    decoder = tiny_loaded.model.hifigan_decoder
    generator = torch.Generator().manual_seed(chunk_tokens)
    latents = torch.randn(1, 57, 1024, generator=generator)
    with torch.inference_mode():
        vocoder = IncrementalVocoder(decoder, voice["speaker_embedding"], speed)
        chunks = []
        for index in range(latents.shape[1]):
            vocoder.push(latents[:, index])
            if vocoder.pending_frames() >= chunk_tokens * vocoder.frames_per_latent:
                chunks.append(vocoder.decode_ready())
        chunks.append(vocoder.finish())
        reference_latents = latents
        if speed != 1.0:
            reference_latents = F.interpolate(latents.transpose(1, 2), scale_factor=1 / speed, mode="linear")
            reference_latents = reference_latents.transpose(1, 2)
        reference = decoder(reference_latents, g=voice["speaker_embedding"])[0, 0]
    assert len(chunks) >= 3
    assert snr_db(torch.cat(chunks), reference) > 30


def test_sampler_picks_the_tokens_coqui_generate_picks(
    tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor]
) -> None:
    model = tiny_loaded.model
    tokens = torch.IntTensor(model.tokenizer.encode("hello world.", "en")).unsqueeze(0)
    with torch.inference_mode():
        torch.manual_seed(7)
        expected = model.gpt.generate(
            cond_latents=voice["gpt_cond_latent"],
            text_inputs=tokens,
            do_sample=True,
            top_p=0.85,
            top_k=50,
            temperature=0.75,
            num_return_sequences=1,
            num_beams=1,
            length_penalty=1.0,
            repetition_penalty=5.0,
        )[0].tolist()
        torch.manual_seed(7)
        steps = list(
            sample_audio_latents(
                model.gpt,
                voice["gpt_cond_latent"],
                tokens,
                SamplingSettings(repetition_penalty=5.0),
                None,
                StepTimings(),
            )
        )
        codes = torch.tensor([[token for token, _ in steps]])
        # coqui's one-shot inference recomputes the latents with a teacher-forced pass
        one_shot_latents = model.gpt(
            tokens,
            torch.tensor([tokens.shape[-1]]),
            codes,
            torch.tensor([codes.shape[-1] * 1024]),
            cond_latents=voice["gpt_cond_latent"],
            return_attentions=False,
            return_latent=True,
        )
    assert [token for token, _ in steps] == expected
    streamed_latents = torch.cat([latent for _, latent in steps])[None]
    assert torch.allclose(streamed_latents, one_shot_latents, atol=1e-4)


def test_stream_equals_coquis_one_shot_inference(tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor]) -> None:
    model = tiny_loaded.model
    text = "hello world, this is a test."
    with torch.inference_mode():
        torch.manual_seed(11)
        one_shot = torch.from_numpy(
            model.inference(text, "en", voice["gpt_cond_latent"], voice["speaker_embedding"], repetition_penalty=5.0)[
                "wav"
            ]
        )
        torch.manual_seed(11)
        tokens = torch.IntTensor(model.tokenizer.encode(text, "en")).unsqueeze(0)
        params = GenerationParams(
            sampling=SamplingSettings(repetition_penalty=5.0), schedule=ChunkSchedule(first_tokens=2, max_tokens=8)
        )
        chunks = list(stream_sentence(model, tokens, as_voice(voice), params, threading.Event(), StepTimings()))
    assert len(chunks) >= 4
    assert chunks[0].numel() < chunks[-2].numel()  # the first chunk is short, later ones grow
    assert snr_db(torch.cat(chunks), one_shot) > 30


def test_cancel_stops_within_one_token(tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor]) -> None:
    model = tiny_loaded.model
    cancel = threading.Event()
    timings = StepTimings()
    tokens = torch.IntTensor(model.tokenizer.encode("hello world.", "en")).unsqueeze(0)
    with torch.inference_mode():
        params = GenerationParams(
            sampling=SamplingSettings(min_new_tokens=30), schedule=ChunkSchedule(first_tokens=1, max_tokens=1)
        )
        stream = stream_sentence(model, tokens, as_voice(voice), params, cancel, timings)
        next(stream)
        tokens_at_cancel = timings.tokens
        cancel.set()
        assert list(stream) == []
    assert timings.tokens - tokens_at_cancel <= 1


def test_cached_conditioning_prefix_gives_the_same_tokens_and_latents(
    tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor]
) -> None:
    model = tiny_loaded.model
    tokens = torch.IntTensor(model.tokenizer.encode("a prefix test.", "en")).unsqueeze(0)
    settings = SamplingSettings(repetition_penalty=5.0)
    with torch.inference_mode():
        prefix = conditioning_prefix(model.gpt, voice["gpt_cond_latent"])
        runs = []
        for prefix_kv in (None, prefix, prefix):  # twice: the cached prefix must not be modified by use
            generator = torch.Generator().manual_seed(5)
            runs.append(list(sample_audio_latents(
                model.gpt, voice["gpt_cond_latent"], tokens, settings, generator, StepTimings(), prefix_kv
            )))  # fmt: skip
    assert [token for token, _ in runs[0]] == [token for token, _ in runs[1]] == [token for token, _ in runs[2]]
    for with_prefix in runs[1:]:
        assert torch.allclose(
            torch.cat([latent for _, latent in runs[0]]), torch.cat([latent for _, latent in with_prefix]), atol=1e-4
        )


def coqui_latents_without_perceiver(model: object, seconds: float) -> torch.Tensor:
    """Conditioning latents as coqui makes them for a model without the perceiver resampler (older clones and
    other conditioning settings): one frame per mel frame of the reference, so N follows its length."""
    gpt_flag = model.gpt.use_perceiver_resampler  # type: ignore[attr-defined]
    args_flag = model.args.gpt_use_perceiver_resampler  # type: ignore[attr-defined]
    model.gpt.use_perceiver_resampler = model.args.gpt_use_perceiver_resampler = False  # type: ignore[attr-defined]
    try:
        generator = torch.Generator().manual_seed(int(seconds * 100))
        audio = torch.randn(1, int(22050 * seconds), generator=generator) * 0.1
        return model.get_gpt_cond_latents(audio, 22050, length=-1)  # type: ignore[attr-defined,no-any-return]
    finally:
        model.gpt.use_perceiver_resampler = gpt_flag  # type: ignore[attr-defined]
        model.args.gpt_use_perceiver_resampler = args_flag  # type: ignore[attr-defined]


@pytest.mark.parametrize("seconds", [0.2, 0.5, 2.0])
def test_latents_of_any_frame_count_condition_as_coquis_generate_does(
    tiny_engine: TTSEngine, voice: dict[str, torch.Tensor], seconds: float
) -> None:
    """N != 32 frames, through the server's path (shape checks, cached prefix, batched decoder): the same tokens
    coqui's generate samples with those latents, so every frame conditions the speech."""
    model = tiny_engine.model
    cond = coqui_latents_without_perceiver(model, seconds)
    frames = cond.shape[1]
    assert frames != 32 and cond.shape[2] == 1024
    latents = tiny_engine.normalize_latents(cond.squeeze(0).reshape(-1).tolist(), voice["speaker_embedding"])
    assert latents.gpt_cond_latent.shape == (1, frames, 1024)
    assert conditioning_prefix(model.gpt, latents.gpt_cond_latent)[0][0].shape[-2] == frames

    text = "hello world."
    sampling = SamplingSettings(repetition_penalty=5.0, max_new_tokens=24)
    sentences = asyncio.run(tiny_engine.plan(text, "en", True))
    params = GenerationParams(sampling=sampling, seed=5)

    tokens = asyncio.run(_tokens_of(tiny_engine, sentences, latents, params))

    def coquis() -> list[int]:
        torch.manual_seed(5)
        with torch.inference_mode():
            return model.gpt.generate(  # type: ignore[no-any-return]
                cond_latents=cond,
                text_inputs=sentences[0].tokens,
                do_sample=True,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                temperature=sampling.temperature,
                num_return_sequences=1,
                num_beams=1,
                length_penalty=1.0,
                repetition_penalty=5.0,
                max_new_tokens=24,
            )[0].tolist()

    expected = tiny_engine.submit(coquis).result()
    stop = model.gpt.stop_audio_token
    assert tokens == [token for token in expected if token != stop][: len(tokens)] and len(tokens) > 0
    # a different frame count is a different voice: the frames are read, not truncated to 32
    if frames > 32:
        truncated = tiny_engine.normalize_latents(cond[:, :32], voice["speaker_embedding"])
        stream_tokens = asyncio.run(_tokens_of(tiny_engine, sentences, truncated, params))
        assert stream_tokens != tokens


async def _tokens_of(engine: TTSEngine, sentences: list, latents: VoiceLatents, params: GenerationParams) -> list[int]:
    stream = engine.synthesize(sentences, latents, params, threading.Event())
    async for _ in stream:
        pass
    await stream.wait_idle()
    return list(stream.audio_tokens)


@pytest.mark.parametrize("chunk_seconds", [6, 2])
def test_cloning_in_steps_equals_coquis_get_conditioning_latents(
    tiny_engine: TTSEngine, tmp_path: Path, chunk_seconds: int
) -> None:
    """The server clones in model-thread steps (a job per clip, per conditioning chunk) so running streams
    wait at most one of them; the latents are coqui's all the same."""
    model = tiny_engine.model
    generator = torch.Generator().manual_seed(chunk_seconds)
    clips = [(torch.randn(22050 * seconds, generator=generator) * 0.2).numpy().astype("float32") for seconds in (4, 5)]
    paths = []
    for index, clip in enumerate(clips):
        path = tmp_path / f"ref{index}.wav"
        soundfile.write(path, clip, 22050, subtype="FLOAT")
        paths.append(str(path))
    settings = CloneSettings(gpt_cond_len=6, gpt_cond_chunk_len=chunk_seconds)

    ours = asyncio.run(tiny_engine.clone_voice(clips, settings))

    def coquis() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return model.get_conditioning_latents(  # type: ignore[no-any-return]
                paths, gpt_cond_len=settings.gpt_cond_len, gpt_cond_chunk_len=settings.gpt_cond_chunk_len
            )

    cond, embedding = tiny_engine.submit(coquis).result()
    assert ours.gpt_cond_latent.shape == cond.shape == (1, 32, 1024)
    assert torch.allclose(ours.gpt_cond_latent, cond, atol=1e-5)
    assert torch.allclose(ours.speaker_embedding, embedding, atol=1e-5)
    windows = conditioning_windows(sum(clip.size for clip in clips), settings, perceiver=True)
    assert len(windows) == 6 // chunk_seconds  # one model-thread job per window, and one per clip
