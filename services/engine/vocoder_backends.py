"""What runs HiFi-GAN's generator (VOCODER_BACKEND) and in which precision (VOCODER_PRECISION).

`torch` runs coqui's module as it is (cast to bfloat16 for VOCODER_PRECISION=bfloat16). `openvino` converts
just the generator (`HifiDecoder.waveform_decoder`, weight norm already folded) in memory at start-up, with
a dynamic frame axis and the speaker embedding as an input, and compiles it for the CPU with the precision
as OpenVINO's inference-precision hint (bf16 runs on AMX / AVX-512 BF16; the weights stay float32).
Measured on 2 Xeon cores with AMX, a 20-token chunk, ratios to torch float32: see README
("Choosing a precision") and bench/vocoder_backends.py.

OpenVINO's CPU plugin builds its kernels for each input shape the first time it sees it (about ten times
one run's cost), so this decoder asks IncrementalVocoder for frame counts in multiples of FRAME_BUCKET
(it widens a chunk's left context with frames it has already decoded, which only adds accuracy) and
compiles those shapes at start-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from TTS.tts.layers.xtts.hifigan_decoder import HifiDecoder

from services.engine.hardware import CpuFeatures
from services.engine.precision import VocoderPrecision

logger = logging.getLogger(__name__)

VocoderBackend = Literal["torch", "openvino"]
VOCODER_BACKENDS: tuple[VocoderBackend, ...] = ("torch", "openvino")

# OpenVINO: frame counts a chunk is widened to a multiple of; 16 frames are 4096 samples (0.17 s). Chunks up
# to MAX_WARM_FRAMES (a 20-token chunk and its context are ~100 frames) are compiled at start-up.
FRAME_BUCKET = 16
MAX_WARM_FRAMES = 128
_OV_PRECISION = {"float32": "f32", "bfloat16": "bf16"}


@dataclass(frozen=True)
class VocoderChoice:
    """The vocoder's backend and precision, and why (`set`, or what `auto` saw)."""

    backend: VocoderBackend
    precision: VocoderPrecision
    reason: str = "set"

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_vocoder(
    backend: VocoderBackend | Literal["auto"],
    precision: VocoderPrecision | Literal["auto"],
    device: torch.device,
    cpu: CpuFeatures,
) -> VocoderChoice:
    """VOCODER_BACKEND / VOCODER_PRECISION with `auto` resolved for this device and CPU.

    auto backend: OpenVINO on the CPU (when installed), torch on a GPU. auto precision: bfloat16 where the
    CPU does bf16 arithmetic in hardware (AVX-512 BF16 or AMX; 31 dB waveform SNR against float32, within
    the 25 dB bound tests/test_vocoder_backends.py holds), else float32 (emulated bf16 is slower than
    float32); float32 on a GPU until the GPU bench has shown bfloat16 there.
    """
    if device.type != "cpu" and backend == "openvino":
        raise ValueError("VOCODER_BACKEND=openvino runs on the CPU only; on a GPU use torch (or auto)")
    why: list[str] = []
    if backend == "auto":
        if device.type != "cpu":
            backend, note = "torch", f"torch on {device.type}"
        elif openvino_available():
            backend, note = "openvino", "OpenVINO on the CPU"
        else:
            backend, note = "torch", "torch (OpenVINO is not installed)"
        why.append(note)
    if precision == "auto":
        if device.type != "cpu":
            precision, note = "float32", f"float32 on {device.type} until the GPU bench has shown bfloat16"
        elif cpu.native_bf16:
            named = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in cpu.flags]
            precision, note = "bfloat16", f"bfloat16: CPU has {named[0]}"
        else:
            precision, note = "float32", "float32: CPU has no bf16 arithmetic (avx512_bf16/amx_bf16)"
        why.append(note)
    return VocoderChoice(backend, precision, "auto: " + "; ".join(why) if why else "set")


class OpenVinoWaveformDecoder:
    """HiFi-GAN's generator compiled by OpenVINO for the CPU (a `vocoder.WaveformDecoder`).

    One infer request, so calls must come from one thread at a time (the model thread).
    """

    frame_bucket = FRAME_BUCKET

    def __init__(self, compiled: Any, precision: VocoderPrecision) -> None:
        self.compiled = compiled
        self.precision = precision
        self._request = compiled.create_infer_request()

    def __call__(self, frames: torch.Tensor, speaker_embedding: torch.Tensor) -> torch.Tensor:
        if speaker_embedding.shape[0] != frames.shape[0]:
            speaker_embedding = speaker_embedding.expand(frames.shape[0], -1, -1)
        self._request.infer([_as_numpy(frames), _as_numpy(speaker_embedding)])
        # the request reuses its output buffer on the next call: copy out
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy())

    def warm_up(self, lengths: list[int], embedding_dim: int, batch: int = 1) -> float:
        """Build the kernels for these frame counts now, so no stream pays for them. Returns seconds."""
        started = time.perf_counter()
        channels = self.compiled.inputs[0].get_partial_shape()[1].get_length()
        for length in lengths:
            self(torch.zeros(batch, channels, length), torch.zeros(batch, embedding_dim, 1))
        return time.perf_counter() - started


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def openvino_model(decoder: HifiDecoder) -> Any:
    """`decoder.waveform_decoder` (float32, weight norm folded) as an OpenVINO model: frames [B, C, T] and the
    speaker embedding [B, E, 1] in, B and T dynamic."""
    import openvino as ov

    generator = decoder.waveform_decoder
    if generator.conv_pre.weight.dtype != torch.float32:
        raise ValueError("convert the vocoder from its float32 weights (OpenVINO's precision hint does the rest)")
    channels = generator.conv_pre.in_channels
    embedding_dim = generator.cond_layer.in_channels
    example = (torch.zeros(1, channels, 8), torch.zeros(1, embedding_dim, 1))
    with torch.no_grad():
        # traced here, small and unchecked: convert_model's own trace checks it on two more runs (3x the time)
        traced = torch.jit.trace(generator, example, check_trace=False)
        return ov.convert_model(
            traced,
            example_input=example,
            input=[ov.PartialShape([-1, channels, -1]), ov.PartialShape([-1, embedding_dim, 1])],
        )


def compile_waveform_decoder(
    model: Any, precision: VocoderPrecision, threads: int, cache_dir: Path | None = None
) -> OpenVinoWaveformDecoder:
    """Compile the converted generator for the CPU: `precision` as the inference-precision hint, tuned for
    latency on `threads` threads (torch's). `cache_dir`: OpenVINO's CACHE_DIR for compiled blobs."""
    import openvino as ov

    core = ov.Core()
    if cache_dir is not None:
        core.set_property({"CACHE_DIR": str(cache_dir)})
    config = {
        "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
    }
    return OpenVinoWaveformDecoder(core.compile_model(model, "CPU", config), precision)


def convert_waveform_decoder(
    decoder: HifiDecoder, precision: VocoderPrecision, threads: int, warm_frames: int = MAX_WARM_FRAMES
) -> OpenVinoWaveformDecoder:
    """The generator converted, compiled and its bucketed frame counts up to `warm_frames` built."""
    started = time.perf_counter()
    model = openvino_model(decoder)
    converted = time.perf_counter()
    waveform = compile_waveform_decoder(model, precision, threads)
    compiled = time.perf_counter()
    lengths = list(range(FRAME_BUCKET, warm_frames + 1, FRAME_BUCKET))
    warm_s = waveform.warm_up(lengths, decoder.waveform_decoder.cond_layer.in_channels)
    logger.info(
        "vocoder converted to OpenVINO in %.1f s, compiled (%s, %d threads) in %.1f s, %d frame counts built in %.1f s",
        converted - started, _OV_PRECISION[precision], threads, compiled - converted, len(lengths), warm_s,
    )  # fmt: skip
    return waveform
