"""A job's result file from its sentences' PCM: every format plays for the right time, m4b carries its chapters,
and a failed write (a full disk) leaves nothing half-written behind."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tracemalloc
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from services.engine.pcm import OUTPUT_SAMPLE_RATE
from services.jobs import assembly
from services.jobs.assembly import JOB_FORMATS, ChapterAudio, ChapterMark, assemble, chapter_file_name

pytestmark = pytest.mark.unit

GAP_S = 0.2
GAP_SAMPLES = round(GAP_S * OUTPUT_SAMPLE_RATE)
# Lossy codecs pad to whole frames (AAC's 1024 samples is the largest here): two frames of slack.
FRAME_SLACK_S = 2 * 1024 / OUTPUT_SAMPLE_RATE
OUTPUT_RATES = {"mp3": 24000, "opus": 48000, "m4b": 24000, "flac": 24000, "wav": 24000}


def tone(samples: int, pitch: float) -> bytes:
    return (np.sin(np.arange(samples) * pitch) * 9000).astype("<i2").tobytes()


def write_piece(folder: Path, name: str, samples: int, pitch: float = 0.05) -> Path:
    path = folder / f"{name}.pcm"
    path.write_bytes(tone(samples, pitch))
    return path


@pytest.fixture
def book(tmp_path: Path) -> list[ChapterAudio]:
    """Two chapters: one sentence of 0.5 s, then two of 0.75 s and 1 s."""
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    return [
        ChapterAudio("Opening", [write_piece(pieces, "a", 12_000)]),
        ChapterAudio("The Storm", [write_piece(pieces, "b", 18_000, 0.08), write_piece(pieces, "c", 24_000, 0.1)]),
    ]


def decoded(path: Path) -> tuple[int, int, np.ndarray]:
    """Sample rate, channels and the samples of the file's audio."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return stream.rate, stream.channels, np.concatenate(frames)


def probe(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-show_chapters", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("output_format", JOB_FORMATS)
def test_each_format_plays_for_the_sentences_plus_the_gaps_between_them(
    book: list[ChapterAudio], tmp_path: Path, output_format: str
) -> None:
    dest = tmp_path / f"book.{output_format}"
    marks = assemble(book, output_format, dest, title="A Book", gap_s=GAP_S)
    expected_s = (12_000 + 18_000 + 24_000 + 2 * GAP_SAMPLES) / OUTPUT_SAMPLE_RATE  # 2.65 s
    rate, channels, samples = decoded(dest)
    assert (rate, channels) == (OUTPUT_RATES[output_format], 1)
    assert len(samples) / rate == pytest.approx(expected_s, abs=FRAME_SLACK_S)
    assert marks[-1].end_s == pytest.approx(expected_s)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["pieces", dest.name])  # no temporary left


def test_wav_is_the_pcm_in_order_with_silence_between_sentences_and_its_real_sizes(
    book: list[ChapterAudio], tmp_path: Path
) -> None:
    dest = tmp_path / "book.wav"
    assemble(book, "wav", dest, gap_s=GAP_S)
    pieces = [piece.read_bytes() for chapter in book for piece in chapter.pieces]
    silence = bytes(2 * GAP_SAMPLES)
    with wave.open(str(dest), "rb") as reader:
        assert (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) == (24000, 1, 2)
        assert reader.readframes(reader.getnframes()) == silence.join(pieces)
    assert dest.stat().st_size == 44 + len(silence.join(pieces))


def test_marks_tile_the_file_each_chapter_starting_at_its_first_sentence(
    book: list[ChapterAudio], tmp_path: Path
) -> None:
    marks = assemble(book, "wav", tmp_path / "book.wav", gap_s=GAP_S)
    second_starts = (12_000 + GAP_SAMPLES) / OUTPUT_SAMPLE_RATE
    total = second_starts + (18_000 + GAP_SAMPLES + 24_000) / OUTPUT_SAMPLE_RATE
    assert marks == [
        ChapterMark("Opening", 0.0, pytest.approx(second_starts)),  # type: ignore[arg-type]
        ChapterMark("The Storm", pytest.approx(second_starts), pytest.approx(total)),  # type: ignore[arg-type]
    ]


def test_m4b_carries_chapter_marks_with_titles_and_the_book_title(book: list[ChapterAudio], tmp_path: Path) -> None:
    dest = tmp_path / "book.m4b"
    marks = assemble(book, "m4b", dest, title="Weather Tales", gap_s=GAP_S)
    info = probe(dest)
    chapters = [
        (chapter["tags"]["title"], float(chapter["start_time"]), float(chapter["end_time"]))
        for chapter in info["chapters"]
    ]
    assert [title for title, _, _ in chapters] == ["Opening", "The Storm"]
    for (_, start_s, end_s), mark in zip(chapters, marks, strict=True):
        assert (start_s, end_s) == (pytest.approx(mark.start_s, abs=0.001), pytest.approx(mark.end_s, abs=0.001))
    assert info["format"]["tags"]["title"] == "Weather Tales"
    assert info["format"]["tags"]["major_brand"].strip() == "M4B"
    assert [stream["codec_name"] for stream in info["streams"] if stream["codec_type"] == "audio"] == ["aac"]


@pytest.mark.parametrize("output_format", ["mp3", "opus", "flac"])
def test_other_formats_carry_the_book_title(book: list[ChapterAudio], tmp_path: Path, output_format: str) -> None:
    dest = tmp_path / f"book.{output_format}"
    assemble(book, output_format, dest, title="Weather Tales")
    info = probe(dest)
    tags = {**info["format"].get("tags", {}), **info["streams"][0].get("tags", {})}  # Ogg keeps it on the stream
    assert tags["title"] == "Weather Tales"


class FullDisk:
    """A file on a disk that fills up after `room` bytes."""

    def __init__(self, handle: Any, room: int) -> None:
        self._handle = handle
        self._room = room

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()

    def write(self, data: bytes) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return int(self._handle.write(data))


@pytest.mark.parametrize("output_format", ["wav", "m4b", "mp3"])
def test_a_full_disk_leaves_the_old_result_and_no_temporary_file(
    book: list[ChapterAudio], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_format: str
) -> None:
    dest = tmp_path / f"book.{output_format}"
    dest.write_bytes(b"the previous result")

    def open_on_full_disk(path: str, mode: str) -> FullDisk:
        return FullDisk(open(path, mode), room=20_000)  # the book is ~100 kB in wav, ~20 kB in m4b

    monkeypatch.setattr(assembly, "open", open_on_full_disk, raising=False)
    with pytest.raises(OSError) as raised:
        assemble(book, output_format, dest, title="A Book", gap_s=GAP_S)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([dest.name, "pieces"])
    assert dest.read_bytes() == b"the previous result"


def test_a_long_piece_is_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    piece = tmp_path / "long.pcm"
    piece.write_bytes(bytes(24 * 1024 * 1024))  # 4.4 minutes of one sentence
    tracemalloc.start()
    try:
        assemble([ChapterAudio("", [piece])], "wav", tmp_path / "long.wav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert (tmp_path / "long.wav").stat().st_size == 44 + piece.stat().st_size


def test_a_wav_over_4_gib_gets_an_rf64_header_with_its_real_length(tmp_path: Path) -> None:
    data_bytes = 5 * 2**30  # 31 hours: past what RIFF's 32-bit sizes can say
    head = tmp_path / "head.wav"
    head.write_bytes(assembly._wav_header(data_bytes) + bytes(48_000))
    info = probe(head)
    assert info["format"]["format_name"] == "wav"
    assert float(info["format"]["duration"]) == pytest.approx(data_bytes / 48_000, rel=1e-6)


def test_chapter_file_names_are_numbered_safe_and_keep_the_format() -> None:
    assert chapter_file_name(3, "Chapter Title", "mp3") == "03-chapter-title.mp3"
    assert chapter_file_name(12, "../../etc/passwd", "m4b") == "12-etc-passwd.m4b"
    assert chapter_file_name(1, "Über die Brücke: Teil 2!", "opus") == "01-uber-die-brucke-teil-2.opus"
    assert chapter_file_name(4, "", "wav") == "04.wav"
    assert chapter_file_name(5, "東京", "flac") == "05.flac"
    assert len(chapter_file_name(6, "word " * 100, "mp3")) < 80
    assert "/" not in chapter_file_name(7, "a/b\\c", "mp3") and "\\" not in chapter_file_name(7, "a/b\\c", "mp3")


def test_an_unknown_format_is_refused_before_anything_is_written(book: list[ChapterAudio], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mp3, opus, m4b, flac, wav"):
        assemble(book, "aac", tmp_path / "book.aac")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pieces"]
