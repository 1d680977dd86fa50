"""Text to per-sentence token tensors, checked against XTTS's limits before any model work."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer, get_spacy_lang

from services.engine.languages import tokenizer_language
from services.errors import InvalidInput


@dataclass(frozen=True)
class Sentence:
    """One generation's worth of text and its token ids ([1, n], on the CPU)."""

    text: str
    tokens: torch.Tensor


@cache
def sentencizer(lang: str) -> Any:
    # coqui's split_sentence builds a new spaCy pipeline per call (~0.1 s); build each language's once.
    nlp = get_spacy_lang(lang)
    nlp.add_pipe("sentencizer")
    return nlp


def split_sentences(text: str, lang: str, limit: int) -> list[str]:
    """coqui's `split_sentence`: sentences packed together up to `limit` characters, longer ones wrapped."""
    if len(text) < limit:
        return [text.lstrip()]
    pieces: list[str] = [""]
    for sentence in (str(span) for span in sentencizer(lang)(text).sents):
        if len(pieces[-1]) + len(sentence) <= limit:
            pieces[-1] = (pieces[-1] + " " + sentence).lstrip()
        elif len(sentence) > limit:
            pieces.extend(textwrap.wrap(sentence, width=limit, drop_whitespace=True, break_on_hyphens=False))
        else:
            pieces.append(sentence)
    return [piece for piece in pieces if piece]


def plan_sentences(
    tokenizer: VoiceBpeTokenizer, text: str, language: str, split: bool, max_text_tokens: int
) -> list[Sentence]:
    """Split text as coqui's XTTS does (sentences packed up to the language's character limit) and tokenise.

    Raises InvalidInput when a piece has no speakable content or more tokens than XTTS accepts.
    """
    lang = tokenizer_language(language)
    pieces = split_sentences(text, lang, tokenizer.char_limits[lang]) if split else [text]
    sentences = []
    for piece in pieces:
        cleaned = piece.strip().lower()
        if not cleaned:
            continue
        try:
            ids = tokenizer.encode(cleaned, lang=lang)
        except (NotImplementedError, OverflowError, KeyError) as error:
            # coqui's cleaner spells numbers out with num2words, which has no Hindi, refuses huge numbers in
            # several languages, and has no table for some symbols: that is the text, not the server
            raise InvalidInput(
                f"coqui's text cleaner cannot spell out this text's numbers or symbols in {language!r} "
                f"({error.__class__.__name__}); write them as words",
                sentence=piece[:80],
            ) from error
        if len(ids) >= max_text_tokens:
            raise InvalidInput(
                f"a sentence of {len(ids)} tokens is over XTTS's limit of {max_text_tokens - 1}; "
                "shorten it or set enable_text_splitting to true",
                sentence=piece[:80],
            )
        sentences.append(Sentence(text=piece.strip(), tokens=torch.IntTensor(ids).unsqueeze(0)))
    if not sentences:
        raise InvalidInput("text has nothing to speak")
    return sentences
