"""Output formats without HTTP: incremental encoders, WAV headers, and which format/rate pairs exist."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from services.encoders import AudioEncoder, encode_whole, wav_header
from services.errors import InvalidInput
from services.formats import OPUS_SAMPLE_RATES, OUTPUT_FORMATS, SAMPLE_RATES, format_problem
from tests.audio_checks import assert_complete_wav, ffprobe, parse_streamed_wav

CODECS = {"wav": "pcm_s16le", "mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac"}


def tone(seconds: float, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def decoded_seconds(data: bytes) -> float:
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "24000", "-"],
                         input=data, capture_output=True, check=True).stdout  # fmt: skip
    return len(pcm) / 48000


@pytest.mark.parametrize(
    ("output_format", "sample_rate"),
    [("wav", 24000), ("wav", 16000), ("mp3", 24000), ("mp3", 44100), ("opus", 48000), ("opus", 16000),
     ("aac", 16000), ("flac", 22050)],
)  # fmt: skip
def test_chunks_encoded_one_by_one_make_one_decodable_file(output_format: str, sample_rate: int) -> None:
    encoder = AudioEncoder(output_format, sample_rate)  # type: ignore[arg-type]
    parts = [encoder.start()]
    parts += [encoder.encode(tone(0.25)) for _ in range(8)]  # 2 s in 8 chunks, as a stream arrives
    parts.append(encoder.finish())
    data = b"".join(parts)
    stream = ffprobe(data)["streams"][0]
    assert stream["codec_name"] == CODECS[output_format] and stream["channels"] == 1
    assert int(stream["sample_rate"]) == (48000 if output_format == "opus" else sample_rate)  # Opus decodes at 48k
    assert decoded_seconds(data) == pytest.approx(2.0, abs=0.15)
    if output_format != "wav":
        assert sum(1 for part in parts[:-1] if part) >= 3, "the encoder held everything back until the end"


def test_raw_pcm_passes_through_or_is_resampled() -> None:
    chunk = tone(0.5)
    assert AudioEncoder("pcm").encode(chunk) == chunk
    halved = AudioEncoder("pcm", 12000)
    resampled = halved.encode(chunk) + halved.finish()
    assert abs(len(resampled) * 2 - len(chunk)) < 200


def test_a_streamed_wav_says_its_length_is_unknown_and_a_whole_one_is_exact() -> None:
    header, _samples = parse_streamed_wav(wav_header(None) + tone(0.1))
    assert header == {"format": 1, "channels": 1, "rate": 24000, "bits": 16}
    assert wav_header(None)[4:8] == b"\xff\xff\xff\xff"
    samples = assert_complete_wav(encode_whole(tone(1.0), "wav", 24000))
    assert samples.size == 24000


@pytest.mark.parametrize("output_format", OUTPUT_FORMATS)
def test_every_format_has_rates_and_refuses_the_rest(output_format: str) -> None:
    assert format_problem(output_format, 24000) is None
    assert format_problem(output_format, 1234) is not None
    if output_format == "opus":
        assert format_problem("opus", 44100) is not None
        assert all(format_problem("opus", rate) is None for rate in OPUS_SAMPLE_RATES)
    else:
        assert all(format_problem(output_format, rate) is None for rate in SAMPLE_RATES)
    assert format_problem("ogg", 24000) is not None
    with pytest.raises(InvalidInput):
        AudioEncoder(output_format, 1234)  # type: ignore[arg-type]
