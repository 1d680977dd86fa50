"""Character timings laid over streamed audio (services/char_timings.py), and G.711 companding."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from services.char_timings import HOLDBACK_S, CharTimeline, SpeakingRate, spread
from services.encoders import AudioEncoder
from services.g711 import linear_to_alaw, linear_to_mulaw

pytestmark = pytest.mark.unit
RATE = 24000


def pcm(seconds: float) -> bytes:
    return np.zeros(round(seconds * RATE), dtype="<i2").tobytes()


def lay_over(text: str, chunks: list[float], rate: SpeakingRate | None = None) -> list[tuple[float, list[str], int]]:
    """(seconds of audio, characters, their end in ms) of every piece a timeline gives out."""
    timeline = CharTimeline(text, rate or SpeakingRate())
    pieces = []
    for seconds in chunks:
        audio, timings = timeline.take(pcm(seconds))
        pieces.append((len(audio) / 2 / RATE, timings))
    audio, timings = timeline.finish()
    pieces.append((len(audio) / 2 / RATE, timings))
    return [(s, t.chars if t else [], t.end_ms if t else 0) for s, t in pieces if s or t]


def test_every_character_comes_once_in_order_and_the_last_ends_where_the_audio_ends() -> None:
    text = "Hello there, how are you today?"
    pieces = lay_over(text, [0.05, 0.1, 0.2, 0.4, 0.8, 0.8])
    assert "".join(char for _, chars, _ in pieces for char in chars) == text
    assert sum(seconds for seconds, _, _ in pieces) == pytest.approx(2.35, abs=1 / RATE)
    # every piece carries characters, and they end where its audio ends (Pipecat adds them up piece by piece)
    for seconds, chars, end_ms in pieces:
        assert chars
        assert end_ms == pytest.approx(seconds * 1000, abs=1)
    assert sum(end_ms for *_, end_ms in pieces) == round(2.35 * 1000)


def test_times_within_a_piece_start_at_zero_and_never_go_back() -> None:
    timeline = CharTimeline("One, two.", SpeakingRate())
    timeline.take(pcm(0.3))
    _, timings = timeline.take(pcm(0.3))
    assert timings is not None and timings.start_ms[0] == 0
    assert all(b >= a for a, b in zip(timings.start_ms, timings.start_ms[1:], strict=False))
    assert all(duration >= 0 for duration in timings.duration_ms)


def test_a_tail_of_each_chunk_is_held_for_the_end_and_nothing_is_lost() -> None:
    timeline = CharTimeline("Hi there.", SpeakingRate())
    audio, _ = timeline.take(pcm(1.0))
    assert len(audio) / 2 / RATE == pytest.approx(1.0 - HOLDBACK_S)
    tail, timings = timeline.finish()
    assert len(tail) / 2 / RATE == pytest.approx(HOLDBACK_S)
    assert timings is not None and timings.chars[-1] == "."


def test_audio_beyond_the_estimate_goes_out_and_the_last_characters_cover_it() -> None:
    fast = SpeakingRate(weight_per_s=1000.0)  # the estimate runs far ahead of the voice
    pieces = lay_over("Ok.", [0.2, 0.2, 0.2, 0.2])
    assert "".join(char for _, chars, _ in pieces for char in chars) == "Ok."
    pieces = lay_over("Ok.", [0.2, 0.2, 0.2, 0.2], fast)
    assert [chars for _, chars, _ in pieces][-1] == ["."]
    silent = [seconds for seconds, chars, _ in pieces if not chars]
    assert silent, "audio went out without characters while only the last one was left"
    # the last piece's times count from the first audio without characters: the clock still adds up
    assert sum(end_ms for *_, end_ms in pieces) == 800


def test_the_rate_learns_from_finished_segments() -> None:
    rate = SpeakingRate()
    timeline = CharTimeline("a" * 40, rate)
    timeline.take(pcm(1.0))
    timeline.finish()
    assert rate.weight_per_s == pytest.approx((14 + 40) / 2)


def test_spread_weights_punctuation_and_spaces() -> None:
    timings = spread("a .", 0.0, 0.3)
    assert timings.duration_ms == [100, 50, 150]
    assert timings.start_ms == [0, 100, 150]


@pytest.mark.parametrize("name, compand", [("mulaw", linear_to_mulaw), ("alaw", linear_to_alaw)])
def test_g711_decodes_back_with_ffmpeg(name: str, compand: object) -> None:
    tone = (np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE) * 12000).astype("<i2")  # XTTS's 24 kHz in
    encoder = AudioEncoder("ulaw" if name == "mulaw" else "alaw")  # 8 kHz by default
    encoded = encoder.encode(tone.tobytes()) + encoder.finish()
    assert len(encoded) == 8000  # a byte a sample
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 12000).astype("<i2")
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", name, "-ar", "8000", "-i", "-", "-f", "s16le", "-"],
        input=encoded, capture_output=True, check=True,
    ).stdout  # fmt: skip
    back = np.frombuffer(decoded, dtype="<i2").astype(float)
    error = back - tone
    snr_db = 10 * np.log10(np.sum(tone.astype(float)[100:-100] ** 2) / np.sum(error[100:-100] ** 2))
    assert snr_db > 25  # G.711's 8 bits: about 38 dB on a loud tone
