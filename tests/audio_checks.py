"""Making test audio with ffmpeg, and assertions on the audio users receive."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import torch


def parse_streamed_wav(body: bytes) -> tuple[dict[str, int], np.ndarray]:
    """Header fields and int16 samples of a WAV whose data size may be unknown (streamed)."""
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE", body[:16]
    assert body[12:16] == b"fmt "
    audio_format, channels, rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", body[20:36])
    assert body[36:40] == b"data"
    samples = np.frombuffer(body[44 : 44 + (len(body) - 44) // 2 * 2], dtype="<i2")
    return {"format": audio_format, "channels": channels, "rate": rate, "bits": bits}, samples


def assert_pcm_wav(body: bytes, min_seconds: float = 0.1) -> np.ndarray:
    header, samples = parse_streamed_wav(body)
    assert header == {"format": 1, "channels": 1, "rate": 24000, "bits": 16}
    assert samples.size >= min_seconds * 24000, samples.size
    assert np.abs(samples).max() > 0, "audio is all zeros"
    return samples


def assert_complete_wav(body: bytes) -> np.ndarray:
    """A WAV with exact sizes, readable by Python's wave module."""
    with wave.open(io.BytesIO(body)) as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (24000, 1, 2)
        frames = reader.readframes(reader.getnframes())
    return np.frombuffer(frames, dtype="<i2")


def ffprobe(data: bytes) -> dict:
    """ffprobe's view of an audio file's first stream and format."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", "-i", "pipe:0"],
        input=data,
        capture_output=True,
        check=True,
    )
    return json.loads(result.stdout)


FORMATS = {
    "wav": [],
    "flac": [],
    "mp3": ["-b:a", "64k"],
    "ogg": ["-c:a", "libopus", "-ar", "48000"],
    "m4a": ["-c:a", "aac"],
}


def make_clip(folder: Path, extension: str, seconds: float = 3.0, silent: bool = False, rate: int = 44100) -> Path:
    """A stereo tone-and-noise clip made with ffmpeg, in the given container."""
    path = folder / f"clip-{seconds}-{silent}-{rate}.{extension}"
    if path.exists():
        return path
    source = "anullsrc=r=44100:cl=stereo" if silent else f"sine=frequency=180:sample_rate={rate}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-f", "lavfi", "-i",
         f"anoisesrc=a=0.05:r={rate}:d={seconds}", "-filter_complex", "amix=inputs=2:duration=shortest",
         "-t", str(seconds), "-ac", "2", "-ar", str(rate), *FORMATS[extension], str(path)]
        if not silent else
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds), str(path)],
        check=True,
    )  # fmt: skip
    return path


def pcm_snr_db(signal: bytes, reference: bytes) -> float:
    """Signal-to-noise ratio in dB of 16-bit PCM against a reference of the same length."""
    ours = np.frombuffer(signal, dtype="<i2").astype(np.float64)
    theirs = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    noise = float(((ours - theirs) ** 2).sum())
    return float(10 * np.log10(max(float((theirs**2).sum()), 1e-20) / max(noise, 1e-20)))


def snr_db(signal: torch.Tensor, reference: torch.Tensor) -> float:
    """How far `signal` is from `reference`, in dB of the reference's power."""
    return float(10 * torch.log10(reference.pow(2).sum() / (signal - reference).pow(2).sum().clamp_min(1e-20)))
