"""VOCODER_BACKEND / VOCODER_PRECISION: OpenVINO's streamed chunks against torch float32's one-shot decode.

The tests' tiny model has HiFi-GAN's architecture at an eighth of its channels (tests/conftest.py): the same
receptive field, frame buckets and seams, with numbers of its own; the full-size figures (117 / 36 dB) and
timings are in bench/vocoder_backends.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
from pydantic import ValidationError

from config import Settings
from services.engine.hardware import CpuFeatures
from services.engine.model_loader import LoadedModel, ModelChoice, load_model
from services.engine.precision import VocoderPrecision
from services.engine.tts import TTSEngine
from services.engine.vocoder import (
    DECODER_CONTEXT_FRAMES,
    IncrementalVocoder,
    TorchWaveformDecoder,
    WaveformDecoder,
    decode_together,
    waveform_decoder_of,
)
from services.engine.vocoder_backends import (
    VOCODER_BACKENDS,
    OpenVinoWaveformDecoder,
    choose_vocoder,
    compile_waveform_decoder,
    openvino_model,
)
from tests.conftest import BUILTIN_SPEAKER, app_client, app_settings

# precision hint: waveform SNR (dB) against torch float32's one-shot decode, at least; measured 101 / 50
BOUNDS = {"float32": 60.0, "bfloat16": 40.0}
AMX = CpuFeatures("Xeon", frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}))
AVX2 = CpuFeatures("old", frozenset({"avx2"}))
CPU = torch.device("cpu")


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    assert signal.shape == reference.shape, (signal.shape, reference.shape)
    return float(10 * torch.log10(reference.pow(2).sum() / (signal - reference).pow(2).sum().clamp_min(1e-20)))


def stream(vocoder: IncrementalVocoder, latents: torch.Tensor, chunk_tokens: int = 4) -> list[torch.Tensor]:
    """Push latents one at a time, decoding every `chunk_tokens` tokens' frames, as the batch decoder does."""
    chunks = []
    for index in range(latents.shape[1]):
        vocoder.push(latents[:, index])
        if vocoder.pending_frames() >= chunk_tokens * vocoder.frames_per_latent:
            chunks.append(vocoder.decode_ready())
    chunks.append(vocoder.finish())
    return chunks


def worst_seam_snr(chunks: list[torch.Tensor], reference: torch.Tensor, half: int = 512) -> float:
    """The lowest SNR over the samples either side of each join between chunks."""
    edges, total = [], 0
    for chunk in chunks[:-1]:
        total += chunk.numel()
        edges.append(total)
    streamed = torch.cat(chunks)
    return min(snr_db(streamed[e - half : e + half], reference[e - half : e + half]) for e in edges)


@pytest.fixture(scope="module")
def voice(tiny_loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return tiny_loaded.model.speaker_manager.speakers[BUILTIN_SPEAKER]


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(1, 40, 1024, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tiny_loaded: LoadedModel, voice: dict[str, torch.Tensor], latents: torch.Tensor) -> torch.Tensor:
    """torch float32, one shot: coqui's HifiDecoder.forward over all the latents."""
    with torch.inference_mode():
        return tiny_loaded.model.hifigan_decoder(latents, g=voice["speaker_embedding"])[0, 0]


@pytest.fixture(scope="module")
def openvino_decoders(tiny_loaded: LoadedModel) -> dict[str, OpenVinoWaveformDecoder]:
    """The tiny model's generator converted once, compiled with each precision hint."""
    model = openvino_model(tiny_loaded.model.hifigan_decoder)
    return {precision: compile_waveform_decoder(model, precision, 2) for precision in BOUNDS}  # type: ignore[arg-type]


@pytest.mark.engine
@pytest.mark.parametrize("precision", sorted(BOUNDS))
def test_openvino_streams_within_its_bound_of_a_float32_one_shot_decode(
    tiny_loaded: LoadedModel,
    voice: dict[str, torch.Tensor],
    latents: torch.Tensor,
    reference: torch.Tensor,
    openvino_decoders: dict[str, OpenVinoWaveformDecoder],
    precision: str,
) -> None:
    with torch.inference_mode():
        vocoder = IncrementalVocoder(
            tiny_loaded.model.hifigan_decoder, voice["speaker_embedding"], waveform=openvino_decoders[precision]
        )
        chunks = stream(vocoder, latents)
    streamed = torch.cat(chunks)
    assert streamed.dtype == torch.float32 and len(chunks) >= 4
    bound = BOUNDS[precision]
    assert bound <= snr_db(streamed, reference) < (150 if precision == "float32" else 60)  # bf16 changed something
    assert worst_seam_snr(chunks, reference) >= bound - 3  # the joins too, not only the whole


class RecordingDecoder:
    """A waveform decoder that records the frame counts it is given."""

    def __init__(self, decoder: WaveformDecoder) -> None:
        self.decoder = decoder
        self.frame_bucket = decoder.frame_bucket
        self.lengths: list[int] = []

    def __call__(self, frames: torch.Tensor, speaker_embedding: torch.Tensor) -> torch.Tensor:
        self.lengths.append(frames.shape[-1])
        return self.decoder(frames, speaker_embedding)


@pytest.mark.engine
def test_chunks_widen_to_the_decoders_frame_bucket_with_frames_already_decoded(
    tiny_loaded: LoadedModel,
    voice: dict[str, torch.Tensor],
    latents: torch.Tensor,
    openvino_decoders: dict[str, OpenVinoWaveformDecoder],
) -> None:
    """OpenVINO builds kernels per input shape (~10 runs' time): once a sentence has history, every call is a
    multiple of its bucket, so a server meets a handful of shapes, not one per chunk length."""
    recorder = RecordingDecoder(openvino_decoders["float32"])
    decoder: WaveformDecoder = recorder
    with torch.inference_mode():
        vocoder = IncrementalVocoder(tiny_loaded.model.hifigan_decoder, voice["speaker_embedding"], waveform=decoder)
        stream(vocoder, latents, chunk_tokens=3)
    bucket = openvino_decoders["float32"].frame_bucket
    assert bucket > 1 and len(recorder.lengths) >= 4
    # the first chunk starts the sentence (nothing to widen with); after it, all bucketed
    assert recorder.lengths[0] > DECODER_CONTEXT_FRAMES
    assert all(length % bucket == 0 for length in recorder.lengths[1:]), recorder.lengths


@pytest.mark.engine
@pytest.mark.parametrize("precision", sorted(BOUNDS))
def test_chunks_decoded_together_are_each_what_it_makes_alone(
    tiny_loaded: LoadedModel, openvino_decoders: dict[str, OpenVinoWaveformDecoder], precision: str
) -> None:
    """Three streams (other voices, other latents) whose chunks fall due in the same step share one call."""
    decoder, waveform = tiny_loaded.model.hifigan_decoder, openvino_decoders[precision]
    speakers = tiny_loaded.model.speaker_manager.speakers
    embeddings = [speakers[name]["speaker_embedding"] for name in sorted(speakers)]
    generator = torch.Generator().manual_seed(3)
    latents = [torch.randn(1, 30, 1024, generator=generator) for _ in embeddings]

    def run(together: bool) -> tuple[list[torch.Tensor], int]:
        recorder = RecordingDecoder(waveform)
        vocoders = [IncrementalVocoder(decoder, embedding, waveform=recorder) for embedding in embeddings]
        outputs: list[list[torch.Tensor]] = [[] for _ in vocoders]
        for index in range(30):
            final = index == 29
            for vocoder, sequence in zip(vocoders, latents, strict=True):
                vocoder.push(sequence[:, index])
            due = [(vocoder, final) for vocoder in vocoders if final or vocoder.pending_frames() >= 20]
            if not due:
                continue
            if together:
                chunks = decode_together(due)
            else:
                chunks = [vocoder.finish() if final else vocoder.decode_ready() for vocoder, final in due]
            for (vocoder, _), chunk in zip(due, chunks, strict=True):
                outputs[vocoders.index(vocoder)].append(chunk)
        return [torch.cat(chunks) for chunks in outputs], len(recorder.lengths)

    with torch.inference_mode():
        (alone, calls_alone), (together, calls_together) = run(False), run(True)
    assert calls_together * len(embeddings) == calls_alone >= 3 * len(embeddings)
    for single, batched in zip(alone, together, strict=True):
        assert snr_db(batched, single) > (90 if precision == "float32" else 40)


def test_auto_picks_what_the_cpu_allows() -> None:
    amx = choose_vocoder("auto", "auto", CPU, AMX)
    assert (amx.backend, amx.precision) == ("openvino", "bfloat16") and "amx_bf16" in amx.reason
    old = choose_vocoder("auto", "auto", CPU, AVX2)
    assert (old.backend, old.precision) == ("openvino", "float32") and "no bf16" in old.reason
    gpu = choose_vocoder("auto", "auto", torch.device("cuda"), AMX)
    assert (gpu.backend, gpu.precision) == ("torch", "float32")
    named = choose_vocoder("torch", "bfloat16", CPU, AVX2)
    assert (named.backend, named.precision, named.reason) == ("torch", "bfloat16", "set")
    half = choose_vocoder("torch", "auto", CPU, AMX)
    assert (half.backend, half.precision) == ("torch", "bfloat16") and half.reason.startswith("auto: bfloat16")
    with pytest.raises(ValueError, match="CPU only"):
        choose_vocoder("openvino", "float32", torch.device("cuda"), AMX)


def test_the_settings_offer_exactly_the_backends_and_refuse_others() -> None:
    assert get_args(Settings.model_fields["VOCODER_BACKEND"].annotation) == ("auto", *VOCODER_BACKENDS)
    assert get_args(Settings.model_fields["VOCODER_PRECISION"].annotation) == ("auto", *get_args(VocoderPrecision))
    assert Settings.model_fields["VOCODER_BACKEND"].default == Settings.model_fields["VOCODER_PRECISION"].default
    for name, value in (("VOCODER_BACKEND", "onnx"), ("VOCODER_PRECISION", "float16"), ("VOCODER_PRECISION", "int8")):
        with pytest.raises(ValidationError, match=name):
            Settings(**{name: value})  # type: ignore[arg-type]


def test_the_server_streams_through_openvino_and_says_so(
    openvino_decoders: dict[str, OpenVinoWaveformDecoder], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The loader registers OpenVINO for the model's decoder (the batch decoder's IncrementalVocoders find it),
    and /health says what runs the vocoder and why."""

    def compiled(decoder: Any, precision: str, *args: Any) -> OpenVinoWaveformDecoder:  # converted above
        return openvino_decoders[precision]

    monkeypatch.setattr("services.engine.model_loader.convert_waveform_decoder", compiled)
    loaded = load_model(ModelChoice(dummy="tiny", num_threads=2, vocoder_backend="openvino", vocoder_precision="auto"))
    assert isinstance(waveform_decoder_of(loaded.model.hifigan_decoder), OpenVinoWaveformDecoder)
    assert isinstance(waveform_decoder_of(copy.deepcopy(loaded.model.hifigan_decoder)), TorchWaveformDecoder)
    engine = TTSEngine(loaded)
    calls = []
    original = OpenVinoWaveformDecoder.__call__
    monkeypatch.setattr(OpenVinoWaveformDecoder, "__call__", lambda *args: calls.append(1) or original(*args))
    try:
        with app_client(engine, app_settings(tmp_path)) as client:
            model = client.get("/health").json()["model"]
            assert model["vocoder_backend"] == "openvino"
            assert model["vocoder_precision"] == loaded.vocoder_precision
            assert model["vocoder_reason"].startswith("auto: ")
            body = {"text": "Hello there.", "language": "en", "speaker_id": BUILTIN_SPEAKER, "seed": 1}
            response = client.post("/tts_stream", json=body)
            assert response.status_code == 200 and len(response.content) > 44 + 4800
            assert calls, "the stream's vocoder did not run through OpenVINO"
    finally:
        engine.shutdown()
