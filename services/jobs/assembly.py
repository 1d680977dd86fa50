"""A job's finished sentences (raw PCM files on disk) -> one audio file, with chapter marks.

A book is hours of audio (48 kB a second of PCM), so nothing here holds it whole: every piece is read and encoded
a chunk at a time, and the durations (hence the chapter marks and a WAV's sizes) come from the files' sizes before
any audio is read. The result is written atomically: a temporary file in the destination's folder, flushed,
fsynced and renamed, so `dest` is either absent, the old file, or the whole new one, never half (a full disk
included). Blocking file I/O and encoding: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer

from services.engine.pcm import CHANNELS, OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES
from services.shared_folder import temp_prefix

if TYPE_CHECKING:
    from av.container import Chapter  # only in PyAV's stubs

JOB_FORMATS = ("mp3", "opus", "m4b", "flac", "wav")

# container, codec, sample rate and bit rate per format. Speech in mono: 64 kb/s MP3 or AAC is what audiobook
# stores sell; Opus is transparent for speech at 32 kb/s and always runs at 48 kHz inside.
_CODECS: dict[str, tuple[str, str, int, int | None]] = {
    "mp3": ("mp3", "libmp3lame", OUTPUT_SAMPLE_RATE, 64_000),
    "opus": ("ogg", "libopus", 48_000, 32_000),
    "m4b": ("ipod", "aac", OUTPUT_SAMPLE_RATE, 64_000),
    "flac": ("flac", "flac", OUTPUT_SAMPLE_RATE, None),
}
# "M4B ": the brand audiobook players look for; faststart puts the index first, so the file plays while
# it downloads (one extra pass over the file when it is finished).
_MUXER_OPTIONS: dict[str, dict[str, str]] = {"m4b": {"brand": "M4B ", "movflags": "+faststart"}}
_CHUNK_BYTES = 1 << 18  # 256 KiB of PCM (5.5 s) per read: bounded memory, few encoder calls
_SAMPLE_BYTES = SAMPLE_WIDTH_BYTES * CHANNELS
_MAX_RIFF_SIZE = 0xFFFFFFFF
_NAME_LIMIT = 60  # characters of a chapter title kept in its file name


@dataclass(frozen=True)
class ChapterAudio:
    """One chapter's audio: its title and its sentences' raw PCM files (16-bit mono, 24 kHz), in order."""

    title: str
    pieces: list[Path]


@dataclass(frozen=True)
class ChapterMark:
    """Where a chapter starts and ends in the assembled file, in seconds."""

    title: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class _Layout:
    """The timeline, from file sizes alone: each chapter's first and end sample, the total."""

    bounds: list[tuple[int, int]]
    gap_samples: int
    total_samples: int


def assemble(
    chapters: list[ChapterAudio], output_format: str, dest: Path, title: str = "", gap_s: float = 0.0
) -> list[ChapterMark]:
    """Encode the chapters' PCM pieces, with `gap_s` of silence between consecutive pieces, into `dest`
    (written atomically); returns the chapter marks. OSError (ENOSPC included) leaves nothing at `dest`."""
    if output_format not in JOB_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(JOB_FORMATS)}, not {output_format!r}")
    if not chapters:
        raise ValueError("nothing to assemble: no chapters")
    if gap_s < 0:
        raise ValueError(f"gap_s must be >= 0, not {gap_s}")
    layout = _layout(chapters, round(gap_s * OUTPUT_SAMPLE_RATE))
    marks = [
        ChapterMark(chapter.title, start / OUTPUT_SAMPLE_RATE, end / OUTPUT_SAMPLE_RATE)
        for chapter, (start, end) in zip(chapters, layout.bounds, strict=True)
    ]
    descriptor, temp_name = tempfile.mkstemp(prefix=temp_prefix(), suffix=f".{output_format}", dir=dest.parent)
    os.close(descriptor)  # reopened by name: the MP4 muxer's faststart pass reopens the file by its name
    try:
        with open(temp_name, "r+b") as handle:
            if output_format == "wav":
                _write_wav(handle, chapters, layout)
            else:
                _encode(handle, chapters, layout, output_format, title, marks)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _sync_folder(dest.parent)
    return marks


def chapter_file_name(index: int, title: str, output_format: str) -> str:
    """A safe file name for one chapter's download: `03-chapter-title.mp3` (ASCII, no separators)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:_NAME_LIMIT].rstrip("-")
    extension = output_format if output_format in JOB_FORMATS else "bin"
    return f"{index:02d}-{slug}.{extension}" if slug else f"{index:02d}.{extension}"


def _layout(chapters: list[ChapterAudio], gap_samples: int) -> _Layout:
    bounds = []
    cursor = 0
    pieces_before = 0
    for chapter in chapters:
        start = cursor + (gap_samples if pieces_before and chapter.pieces else 0)
        for piece in chapter.pieces:
            cursor += (gap_samples if pieces_before else 0) + _samples_in(piece)
            pieces_before += 1
        bounds.append((start, cursor))
    # A chapter runs until the next one starts (it owns the gap after its last sentence): the marks tile the file.
    tiled = [(start, bounds[i + 1][0] if i + 1 < len(bounds) else end) for i, (start, end) in enumerate(bounds)]
    return _Layout(tiled, gap_samples, cursor)


def _samples_in(piece: Path) -> int:
    return piece.stat().st_size // _SAMPLE_BYTES


def _pcm_chunks(chapters: list[ChapterAudio], layout: _Layout) -> Iterator[bytes]:
    """Every piece's PCM, with silence between pieces, in chunks of at most _CHUNK_BYTES."""
    first = True
    for chapter in chapters:
        for piece in chapter.pieces:
            if not first:
                yield from _silence(layout.gap_samples)
            first = False
            yield from _read_piece(piece)


def _silence(samples: int) -> Iterator[bytes]:
    left = samples * _SAMPLE_BYTES
    while left > 0:
        size = min(left, _CHUNK_BYTES)
        yield bytes(size)
        left -= size


def _read_piece(piece: Path) -> Iterator[bytes]:
    # Exactly the samples its size promised when the layout was made (an odd trailing byte is no sample).
    left = _samples_in(piece) * _SAMPLE_BYTES
    with piece.open("rb") as source:
        while left > 0:
            chunk = source.read(min(left, _CHUNK_BYTES))
            if not chunk:
                raise OSError(f"{piece.name} shrank while it was being assembled")
            left -= len(chunk)
            yield chunk


def _write_wav(handle: BinaryIO, chapters: list[ChapterAudio], layout: _Layout) -> None:
    handle.write(_wav_header(layout.total_samples * _SAMPLE_BYTES))
    for chunk in _pcm_chunks(chapters, layout):
        handle.write(chunk)


def _wav_header(data_bytes: int) -> bytes:
    """A PCM WAV header for `data_bytes` of audio; RF64 (EBU Tech 3306) past RIFF's 4 GiB (about 24 h here)."""
    block_align = CHANNELS * SAMPLE_WIDTH_BYTES
    fmt = b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, CHANNELS, OUTPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE * block_align, block_align, 16
    )
    if 36 + data_bytes <= _MAX_RIFF_SIZE:
        return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + fmt + b"data" + struct.pack("<I", data_bytes)
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, 72 + data_bytes, data_bytes, data_bytes // block_align, 0)
    return (
        b"RF64" + struct.pack("<I", _MAX_RIFF_SIZE) + b"WAVE" + ds64 + fmt + b"data" + struct.pack("<I", _MAX_RIFF_SIZE)
    )


def _encode(
    handle: BinaryIO,
    chapters: list[ChapterAudio],
    layout: _Layout,
    output_format: str,
    title: str,
    marks: list[ChapterMark],
) -> None:
    container_format, codec, sample_rate, bit_rate = _CODECS[output_format]
    container = av.open(handle, mode="w", format=container_format, options=_MUXER_OPTIONS.get(output_format, {}))
    try:
        stream = cast(AudioStream, container.add_stream(codec, rate=sample_rate, layout="mono"))
        if bit_rate:
            stream.bit_rate = bit_rate
        if title:
            container.metadata["title"] = title
        if any(mark.title for mark in marks):
            container.set_chapters(_av_chapters(marks, layout))
        resampler = (
            av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            if sample_rate != OUTPUT_SAMPLE_RATE
            else None
        )
        pts = 0
        for chunk in _pcm_chunks(chapters, layout):
            frame = av.AudioFrame.from_ndarray(np.frombuffer(chunk, dtype="<i2").reshape(1, -1), layout="mono")
            frame.sample_rate = OUTPUT_SAMPLE_RATE
            pts = _mux(container, stream, resampler.resample(frame) if resampler else [frame], pts)
        if resampler is not None:
            pts = _mux(container, stream, resampler.resample(None), pts)
        for packet in stream.encode(None):
            container.mux(packet)
    except BaseException:
        # Closing writes the trailer, which fails again after a failed write (a full disk): the first error is
        # the one to report.
        with contextlib.suppress(av.error.FFmpegError, OSError):
            container.close()
        raise
    container.close()  # the trailer, and the faststart pass


def _mux(container: OutputContainer, stream: AudioStream, frames: list[av.AudioFrame], pts: int) -> int:
    for frame in frames:
        frame.pts = pts
        pts += frame.samples
        for packet in stream.encode(frame):
            container.mux(packet)
    return pts


def _av_chapters(marks: list[ChapterMark], layout: _Layout) -> list[Chapter]:
    return [
        {
            "id": number,
            "start": start,
            "end": end,
            "time_base": Fraction(1, OUTPUT_SAMPLE_RATE),
            "metadata": {"title": mark.title},
        }
        for number, (mark, (start, end)) in enumerate(zip(marks, layout.bounds, strict=True), start=1)
    ]


def _sync_folder(folder: Path) -> None:
    """fsync the folder: the rename survives a crash only once the folder is on disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
