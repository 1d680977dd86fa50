"""Text planning with coqui's tokenizer: every script, sentence packing, and XTTS's limits."""

from __future__ import annotations

import pytest

from services.engine.model_loader import LoadedModel
from services.engine.text import plan_sentences, split_sentences
from services.errors import InvalidInput

MAX_TEXT_TOKENS = 402
SCRIPTS = {
    "en": "Hello there.",
    "de": "Guten Tag, wie geht's?",
    "zh-cn": "你好世界。",
    "ja": "こんにちは、世界。",
    "ko": "안녕하세요.",
    "ru": "Привет, мир.",
    "ar": "مرحبا بالعالم.",
    "hi": "नमस्ते दुनिया।",
}


@pytest.mark.parametrize("language", sorted(SCRIPTS))
def test_every_script_tokenises_to_speakable_tokens(tiny_loaded: LoadedModel, language: str) -> None:
    tokenizer = tiny_loaded.model.tokenizer
    sentences = plan_sentences(tokenizer, SCRIPTS[language], language, True, MAX_TEXT_TOKENS)
    assert len(sentences) == 1 and sentences[0].tokens.shape[0] == 1
    unknown = tokenizer.tokenizer.token_to_id("[UNK]")
    ids = sentences[0].tokens[0].tolist()
    assert len(ids) > 3 and ids.count(unknown) < len(ids) / 4, (language, ids)  # romanised, not all unknown


def test_long_text_is_packed_into_sentences_within_the_languages_limit(tiny_loaded: LoadedModel) -> None:
    tokenizer = tiny_loaded.model.tokenizer
    text = " ".join(f"Sentence number {index} says a few words here." for index in range(20))
    sentences = plan_sentences(tokenizer, text, "en", True, MAX_TEXT_TOKENS)
    limit = tokenizer.char_limits["en"]
    # coqui's packing leaves the joining space out of its count, so a piece may be one over
    assert len(sentences) > 1 and all(len(sentence.text) <= limit + 1 for sentence in sentences)
    assert " ".join(sentence.text for sentence in sentences) == text  # nothing lost or reordered


def test_an_overlong_unsplit_sentence_and_empty_text_are_refused(tiny_loaded: LoadedModel) -> None:
    tokenizer = tiny_loaded.model.tokenizer
    with pytest.raises(InvalidInput, match="enable_text_splitting"):
        plan_sentences(tokenizer, "word " * 400, "en", False, MAX_TEXT_TOKENS)
    with pytest.raises(InvalidInput, match="nothing to speak"):
        plan_sentences(tokenizer, " \n ", "en", True, MAX_TEXT_TOKENS)


def test_a_sentence_longer_than_the_limit_is_wrapped() -> None:
    pieces = split_sentences("word " * 100 + "end.", "en", 50)
    assert len(pieces) > 5 and all(len(piece) <= 50 for piece in pieces)


@pytest.mark.parametrize(
    ("language", "text"),
    [("hi", "मेरे पास 5 सेब हैं"), ("es", "Tengo 99999999999999999999999999999999 manzanas")],
)
def test_numbers_coquis_cleaner_cannot_spell_are_a_clear_422_not_a_500(
    tiny_loaded: LoadedModel, language: str, text: str
) -> None:
    with pytest.raises(InvalidInput, match="write them as words"):
        plan_sentences(tiny_loaded.model.tokenizer, text, language, True, MAX_TEXT_TOKENS)
