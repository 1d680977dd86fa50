"""An EPUB (2 or 3) as speakable sections, read in memory and refused when it is unsafe or unreadable.

The path through the book is the standard one: `META-INF/container.xml` names the package (OPF), whose spine lists
the content documents in reading order. Chapter titles come from the table of contents (EPUB 3's nav document,
else EPUB 2's NCX); a spine document the table does not list continues the chapter before it (e-book tools split
long chapters into several files), and a book without a table takes each document's first h1/h2 (else its
`<title>`). Documents without text (a cover image, a blank page) are skipped.

Safety: nothing is extracted to disk; at most MAX_UNPACKED_BYTES are decompressed in all, checked against each
entry's declared size and again while reading (a zip bomb stops there); encrypted entries (DRM) are refused;
XML that declares entities is refused before it is parsed (expat 2.4+ also bounds entity expansion, and
ElementTree never fetches external entities), XHTML as it is parsed (`markup.XhtmlText`). Nothing is unpickled or
executed.
"""

from __future__ import annotations

import io
import posixpath
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator
from urllib.parse import unquote

from services.errors import InvalidInput, PayloadTooLarge
from services.jobs.markup import XhtmlText

MAX_UNPACKED_BYTES = 50 * 1024 * 1024
"""Bytes an EPUB may decompress to (the files read, not the whole archive): novels are 1-5 MB of XHTML."""
_XHTML_TYPES = ("application/xhtml+xml", "text/html")
_ENTITY_DECLARATIONS = (b"<!ENTITY", "<!ENTITY".encode("utf-16-le"), "<!ENTITY".encode("utf-16-be"))
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError)

Section = tuple[str, str]


def read_epub(data: bytes) -> tuple[str, list[Section]]:
    """The book's title ("" if it has none) and its (chapter title, text) sections in reading order."""
    archive = _Archive(data)
    package_path = _package_path(archive)
    package = archive.xml(package_path)
    if package is None:
        raise InvalidInput(f"not a readable EPUB: its package document {package_path!r} is missing")
    book = _Package(package, posixpath.dirname(package_path))
    encrypted = _encrypted_paths(archive)
    titles = _toc_titles(archive, book)
    sections: list[list[str]] = []
    for path in book.spine:
        if path in encrypted:
            raise InvalidInput("the EPUB is DRM-protected: its text is encrypted")
        if path in book.skipped or (raw := archive.read(path)) is None:
            continue
        page = XhtmlText.of(raw)
        if not page.text.strip():
            continue
        if titles and path not in titles and sections:
            sections[-1][1] += "\n\n" + page.text
            continue
        fallback = page.heading or (page.title if page.title != book.title else "")
        sections.append([titles.get(path, fallback), page.text])
    return book.title, [(title, text) for title, text in sections]


class _Archive:
    """The zip, read in memory with a budget of decompressed bytes."""

    def __init__(self, data: bytes) -> None:
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except _ZIP_ERRORS as error:
            raise InvalidInput(f"not a readable EPUB: {error}") from None
        self.bytes_left = MAX_UNPACKED_BYTES

    def read(self, name: str) -> bytes | None:
        """The entry's bytes, or None when there is no such entry."""
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            return None
        if info.flag_bits & 0x1:
            raise InvalidInput(f"the EPUB is encrypted ({name!r} needs a password)")
        if info.file_size > self.bytes_left:
            raise self._too_large()
        try:
            with self.zip.open(info) as entry:
                data = entry.read(self.bytes_left + 1)  # the declared size may lie: read no more than allowed
        except _ZIP_ERRORS as error:
            raise InvalidInput(f"not a readable EPUB: {name!r}: {error}") from None
        if len(data) > self.bytes_left:
            raise self._too_large()
        self.bytes_left -= len(data)
        return data

    def xml(self, name: str) -> ET.Element | None:
        """The entry parsed as XML (None when absent); InvalidInput when it is not XML or declares entities."""
        data = self.read(name)
        if data is None:
            return None
        if any(declaration in data for declaration in _ENTITY_DECLARATIONS):
            raise InvalidInput(f"not a readable EPUB: {name!r} declares XML entities, which EPUBs do not need")
        try:
            return ET.fromstring(data)
        except ET.ParseError as error:
            raise InvalidInput(f"not a readable EPUB: {name!r} is not well-formed XML ({error})") from None

    @staticmethod
    def _too_large() -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the EPUB unpacks to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MB",
            max_unpacked_bytes=MAX_UNPACKED_BYTES,
        )


class _Package:
    """What the OPF says: the title, the spine's content documents, the table of contents' documents."""

    def __init__(self, root: ET.Element, folder: str) -> None:
        self.title = next((" ".join((e.text or "").split()) for e in _all(root, "title") if (e.text or "").strip()), "")
        items = {e.get("id", ""): e for e in _all(root, "item")}
        self.nav = next((self._path(e, folder) for e in items.values() if "nav" in e.get("properties", "").split()), "")
        spine = next(_all(root, "spine"), None)
        ncx = items.get(spine.get("toc", "")) if spine is not None else None
        self.ncx = self._path(ncx, folder) if ncx is not None else ""
        self.spine = [
            self._path(items[ref.get("idref", "")], folder)
            for ref in _all(root, "itemref")
            if ref.get("idref", "") in items
            and items[ref.get("idref", "")].get("media-type") in _XHTML_TYPES
            and ref.get("linear") != "no"  # notes and pop-ups, outside the reading order
        ]
        # A table of contents in the reading order is not read aloud.
        guide_toc = [_joined(folder, e.get("href", "")) for e in _all(root, "reference") if e.get("type") == "toc"]
        self.skipped = {self.nav, *guide_toc}

    @staticmethod
    def _path(item: ET.Element, folder: str) -> str:
        return _joined(folder, item.get("href", ""))


def _package_path(archive: _Archive) -> str:
    container = archive.xml("META-INF/container.xml")
    if container is None:
        raise InvalidInput("not a readable EPUB: META-INF/container.xml is missing")
    for rootfile in _all(container, "rootfile"):
        if rootfile.get("full-path") and rootfile.get("media-type", "").endswith("oebps-package+xml"):
            return unquote(rootfile.get("full-path", ""))
    raise InvalidInput("not a readable EPUB: META-INF/container.xml names no package document")


def _encrypted_paths(archive: _Archive) -> set[str]:
    encryption = archive.xml("META-INF/encryption.xml")
    if encryption is None:
        return set()
    return {_joined("", e.get("URI", "")) for e in _all(encryption, "CipherReference")}


def _toc_titles(archive: _Archive, book: _Package) -> dict[str, str]:
    """Each listed document's first title in the table of contents (nav, else NCX); {} when neither has one."""
    titles: dict[str, str] = {}
    if book.nav and (raw := archive.read(book.nav)) is not None:
        for href, text in XhtmlText.of(raw).toc_links:
            titles.setdefault(_joined(posixpath.dirname(book.nav), href), text)
    if not titles and book.ncx and (ncx := archive.xml(book.ncx)) is not None:
        for point in _all(ncx, "navPoint"):
            label = next((" ".join((e.text or "").split()) for e in _all(point, "text")), "")
            source = next((e.get("src", "") for e in _all(point, "content")), "")
            if label and source:
                titles.setdefault(_joined(posixpath.dirname(book.ncx), source), label)
    return titles


def _all(root: ET.Element, local_name: str) -> Iterator[ET.Element]:
    """Elements with this local name, whatever their namespace, in document order."""
    return (element for element in root.iter() if element.tag.rpartition("}")[2] == local_name)


def _joined(folder: str, href: str) -> str:
    """The zip entry an href names, relative to `folder` (fragment and percent-encoding removed)."""
    return posixpath.normpath(posixpath.join(folder, unquote(href.partition("#")[0]))).lstrip("/")
