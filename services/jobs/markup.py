"""Markup taken off text in linear time, whatever the input: a book-sized upload must never cost quadratic work.

`XhtmlText` reads an EPUB's content documents; the functions below serve it and the Markdown converter. Every
pattern here stops at the next `<` (or searches forward once), so an unclosed comment, tag or script costs one scan,
not one per opening (the trap of `<!--.*?-->` and of Python 3.11's `html.parser` on malformed input).
"""

from __future__ import annotations

import html
import re
from html.entities import name2codepoint
from xml.parsers import expat

from services.errors import InvalidInput

_BLOCKS = frozenset(
    "address article aside blockquote body br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 header hr li "
    "main nav ol p pre section table td th tr ul".split()
)
_HIDDEN = frozenset("head script style svg math rt rp template".split())
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^<>]*\?>")
# epub:type values of elements whose words are not the book's text (note markers, page numbers)
_UNSPOKEN_TYPES = frozenset({"noteref", "pagebreak"})

_XML_ENCODING = re.compile(rb"^<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_NAMED_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]{0,31});")
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^<>]*>|<[!?][^<>]*>")
_HIDDEN_OPENING = re.compile(r"<!--|<(script|style|head|svg|math|template)\b", re.IGNORECASE)


def cut_spans(text: str, opening: re.Pattern[str]) -> str:
    """`text` without each span from a match of `opening` to its close (`-->` for a comment, else the `</name>` of
    the element it opened, in any case); an opening never closed keeps the rest of the text."""
    kept: list[str] = []
    position = 0
    while (start := opening.search(text, position)) is not None:
        name = start.group(1)
        closing = re.compile(rf"</{re.escape(name)}\s*>" if name else "-->", re.IGNORECASE)  # re caches these
        end = closing.search(text, start.end())
        if end is None:
            break
        kept.append(text[position : start.start()])
        position = end.end()
    kept.append(text[position:])
    return "".join(kept)


def without_hidden_html(text: str) -> str:
    """`text` without HTML comments and the contents of script, style, head, svg, math and template elements."""
    return cut_spans(text, _HIDDEN_OPENING)


def tags_stripped(text: str, blocks: frozenset[str]) -> str:
    """HTML as text: block elements' tags become paragraph breaks, other tags go, entities are decoded."""

    def replaced(tag: re.Match[str]) -> str:
        return "\n\n" if (tag.group(2) or "").lower() in blocks else ""

    return html.unescape(_TAG.sub(replaced, without_hidden_html(text)))


def numeric_entities(text: str) -> str:
    """HTML's named entities (`&nbsp;`, `&mdash;`) as numeric references, which an XML parser reads without a DTD."""

    def numeric(entity: re.Match[str]) -> str:
        name = entity.group(1)
        if name in _XML_ENTITIES or name not in name2codepoint:
            return entity.group(0)
        return f"&#{name2codepoint[name]};"

    return _NAMED_ENTITY.sub(numeric, text)


def decoded_xml(raw: bytes) -> str:
    """XHTML's text in the encoding its XML declaration names (UTF-8 by default); stray bytes are replaced, as a
    browser would show them, so one bad byte does not lose a book."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    declared = _XML_ENCODING.match(raw.removeprefix(b"\xef\xbb\xbf"))
    encoding = declared.group(1).decode() if declared else "utf-8"
    try:
        return raw.decode(encoding, errors="replace").removeprefix("\ufeff")
    except LookupError:
        return raw.decode("utf-8", errors="replace").removeprefix("\ufeff")


class XhtmlText:
    """A content document's text (block elements end paragraphs), its first h1/h2, its <title>, and the links of
    its `<nav epub:type="toc">` (the nav document's table of contents).

    Read with expat, which is linear in its input (Python 3.11's `html.parser` is quadratic on malformed markup:
    60 kB of `<a <a ...` took it 70 s). A document that is not well-formed XML, as some EPUB 2 files are, falls back
    to its text with the tags taken off (`markup.tags_stripped`), without headings or links.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._hidden: list[str] = []  # the open elements whose words are not spoken
        self._heading: list[str] | None = None
        self.heading = ""
        self._title: list[str] | None = None
        self.title = ""
        self._in_toc = False
        self._link: tuple[str, list[str]] | None = None
        self.toc_links: list[tuple[str, str]] = []

    @classmethod
    def of(cls, raw: bytes) -> XhtmlText:
        markup = numeric_entities(_XML_DECLARATION.sub("", decoded_xml(raw), count=1))
        page = cls()
        parser = expat.ParserCreate(namespace_separator="}")
        parser.buffer_text = True
        parser.StartElementHandler = page._start
        parser.EndElementHandler = page._end
        parser.CharacterDataHandler = page._data
        parser.EntityDeclHandler = _refuse_entities
        try:
            parser.Parse(markup.encode("utf-8"), True)
        except expat.ExpatError:
            page = cls()
            page._parts = [tags_stripped(markup, _BLOCKS)]
        return page

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        tag = name.rpartition("}")[2].lower()
        epub_types = {word for key, value in attributes.items() if key.endswith("}type") for word in value.split()}
        if tag == "title" and not self.title:
            self._title = []
        if self._hidden or tag in _HIDDEN or epub_types & _UNSPOKEN_TYPES:
            self._hidden.append(tag)
            return
        if tag in _BLOCKS:
            self._parts.append("\n\n")
        if tag in ("h1", "h2") and not self.heading:
            self._heading = []
        if tag == "nav" and "toc" in epub_types:
            self._in_toc = True
        if tag == "a" and self._in_toc:
            self._link = (attributes.get("href", ""), [])

    def _end(self, name: str) -> None:
        tag = name.rpartition("}")[2].lower()
        if tag == "title" and self._title is not None:
            self.title, self._title = _words(self._title), None
        if self._hidden:
            self._hidden.pop()  # well-formed XML: the element that closes is the last one opened
            return
        if tag in _BLOCKS:
            self._parts.append("\n\n")
        if tag in ("h1", "h2") and self._heading is not None:
            self.heading, self._heading = _words(self._heading), None
        if tag == "nav":
            self._in_toc = False
        if tag == "a" and self._link is not None:
            href, words = self._link
            if label := _words(words):
                self.toc_links.append((href, label))
            self._link = None

    def _data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        if self._hidden:
            return
        self._parts.append(data)
        for collecting in (self._heading, self._link[1] if self._link else None):
            if collecting is not None:
                collecting.append(data)


def _refuse_entities(name: str, *_: object) -> None:
    raise InvalidInput(f"not a readable EPUB: a content document declares the XML entity {name!r}")


def _words(parts: list[str]) -> str:
    return " ".join("".join(parts).split())
