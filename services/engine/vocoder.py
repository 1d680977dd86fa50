"""Incremental HiFi-GAN decoding: each chunk costs only its new latents plus a fixed context.

coqui's `inference_stream` re-decodes every latent generated so far at each chunk, so a stream costs
O(n^2) in the sentence length. Here the latent -> frame resampling that `HifiDecoder.forward` does with
`F.interpolate` is recomputed for just the frames a chunk needs (it is a local linear interpolation), and
the HiFi-GAN, whose receptive field is finite, runs over those frames with a few frames of context on
both sides, so the concatenated chunks match a one-shot decode of the same latents (measured: 71 dB SNR
with a boundary every 4 tokens; exact to float rounding with 10 frames of context).

The generator itself runs behind `WaveformDecoder` (torch, or OpenVINO: services/engine/vocoder_backends.py),
which model_loader registers for the loaded model's decoder (`use_waveform_decoder`); a decoder with none
registered (a copy, a test's) runs its torch module.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.nn.utils import parametrize
from TTS.tts.layers.xtts.hifigan_decoder import HifiDecoder

# HiFi-GAN frames decoded either side of a chunk and thrown away. Its receptive field is about +-9
# frames; its far edge contributes little, so 6 keeps chunk seams 70 dB below the signal while costing
# 40% less recomputation than exact (10). Each frame is 256 samples, so this is also the lookahead.
DECODER_CONTEXT_FRAMES = 6


def fold_weight_norm(decoder: HifiDecoder) -> int:
    """Fold weight-norm parametrizations into plain weights, so inference stops renormalising per call."""
    folded = 0
    for module in decoder.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            folded += 1
    return folded


class WaveformDecoder(Protocol):
    """HiFi-GAN's generator, whatever runs it: frames [B, C, T] and speaker embeddings [B or 1, E, 1] in, both
    float32 on the model's device; the waveform [B, 1, T * hop] out, float32."""

    @property
    def frame_bucket(self) -> int:
        """Frame counts this decoder runs fastest at are multiples of this (1: any)."""
        ...

    def __call__(self, frames: torch.Tensor, speaker_embedding: torch.Tensor) -> torch.Tensor: ...


class TorchWaveformDecoder:
    """coqui's generator module in its own precision (VOCODER_PRECISION casts it); float32 in and out."""

    frame_bucket = 1

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.dtype = next(module.parameters()).dtype

    def __call__(self, frames: torch.Tensor, speaker_embedding: torch.Tensor) -> torch.Tensor:
        wav: torch.Tensor = self.module(frames.to(self.dtype), g=speaker_embedding.to(self.dtype))
        return wav.float()


_REGISTERED: weakref.WeakKeyDictionary[HifiDecoder, WaveformDecoder] = weakref.WeakKeyDictionary()


def use_waveform_decoder(decoder: HifiDecoder, waveform: WaveformDecoder | None) -> None:
    """Run `decoder`'s generator through `waveform` from now on (None: back to its torch module)."""
    if waveform is None:
        _REGISTERED.pop(decoder, None)
    else:
        _REGISTERED[decoder] = waveform


def waveform_decoder_of(decoder: HifiDecoder) -> WaveformDecoder:
    """What runs `decoder`'s generator: the one registered for it, else its torch module."""
    registered = _REGISTERED.get(decoder)
    return registered if registered is not None else TorchWaveformDecoder(decoder.waveform_decoder)


class _LinearResample:
    """One `F.interpolate(mode="linear", scale_factor=s)` stage, computable for any output range."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.inverse = 1.0 / scale

    def output_length(self, input_length: int) -> int:
        return math.floor(input_length * self.scale)

    def settled_outputs(self, settled_inputs: int) -> int:
        """Outputs whose two source inputs both lie below `settled_inputs` (so no edge clamping)."""
        if settled_inputs < 2:
            return 0
        # need floor(src) + 1 <= settled_inputs - 1 with src = (j + 0.5) / scale - 0.5
        bound = (settled_inputs - 1.5) * self.scale - 0.5
        return max(0, math.floor(bound) + 1)

    def source(self, start: int, stop: int, input_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left and right source indices and the weight of the right one, as PyTorch computes them."""
        dst = torch.arange(start, stop, dtype=torch.float64)
        src = ((dst + 0.5) * self.inverse - 0.5).clamp(min=0.0)
        left = src.floor().long()
        right = torch.clamp(left + 1, max=input_length - 1)
        return left, right, (src - left).to(torch.float32)


class IncrementalVocoder:
    """Turns GPT latents pushed one at a time into waveform chunks that concatenate to a one-shot decode."""

    def __init__(
        self,
        decoder: HifiDecoder,
        speaker_embedding: torch.Tensor,
        speed: float = 1.0,
        waveform: WaveformDecoder | None = None,
    ) -> None:
        self._decoder = decoder
        # torch or OpenVINO, in VOCODER_PRECISION; chunks come out float32 either way
        self._waveform = waveform if waveform is not None else waveform_decoder_of(decoder)
        self._speaker_embedding = speaker_embedding.float()
        stages = []
        if speed != 1.0:
            stages.append(_LinearResample(1.0 / max(speed, 0.05)))  # as Xtts.inference's length_scale
        stages.append(_LinearResample(decoder.ar_mel_length_compression / decoder.output_hop_length))
        if decoder.output_sample_rate != decoder.input_sample_rate:
            stages.append(_LinearResample(decoder.output_sample_rate / decoder.input_sample_rate))
        self._stages = stages
        self._latents: list[torch.Tensor] = []
        self._emitted_frames = 0

    @property
    def frames_per_latent(self) -> float:
        """Decoder frames one latent becomes."""
        return math.prod(stage.scale for stage in self._stages)

    def push(self, latent: torch.Tensor) -> None:
        """Add the next latent ([1, C] or [C])."""
        self._latents.append(latent.reshape(-1))

    def pending_frames(self) -> int:
        """Frames that could be emitted now without waiting for more latents."""
        return max(0, self._settled_frames() - DECODER_CONTEXT_FRAMES - self._emitted_frames)

    def decode_ready(self) -> torch.Tensor:
        """Waveform ([samples]) for every frame settled so far and not yet emitted."""
        return decode_together([(self, False)])[0]

    def finish(self) -> torch.Tensor:
        """Waveform for the rest of the sentence, once the last latent has been pushed."""
        return decode_together([(self, True)])[0]

    def _window(self, final: bool) -> _Window | None:
        """The frames the next chunk needs (None: nothing to emit); marks them emitted."""
        if final:
            stop = available = self._total_frames(len(self._latents))
            input_length: int | None = len(self._latents)
        else:
            available = self._settled_frames()
            stop, input_length = available - DECODER_CONTEXT_FRAMES, None
        start = self._emitted_frames
        if stop <= start:
            return None
        window_start = max(0, start - DECODER_CONTEXT_FRAMES)
        window_stop = min(available, stop + DECODER_CONTEXT_FRAMES)
        bucket = self._waveform.frame_bucket
        if bucket > 1:  # widen to a frame count the decoder has kernels for, with frames already decoded
            window_start = max(0, window_stop - -(-(window_stop - window_start) // bucket) * bucket)
        self._emitted_frames = stop
        frames = self._frames(window_start, window_stop, input_length)
        return _Window(self, frames, start - window_start, stop - window_start)

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, device=self._speaker_embedding.device)

    def _settled_frames(self) -> int:
        count = len(self._latents)
        for stage in self._stages:
            count = stage.settled_outputs(count)
        return count

    def _total_frames(self, latent_count: int) -> int:
        count = latent_count
        for stage in self._stages:
            count = stage.output_length(count)
        return count

    def _frames(self, start: int, stop: int, input_length: int | None) -> torch.Tensor:
        """Decoder input frames [C, stop - start], resampled from the latents as HifiDecoder.forward does."""
        lengths = [input_length if input_length is not None else len(self._latents)]
        for stage in self._stages[:-1]:
            lengths.append(stage.output_length(lengths[-1]) if input_length is not None else 1 << 62)

        def values(level: int, lo: int, hi: int) -> torch.Tensor:
            if level == 0:
                return torch.stack(self._latents[lo:hi], dim=1)
            stage = self._stages[level - 1]
            left, right, weight = stage.source(lo, hi, lengths[level - 1])
            base = int(left[0])
            inputs = values(level - 1, base, int(right[-1]) + 1)
            left_values = inputs[:, left - base]
            right_values = inputs[:, right - base]
            weight = weight.to(inputs.device)
            return left_values * (1.0 - weight) + right_values * weight

        return values(len(self._stages), start, stop)


@dataclass
class _Window:
    """One chunk's decoder input [C, T] and the frames of it to keep, [keep_from, keep_to)."""

    vocoder: IncrementalVocoder
    frames: torch.Tensor
    keep_from: int
    keep_to: int


def decode_together(chunks: list[tuple[IncrementalVocoder, bool]]) -> list[torch.Tensor]:
    """The next chunk of each vocoder (`True`: its `finish()`, else its `decode_ready()`), in order.

    Chunks of the same frame count whose vocoders share a waveform decoder go through it in one call
    ([B, C, T]): OpenVINO's bf16 kernels cost less per chunk in a batch (bench/vocoder_backends.py). Each
    chunk is what its vocoder would have made alone, to float rounding.
    """
    results: list[torch.Tensor | None] = [None] * len(chunks)
    groups: dict[tuple[int, int], list[tuple[int, _Window]]] = {}
    for index, (vocoder, final) in enumerate(chunks):
        window = vocoder._window(final)
        if window is None:
            results[index] = vocoder._empty()
        else:
            groups.setdefault((id(vocoder._waveform), window.frames.shape[-1]), []).append((index, window))
    for members in groups.values():
        waveform = members[0][1].vocoder._waveform
        frames = torch.stack([window.frames for _, window in members])
        embeddings = torch.cat([window.vocoder._speaker_embedding.reshape(1, -1, 1) for _, window in members])
        wavs = waveform(frames, embeddings)[:, 0]
        hop = wavs.shape[-1] // frames.shape[-1]
        for row, (index, window) in enumerate(members):
            results[index] = wavs[row, window.keep_from * hop : window.keep_to * hop]
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]
