"""The engine's output: 16-bit mono PCM at 24 kHz."""

from __future__ import annotations

import torch

OUTPUT_SAMPLE_RATE = 24000
SAMPLE_WIDTH_BYTES = 2
CHANNELS = 1


def to_pcm16(wav: torch.Tensor) -> bytes:
    """Float waveform in [-1, 1] to little-endian 16-bit PCM bytes (clipped as coqui's server does).

    Scales in place: callers hand over a chunk they no longer need, so the only copies are the
    int16 cast and the bytes object the response needs anyway.
    """
    samples = wav.detach().clamp_(-1.0, 1.0).mul_(32767).to(device="cpu", dtype=torch.int16)
    return samples.numpy().astype("<i2", copy=False).tobytes()


def pcm_seconds(byte_count: int, sample_rate: int = OUTPUT_SAMPLE_RATE) -> float:
    """Seconds of 16-bit mono audio in `byte_count` bytes."""
    return byte_count / (SAMPLE_WIDTH_BYTES * CHANNELS * sample_rate)
