"""Markdown as speakable sections: `#` and `##` headings start chapters, the markup goes, the words stay.

A small line-based converter for the Markdown people write prose in (CommonMark's common cases, GitHub's tables and
task lists, YAML front matter), not a full parser: what it cannot read stays as text, which is spoken, never lost.
A chapter's heading is also its first paragraph, as an audiobook announces its chapters. Code blocks are dropped
(code read aloud is noise); inline code keeps its text. List items and table rows become paragraphs of their own,
so they are not run together into one sentence. Every step is linear in the input's length.
"""

from __future__ import annotations

import html
import re

from services.jobs.markup import without_hidden_html

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE_MARKERS = re.compile(r"^ {0,3}(?:>[ \t]?)+")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?")
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*\S+")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
_PRIVATE_BASE = 0xF0000  # escaped punctuation hides here while the markup is stripped

# Inline markup, in the order it is taken off: images go whole, links keep their text, then code and emphasis.
# Every pattern is linear in the line: bracketed and parenthesised parts stop at the next bracket or parenthesis
# (one level of nesting, for URLs like Wikipedia's), and emphasis markers are dropped one by one rather than paired
# (pairing `**...**` lazily is quadratic on a line of unclosed markers; unpaired markers are not speech anyway).
_URL = r"\((?:[^()]|\([^()]*\))*\)"
_INLINE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"!\[[^\[\]]*\](?:{_URL}|\[[^\[\]]*\])"), ""),
    (re.compile(r"\[\^[^\[\]]+\]"), ""),  # footnote references
    (re.compile(rf"\[([^\[\]]+)\]{_URL}"), r"\1"),
    (re.compile(r"\[([^\[\]]+)\]\[[^\[\]]*\]"), r"\1"),
    (re.compile(r"<(?:https?|ftp|mailto):[^<>\s]+>"), ""),
    (re.compile(r"</?[A-Za-z][^<>\n]*>"), ""),  # HTML tags
    (re.compile(r"`+|\*+|~~"), ""),
    (re.compile(r"(?<!\w)_+|_+(?!\w)"), ""),  # not inside a word: snake_case stays
]

Section = tuple[str, str]
"""A heading ("" before the first) and its text, paragraphs separated by blank lines."""


def markdown_sections(source: str) -> tuple[str, list[Section]]:
    """The first `#` heading (the document's title, or "") and the sections that `#`/`##` headings start."""
    converter = _Converter()
    for line in without_hidden_html(_FRONT_MATTER.sub("", source.replace("\r\n", "\n"))).split("\n"):
        converter.feed(line)
    converter.end_paragraph()
    return converter.title, _joined(converter.sections)


def inline_text(text: str) -> str:
    """A line of Markdown without its inline markup (emphasis, code, links, images, HTML tags, escapes)."""
    text = _ESCAPED.sub(lambda match: chr(_PRIVATE_BASE + ord(match.group(1))), text)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    text = re.sub(r"[\U000F0000-\U000F007F]", lambda match: chr(ord(match.group()) - _PRIVATE_BASE), text)
    return html.unescape(text).strip()


class _Converter:
    """Reads lines into sections of paragraphs."""

    def __init__(self) -> None:
        self.title = ""
        self.sections: list[tuple[str, list[str]]] = [("", [])]
        self._paragraph: list[str] = []
        self._fence: str | None = None
        self._in_table = False

    def feed(self, line: str) -> None:
        if self._fence is not None:
            if line.strip().startswith(self._fence):
                self._fence = None
            return
        if fence := _FENCE.match(line):
            self.end_paragraph()
            self._fence = fence.group(1)
            return
        line = _QUOTE_MARKERS.sub("", line)
        if heading := _ATX_HEADING.match(line):
            self.end_paragraph()
            self._heading(len(heading.group(1)), inline_text(heading.group(2) or ""))
        elif self._paragraph and (underline := _SETEXT_UNDERLINE.match(line)):
            text = " ".join(self._paragraph)
            self._paragraph = []
            self._heading(1 if underline.group(1).startswith("=") else 2, text)
        elif not line.strip() or _THEMATIC_BREAK.match(line) or _LINK_DEFINITION.match(line):
            self.end_paragraph()
            self._in_table = False
        elif "|" in line and _TABLE_DELIMITER.match(line):
            header, self._paragraph = self._paragraph, []  # the line above was the table's header row
            for row in header:
                self._table_row(row)
            self._in_table = True
        elif line.lstrip().startswith("|") or (self._in_table and "|" in line):
            self.end_paragraph()
            self._table_row(line)
        elif item := _LIST_ITEM.match(line):
            self.end_paragraph()
            self._paragraph.append(inline_text(line[item.end() :]))
        else:
            self._paragraph.append(inline_text(line))

    def _table_row(self, line: str) -> None:
        """A row as one paragraph, its cells separated by commas (a pause), not by spoken pipes."""
        cells = [inline_text(cell) for cell in line.strip().strip("|").split("|")]
        self.sections[-1][1].append(", ".join(cell for cell in cells if cell))

    def end_paragraph(self) -> None:
        if self._paragraph:
            self.sections[-1][1].append(" ".join(self._paragraph))
            self._paragraph = []

    def _heading(self, level: int, text: str) -> None:
        if not text:
            return
        if level == 1 and not self.title:
            self.title = text
        if level <= 2:
            self.sections.append((text, [text]))
        else:
            self.sections[-1][1].append(text)


def _joined(sections: list[tuple[str, list[str]]]) -> list[Section]:
    """Sections with text; a heading with nothing under it (a book's title over its first chapter) opens the next."""
    joined: list[Section] = []
    carried: list[str] = []
    for number, (heading, paragraphs) in enumerate(sections):
        paragraphs = [paragraph for paragraph in paragraphs if paragraph.strip()]
        only_heading = bool(heading) and paragraphs == [heading]
        if only_heading and number + 1 < len(sections):
            carried += paragraphs
            continue
        if carried or paragraphs:
            joined.append((heading, "\n\n".join(carried + paragraphs)))
            carried = []
    return joined
