"""PCM conversion and WAV framing for the audio the server sends."""

from __future__ import annotations

import struct

import torch

OUTPUT_SAMPLE_RATE = 24000
SAMPLE_WIDTH_BYTES = 2
CHANNELS = 1
# A streamed WAV's length is unknown when its header goes out: the largest sizes tell players to
# read until the connection ends (what ffmpeg and browsers do with such streams).
_UNKNOWN_SIZE = 0xFFFFFFFF


def to_pcm16(wav: torch.Tensor) -> bytes:
    """Float waveform in [-1, 1] to little-endian 16-bit PCM bytes (clipped as coqui's server does).

    Scales in place: callers hand over a chunk they no longer need, so the only copies are the
    int16 cast and the bytes object the response needs anyway.
    """
    samples = wav.detach().clamp_(-1.0, 1.0).mul_(32767).to(device="cpu", dtype=torch.int16)
    return samples.numpy().astype("<i2", copy=False).tobytes()


def wav_header(data_bytes: int | None, sample_rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    """A 44-byte PCM WAV header; `None` for a stream whose length is not known yet."""
    byte_rate = sample_rate * CHANNELS * SAMPLE_WIDTH_BYTES
    data_size = _UNKNOWN_SIZE - 36 if data_bytes is None else data_bytes
    riff_size = _UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, CHANNELS, sample_rate, byte_rate, CHANNELS * SAMPLE_WIDTH_BYTES, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def pcm_seconds(byte_count: int, sample_rate: int = OUTPUT_SAMPLE_RATE) -> float:
    """Seconds of 16-bit mono audio in `byte_count` bytes."""
    return byte_count / (SAMPLE_WIDTH_BYTES * CHANNELS * sample_rate)
