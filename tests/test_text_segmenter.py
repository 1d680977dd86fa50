"""TextSegmenter: text arriving in pieces, cut into sentences as soon as each completes (coqui's rules)."""
# ruff: noqa: RUF001  (full-width CJK punctuation is the point here)

from __future__ import annotations

import pytest

from services.engine.text_segmenter import TextSegmenter


def feed(segmenter: TextSegmenter, pieces: list[str]) -> list[tuple[str, list[str]]]:
    return [(piece, segmenter.push(piece, now=0.0)) for piece in pieces]


def test_a_sentence_is_handed_out_as_soon_as_its_final_punctuation_arrives() -> None:
    segmenter = TextSegmenter("en", 250, 2.0)
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
    segmenter = TextSegmenter(language, 250, 2.0)
    assert [sentence for _, out in feed(segmenter, pieces) for sentence in out] == sentences


def test_text_without_punctuation_waits_at_most_max_wait() -> None:
    segmenter = TextSegmenter("en", 250, 1.5)
    assert segmenter.push("no punctuation", now=10.0) == []
    assert segmenter.push(" at all", now=11.0) == []
    assert segmenter.due(now=11.4) == []
    assert segmenter.due(now=11.5) == ["no punctuation at all"]


def test_a_long_run_without_punctuation_is_cut_at_a_word_boundary() -> None:
    segmenter = TextSegmenter("en", 40, 60.0)
    out = segmenter.push("word " * 20, now=0.0)
    assert out and all(len(piece) <= 40 for piece in out) and all(not piece.endswith("wor") for piece in out)
    assert segmenter.buffer and len(segmenter.buffer) < 40
    assert " ".join([*out, *segmenter.flush()]).split() == ["word"] * 20


def test_clear_drops_what_is_buffered() -> None:
    segmenter = TextSegmenter("en", 250, 2.0)
    segmenter.push("half a sent", now=0.0)
    segmenter.clear()
    assert segmenter.flush() == [] and segmenter.due(now=100.0) == []
