"""Text that arrives in pieces (an LLM's tokens), cut into sentences as soon as each is complete.

The cuts are coqui's: its spaCy sentencizer decides where sentences end, as `split_sentences` does for a
whole text. A sentence is complete once text follows it, or once it ends with sentence-final punctuation
(so the first sentence can be spoken while the next is still being written). Text with no punctuation is
cut anyway after `max_wait_s` without a new sentence, or at a word boundary once it reaches `max_chars`.
Time is read from `clock` (monotonic seconds), so tests can drive it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from services.engine.languages import tokenizer_language
from services.engine.text import sentencizer

# Sentence-final punctuation (Latin, CJK, Devanagari, Arabic), optionally followed by closing quotes/brackets.
_FINAL = re.compile(r"[.!?…。！？｡।؟]+[\"'”’»)\]」』]*\s*$")  # noqa: RUF001


class TextSegmenter:
    """Accumulates one context's text; `push`, `due` and `flush` hand out its complete sentences in order."""

    def __init__(
        self, language: str, max_chars: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.language = tokenizer_language(language)
        self.max_chars = max_chars
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.buffer = ""
        self._waiting_since: float | None = None

    def push(self, text: str) -> list[str]:
        """Add text; return the sentences it completed."""
        if not text:
            return []
        if not self.buffer.strip():
            self._waiting_since = self.clock()
        self.buffer += text
        return self._complete(final=False)

    def due(self) -> list[str]:
        """Everything buffered, if it has waited longer than max_wait_s (text without punctuation)."""
        if self._waiting_since is not None and self.clock() - self._waiting_since >= self.max_wait_s:
            return self.flush()
        return []

    def flush(self) -> list[str]:
        """Everything buffered, as sentences, whether complete or not."""
        return self._complete(final=True)

    def clear(self) -> None:
        self.buffer = ""
        self._waiting_since = None

    def _complete(self, final: bool) -> list[str]:
        if not self.buffer.strip():
            return []
        sentences = [str(span).strip() for span in sentencizer(self.language)(self.buffer).sents]
        sentences = [sentence for sentence in sentences if sentence]
        keep = ""
        if not final and sentences and not _FINAL.search(self.buffer):
            keep = self._tail(sentences.pop())
        ready = [piece for sentence in sentences for piece in self._wrap(sentence)]
        while len(keep) >= self.max_chars:  # no punctuation for too long: cut at a word boundary
            cut = keep.rfind(" ", 0, self.max_chars)
            cut = cut if cut > 0 else self.max_chars
            ready.append(keep[:cut].strip())
            keep = keep[cut:].lstrip()
        self.buffer = keep
        if not keep.strip():
            self._waiting_since = None
        elif ready:  # the rest starts waiting now
            self._waiting_since = self.clock()
        return ready

    def _tail(self, sentence: str) -> str:
        # the unfinished sentence as it stands in the buffer (spaces the sentencizer trimmed are kept)
        start = self.buffer.rfind(sentence)
        return self.buffer[start:] if start >= 0 else sentence

    def _wrap(self, sentence: str) -> list[str]:
        if len(sentence) <= self.max_chars:
            return [sentence]
        pieces: list[str] = []
        rest = sentence
        while len(rest) > self.max_chars:
            cut = rest.rfind(" ", 0, self.max_chars)
            cut = cut if cut > 0 else self.max_chars
            pieces.append(rest[:cut].strip())
            rest = rest[cut:].lstrip()
        return [*pieces, rest] if rest else pieces
