"""A job's input as speakable chapters: plain text, or an uploaded `.txt`, `.md` or `.epub` file.

Everything a client can get wrong about its input is refused here, before any model work, as a 4xx: an unknown file
type (415), text that is not UTF-8 or a file that is not a readable EPUB (`InvalidInput`), nothing to speak
(`InvalidInput`), more than `max_chars` characters (413). Markdown becomes plain text in `markdown_text.py`, an EPUB
in `epub.py`; this module gives every kind the same whitespace: runs of spaces collapsed, paragraphs separated by one
blank line (what the job planner splits on).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath

from services.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType, echoed
from services.jobs.epub import read_epub
from services.jobs.markdown_text import markdown_sections

DOCUMENT_EXTENSIONS = (".txt", ".md", ".markdown", ".epub")

# Control characters (but tab and newline), soft hyphens, zero-width marks and BOMs: never spoken.
_UNSPOKEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Chapter:
    """A part of a document spoken as one: its heading ("" when the input has none) and its plain text."""

    title: str
    text: str
    """Plain text to speak, paragraphs separated by a blank line, no markup."""


@dataclass(frozen=True)
class Document:
    """What a job speaks: a title and at least one chapter, none without text."""

    title: str
    chapters: list[Chapter]

    @property
    def chars(self) -> int:
        """Characters of speakable text (what MAX_JOB_CHARS bounds)."""
        return sum(len(chapter.text) for chapter in self.chapters)


def document_from_text(text: str, title: str = "") -> Document:
    """Plain text as a one-chapter document; InvalidInput when there is nothing to speak."""
    return _document(title.strip(), [("", text)], "the text")


def read_document(data: bytes, filename: str, max_chars: int) -> Document:
    """An uploaded file as a document, by its extension (.txt, .md/.markdown, .epub; any case).

    Raises UnsupportedMediaType (another extension), InvalidInput (not UTF-8, not a readable EPUB, nothing to
    speak) or PayloadTooLarge (over `max_chars` characters of text, or an EPUB that unpacks too large).
    """
    path = PurePosixPath(filename.replace("\\", "/"))
    extension = path.suffix.lower()
    stem = path.stem.strip() if extension else ""
    if extension == ".txt":
        document = _document(stem, [("", _decoded(data, filename))], echoed(filename))
    elif extension in (".md", ".markdown"):
        heading_title, sections = markdown_sections(_decoded(data, filename))
        document = _document(heading_title or stem, sections, echoed(filename))
    elif extension == ".epub":
        book_title, sections = read_epub(data)
        document = _document(book_title or stem, sections, echoed(filename))
    else:
        raise UnsupportedMediaType(
            f"{echoed(filename)} is not a document this server reads: upload .txt, .md or .epub",
            extensions=list(DOCUMENT_EXTENSIONS),
        )
    check_chars(document, max_chars)
    return document


def check_chars(document: Document, max_chars: int) -> None:
    """PayloadTooLarge when the document has more than `max_chars` characters of text."""
    if document.chars > max_chars:
        raise PayloadTooLarge(
            f"the text has {document.chars} characters; MAX_JOB_CHARS is {max_chars}",
            chars=document.chars,
            max_job_chars=max_chars,
        )


def speakable(text: str) -> str:
    """`text` with its whitespace normalised: each paragraph one line of single spaces, a blank line between."""
    text = _UNSPOKEN.sub("", unicodedata.normalize("NFC", text))
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2029", "\n\n")
    paragraphs = (" ".join(paragraph.split()) for paragraph in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


def _document(title: str, sections: list[tuple[str, str]], what: str) -> Document:
    chapters = [Chapter(" ".join(heading.split()), speakable(text)) for heading, text in sections]
    chapters = [chapter for chapter in chapters if chapter.text]
    if not chapters:
        raise InvalidInput(f"{what} has no text to speak")
    return Document(" ".join(title.split()), chapters)


def _decoded(data: bytes, filename: str) -> str:
    """UTF-8 text, with or without a byte order mark (UTF-16 too when its BOM says so)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"{echoed(filename)} is not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} "
            f"cannot be decoded (save the file as UTF-8)",
            offset=error.start,
        ) from None
