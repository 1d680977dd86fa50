"""The generation core against coqui's own code paths, in-process with the tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import soundfile
import torch
import torch.nn.functional as F
from TTS.tts.models.xtts import Xtts

from services.engine.cloning import CloneSettings, conditioning_windows
from services.engine.gpt_sampler import conditioning_prefix
from services.engine.latents import VoiceLatents
from services.engine.model_loader import LoadedModel
from services.engine.params import ChunkSchedule, GenerationParams, SamplingSettings
from services.engine.pcm import to_pcm16
from services.engine.tts import TTSEngine
from services.engine.vocoder import IncrementalVocoder
from tests.audio_checks import pcm_snr_db
from tests.conftest import BUILTIN_SPEAKER
from tests.engine_runs import chunks_of, tokens_of

# Audio tokens a generation here makes: chunks of 2, 4, 8 and the rest, enough for each comparison, and each
# token costs the vocoder's time (the tiny model's own cap is 40).
SHORT_TOKENS = 16


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    assert signal.shape == reference.shape, (signal.shape, reference.shape)
    noise = (signal - reference).pow(2).sum()
    return float(10 * torch.log10(reference.pow(2).sum() / noise.clamp_min(1e-20)))


def as_voice(speaker: dict[str, torch.Tensor]) -> VoiceLatents:
    return VoiceLatents(speaker["gpt_cond_latent"], speaker["speaker_embedding"])


@pytest.fixture(scope="module")
def voice(tiny_loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return tiny_loaded.model.speaker_manager.speakers[BUILTIN_SPEAKER]


# Each speed (the extra resampling stage on or off, stretching or squeezing) with a chunk size (a seam after every
# token, every few, or only two seams), over enough latents for at least three chunks.
@pytest.mark.parametrize(("speed", "chunk_tokens", "latent_count"), [(1.0, 4, 24), (1.3, 1, 12), (0.8, 20, 57)])
def test_streamed_waveform_matches_a_one_shot_decode_of_the_same_latents(
    tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor], speed: float, chunk_tokens: int, latent_count: int
) -> None:
    decoder = tiny_loaded.model.hifigan_decoder
    generator = torch.Generator().manual_seed(chunk_tokens)
    latents = torch.randn(1, latent_count, 1024, generator=generator)
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
    # measured 96-108 dB with the tests' narrow vocoder (the full-size one: 69-81); without the context frames
    # either side of a chunk 37-51 dB, with half of them 62-74
    assert snr_db(torch.cat(chunks), reference) > 70


def coquis_tokens(model: Xtts, cond: torch.Tensor, text_tokens: torch.Tensor, seed: int, **sampling: Any) -> list[int]:
    """The audio tokens coqui's own `GPT.generate` samples (torch's global random state seeded with `seed`)."""
    torch.manual_seed(seed)
    settings = {"top_p": 0.85, "top_k": 50, "temperature": 0.75, "repetition_penalty": 5.0, **sampling}
    with torch.inference_mode():
        return model.gpt.generate(  # type: ignore[no-any-return]
            cond_latents=cond, text_inputs=text_tokens, do_sample=True, num_return_sequences=1, num_beams=1,
            length_penalty=1.0, **settings,
        )[0].tolist()  # fmt: skip


def test_the_decoder_picks_the_tokens_coqui_generate_picks(
    tiny_engine: TTSEngine, voice: dict[str, torch.Tensor]
) -> None:
    """The one decode path (a stream alone is a batch of one, the voice's conditioning prefix cached) against
    coqui's generate; twice, so the cached prefix is shown to be left intact by use."""
    latents = as_voice(voice)
    sentences = asyncio.run(tiny_engine.plan("hello world.", "en", True))
    params = GenerationParams(sampling=SamplingSettings(max_new_tokens=SHORT_TOKENS), seed=7)
    first = asyncio.run(tokens_of(tiny_engine, sentences, latents, params))
    again = asyncio.run(tokens_of(tiny_engine, sentences, latents, params))
    expected = tiny_engine.submit(
        lambda: coquis_tokens(
            tiny_engine.model, voice["gpt_cond_latent"], sentences[0].tokens, 7, max_new_tokens=SHORT_TOKENS
        )
    )
    assert len(first) == SHORT_TOKENS and first == again == expected.result()


def test_stream_equals_coquis_one_shot_inference(tiny_engine: TTSEngine, voice: dict[str, torch.Tensor]) -> None:
    """Streamed through the engine in growing chunks, the audio is coqui's one-shot `inference` of the same
    tokens (which recomputes the latents with a teacher-forced pass and vocodes them at once)."""
    model = tiny_engine.model
    text = "hello world, this is a test."

    def one_shot() -> bytes:
        torch.manual_seed(11)
        with torch.inference_mode():
            wav = model.inference(
                text, "en", voice["gpt_cond_latent"], voice["speaker_embedding"], repetition_penalty=5.0,
                max_new_tokens=SHORT_TOKENS,
            )  # fmt: skip
        return to_pcm16(torch.from_numpy(wav["wav"]))

    expected = tiny_engine.submit(one_shot).result()
    sentences = asyncio.run(tiny_engine.plan(text, "en", False))
    params = GenerationParams(
        SamplingSettings(max_new_tokens=SHORT_TOKENS), schedule=ChunkSchedule(first_tokens=2, max_tokens=8), seed=11
    )
    chunks = asyncio.run(chunks_of(tiny_engine, sentences, as_voice(voice), params))
    assert len(chunks) >= 3  # two seams at least
    assert len(chunks[0]) < len(chunks[-2])  # the first chunk is short, later ones grow
    assert pcm_snr_db(b"".join(chunks), expected) > 30


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


@pytest.mark.parametrize("seconds", [0.2, 2.0])  # fewer frames than coqui's 32, and more
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
    sampling = SamplingSettings(repetition_penalty=5.0, max_new_tokens=24)  # 16: truncated latents may agree
    sentences = asyncio.run(tiny_engine.plan(text, "en", True))
    params = GenerationParams(sampling=sampling, seed=5)

    tokens = asyncio.run(tokens_of(tiny_engine, sentences, latents, params))

    expected = tiny_engine.submit(
        lambda: coquis_tokens(model, cond, sentences[0].tokens, 5, max_new_tokens=24)
    ).result()
    stop = model.gpt.stop_audio_token
    assert tokens == [token for token in expected if token != stop][: len(tokens)] and len(tokens) > 0
    # a different frame count is a different voice: the frames are read, not truncated to 32
    if frames > 32:
        truncated = tiny_engine.normalize_latents(cond[:, :32], voice["speaker_embedding"])
        stream_tokens = asyncio.run(tokens_of(tiny_engine, sentences, truncated, params))
        assert stream_tokens != tokens


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
