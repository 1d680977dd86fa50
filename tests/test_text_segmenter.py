"""TextSegmenter: text arriving in pieces, cut into sentences as soon as each completes (coqui's rules)."""
# ruff: noqa: RUF001  (full-width CJK punctuation is the point here)

from __future__ import annotations

import pytest

from services.text_segmenter import TextSegmenter


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def segmenter_at(clock: Clock, max_chars: int = 250, max_wait_s: float = 2.0, language: str = "en") -> TextSegmenter:
    return TextSegmenter(language, max_chars, max_wait_s, clock=clock)


def feed(segmenter: TextSegmenter, pieces: list[str]) -> list[tuple[str, list[str]]]:
    return [(piece, segmenter.push(piece)) for piece in pieces]


def test_a_sentence_is_handed_out_as_soon_as_its_final_punctuation_arrives() -> None:
    segmenter = segmenter_at(Clock())
    steps = feed(segmenter, ["Hel", "lo wor", "ld.", " How", " are you", " doing? I am", " fine"])
    assert steps == [
        ("Hel", []), ("lo wor", []), ("ld.", ["Hello world."]), (" How", []), (" are you", []),
        (" doing? I am", ["How are you doing?"]), (" fine", []),
    ]  # fmt: skip
    assert segmenter.flush() == ["I am fine"] and segmenter.buffer == ""


@pytest.mark.parametrize(
    ("language", "pieces", "sentences"),
    [
        ("zh-cn", ["你好。", "我很", "好！"], ["你好。", "我很好！"]),
        ("ja", ["こんにちは。", "元気", "ですか？"], ["こんにちは。", "元気ですか？"]),
        ("en", ['He said "stop."', " Then", " left."], ['He said "stop."', "Then left."]),
    ],
)
def test_other_scripts_and_closing_quotes(language: str, pieces: list[str], sentences: list[str]) -> None:
    segmenter = segmenter_at(Clock(), language=language)
    assert [sentence for _, out in feed(segmenter, pieces) for sentence in out] == sentences


def test_text_without_punctuation_waits_at_most_max_wait() -> None:
    clock = Clock(10.0)
    segmenter = segmenter_at(clock, max_wait_s=1.5)
    assert segmenter.push("no punctuation") == []
    clock.now = 11.0
    assert segmenter.push(" at all") == []  # more text does not restart the wait
    clock.now = 11.4
    assert segmenter.due() == []
    clock.now = 11.5
    assert segmenter.due() == ["no punctuation at all"]


def test_the_rest_of_a_cut_waits_from_the_cut_not_from_its_first_word() -> None:
    clock = Clock(10.0)
    segmenter = segmenter_at(clock, max_wait_s=1.5)
    assert segmenter.push("First words") == []
    clock.now = 20.0  # long after: "First words" would have been due at 11.5
    assert segmenter.push(" end here. And then some") == ["First words end here."]
    clock.now = 21.4
    assert segmenter.due() == []  # "And then some" started waiting at 20.0
    clock.now = 21.5
    assert segmenter.due() == ["And then some"]


def test_a_long_run_without_punctuation_is_cut_at_a_word_boundary() -> None:
    segmenter = segmenter_at(Clock(), max_chars=40, max_wait_s=60.0)
    out = segmenter.push("word " * 20)
    assert out and all(len(piece) <= 40 for piece in out) and all(not piece.endswith("wor") for piece in out)
    assert segmenter.buffer and len(segmenter.buffer) < 40
    assert " ".join([*out, *segmenter.flush()]).split() == ["word"] * 20


def test_clear_drops_what_is_buffered() -> None:
    clock = Clock()
    segmenter = segmenter_at(clock)
    segmenter.push("half a sent")
    segmenter.clear()
    clock.now += 100.0
    assert segmenter.flush() == [] and segmenter.due() == []
