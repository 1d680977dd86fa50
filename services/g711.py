"""G.711 companding (ITU-T G.711): 16-bit linear PCM to 8-bit mu-law or A-law, what telephone networks carry
(Twilio's and most SIP media streams take mu-law at 8 kHz). Pure numpy; Python's `audioop` is deprecated."""

from __future__ import annotations

import numpy as np

_MULAW_BIAS = 0x21
_MULAW_CLIP = 8159


def _segments(magnitude: np.ndarray, shift: int) -> np.ndarray:
    """The segment (0-7) of each magnitude: the position of its highest set bit above `shift`."""
    segment = np.zeros(magnitude.shape, dtype=np.int32)
    for bit in range(1, 8):
        segment[magnitude >= (1 << (bit + shift))] = bit
    return segment


def linear_to_mulaw(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> mu-law bytes, one per sample (as Sun's g711.c, which audioop followed)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 2  # mu-law codes 14-bit samples
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), _MULAW_CLIP) + _MULAW_BIAS
    segment = _segments(magnitude, 5)
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    code = np.where(magnitude > 0x1FFF, 0x7F, (segment << 4) | mantissa)  # full scale: the loudest code
    return (code ^ mask).astype(np.uint8).tobytes()


def linear_to_alaw(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> A-law bytes, one per sample."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32) >> 3  # A-law codes 13-bit samples
    sign = np.where(samples >= 0, 0x80, 0)
    magnitude = np.where(samples >= 0, samples, -samples - 1)
    magnitude = np.minimum(magnitude, 0x0FFF)
    segment = _segments(magnitude, 4)
    mantissa = np.where(segment == 0, magnitude >> 1, magnitude >> segment) & 0x0F
    return ((sign | (segment << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()
