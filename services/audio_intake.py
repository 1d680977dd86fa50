"""Reference audio uploads to mono float samples, decoded by ffmpeg in a bounded child process.

The container is recognised from its first bytes against a short list (WAV, FLAC, MP3, Ogg, MP4/M4A,
WebM/Matroska) and ffmpeg is told that demuxer, so playlists and other formats that would make
ffmpeg open further files are never parsed. The child gets a time limit, a memory limit, one thread,
and decodes no more than the seconds asked for.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from services.engine.cloning import CLONE_SAMPLE_RATE
from services.errors import InvalidAudio, UnsupportedMediaType

DECODE_TIMEOUT_S = 20.0
DECODE_MEMORY_BYTES = 1 << 30
MIN_SECONDS = 1.0
SILENCE_PEAK = 1e-3  # -60 dBFS


def sniff_container(head: bytes) -> str | None:
    """ffmpeg's demuxer name for the supported containers, from the file's first bytes."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mov"  # mov,mp4,m4a,3gp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM, what browsers record
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def decode_reference(data: bytes, filename: str, max_seconds: float) -> np.ndarray:
    """Mono float32 samples at 22050 Hz of at most `max_seconds`; raises 415/400-class errors."""
    container = sniff_container(data[:16])
    if container is None:
        raise UnsupportedMediaType(
            f"{filename!r} is not a supported audio file (WAV, FLAC, MP3, OGG/Opus, M4A, WebM)", filename=filename
        )
    with tempfile.TemporaryDirectory(prefix="xtts-upload-") as folder:
        path = Path(folder) / "input"
        path.write_bytes(data)
        # prlimit rather than preexec_fn: this runs on a worker thread, where preexec_fn is unsafe.
        command = [
            "prlimit", f"--as={DECODE_MEMORY_BYTES}", f"--cpu={int(DECODE_TIMEOUT_S) + 1}",
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1",
            "-f", container, "-i", str(path),
            "-map", "0:a:0", "-t", f"{max_seconds:.3f}", "-ac", "1", "-ar", str(CLONE_SAMPLE_RATE),
            "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, timeout=DECODE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise InvalidAudio(f"{filename!r} took too long to decode", filename=filename) from None
        except FileNotFoundError:
            raise RuntimeError("ffmpeg is not installed; `make run` installs it (apt-get install ffmpeg)") from None
    message = result.stderr.decode("utf-8", "replace").strip().splitlines()
    if result.returncode != 0 and "matches no streams" in " ".join(message):
        raise UnsupportedMediaType(f"{filename!r} has no audio stream", filename=filename)
    samples = np.frombuffer(result.stdout[: len(result.stdout) // 4 * 4], dtype="<f4")
    if result.returncode != 0 and samples.size == 0:
        reason = message[-1] if message else f"ffmpeg exit {result.returncode}"
        raise InvalidAudio(f"{filename!r} could not be decoded: {reason}", filename=filename)
    return samples.copy()


def check_usable(samples: np.ndarray, filename: str) -> None:
    """Refuse audio too short or too quiet to clone a voice from, saying which."""
    seconds = samples.size / CLONE_SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise InvalidAudio(
            f"{filename!r} has {seconds:.2f} s of audio; cloning needs at least {MIN_SECONDS:g} s (3-10 s is best)",
            filename=filename,
            seconds=round(seconds, 3),
        )
    if not np.isfinite(samples).all() or float(np.abs(samples).max()) < SILENCE_PEAK:
        raise InvalidAudio(f"{filename!r} is silent; cloning needs speech", filename=filename)
