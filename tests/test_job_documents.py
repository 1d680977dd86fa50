"""A job's input as chapters of speakable text: plain text, .txt, Markdown and EPUB (2 and 3), and every bad input
refused with the status a client can act on, before any model work."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Mapping
from typing import Any

import pytest

from services.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from services.jobs import epub
from services.jobs.documents import Chapter, Document, document_from_text, read_document

pytestmark = pytest.mark.unit

LIMIT = 1_000_000

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def xhtml(body: str, title: str = "Weather Tales") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">'
        f"<head><title>{title}</title><style>p {{ color: red }}</style></head><body>{body}</body></html>"
    )


def package(items: dict[str, tuple[str, str]], spine: list[str], title: str = "Weather Tales", toc: str = "") -> str:
    """An OPF: items are id -> (href, media type[; properties]); the spine lists ids."""
    manifest = "".join(
        f'<item id="{item_id}" href="{href}" media-type="{kind.split(";")[0]}"'
        + (f' properties="{kind.split(";")[1]}"' if ";" in kind else "")
        + "/>"
        for item_id, (href, kind) in items.items()
    )
    refs = "".join(f'<itemref idref="{item_id}"/>' for item_id in spine)
    toc_attribute = f' toc="{toc}"' if toc else ""
    return (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:identifier id='id'>x</dc:identifier><dc:title>{title}</dc:title></metadata>"
        f"<manifest>{manifest}</manifest><spine{toc_attribute}>{refs}</spine></package>"
    )


def epub_bytes(files: Mapping[str, str | bytes], container: str | None = CONTAINER) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        if container is not None:
            archive.writestr("META-INF/container.xml", container)
        for name, content in files.items():
            archive.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


COVER = xhtml('<div><img src="cover.jpg" alt="The cover"/></div>')
CHAPTER_ONE = xhtml(
    "<h1>1. The Calm</h1><p>The sea was   flat.</p><p>Nothing <em>moved</em>.<br/>Not even the gulls.</p>"
    '<script>alert("no")</script>'
)
CHAPTER_TWO = xhtml(
    '<section><h2>2. The Storm</h2><p>Then the wind came.<a epub:type="noteref" href="#n1">1</a></p>'
    "<div>Rain<span> fell</span> hard.</div></section>"
)
SPINE_ITEMS = {
    "cover": ("cover.xhtml", "application/xhtml+xml"),
    "one": ("text/one.xhtml", "application/xhtml+xml"),
    "two": ("text/two%20b.xhtml", "application/xhtml+xml"),
    "art": ("cover.jpg", "image/jpeg"),
}
SPINE_FILES: dict[str, str | bytes] = {
    "OEBPS/cover.xhtml": COVER,
    "OEBPS/text/one.xhtml": CHAPTER_ONE,
    "OEBPS/text/two b.xhtml": CHAPTER_TWO,
    "OEBPS/cover.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
}
EXPECTED_TEXTS = [
    "1. The Calm\n\nThe sea was flat.\n\nNothing moved.\n\nNot even the gulls.",
    "2. The Storm\n\nThen the wind came.\n\nRain fell hard.",
]


def epub3(nav_body: str) -> bytes:
    nav = xhtml(f'<nav epub:type="toc"><h1>Contents</h1><ol>{nav_body}</ol></nav>')
    items = {**SPINE_ITEMS, "nav": ("nav.xhtml", "application/xhtml+xml;nav")}
    opf = package(items, ["cover", "nav", "one", "two"])
    return epub_bytes({"OEBPS/content.opf": opf, "OEBPS/nav.xhtml": nav, **SPINE_FILES})


def test_plain_text_is_one_untitled_chapter_with_spaces_collapsed_and_paragraphs_kept() -> None:
    document = document_from_text("  Hello\tthere,\r\n  world.\n\n\n\nSecond  paragraph.\u00a0\n", title=" Notes ")
    assert document == Document("Notes", [Chapter("", "Hello there, world.\n\nSecond paragraph.")])
    assert document.chars == len("Hello there, world.\n\nSecond paragraph.")


@pytest.mark.parametrize("text", ["", "   \n\n \t ", "\ufeff\u200b"])
def test_text_with_nothing_to_speak_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="no text to speak"):
        document_from_text(text)


def test_a_txt_file_is_utf8_with_or_without_a_bom() -> None:
    plain = read_document("Grüße aus Köln.\nZweite Zeile.".encode(), "Brief.TXT", LIMIT)
    with_bom = read_document(b"\xef\xbb\xbf" + "Grüße aus Köln.\nZweite Zeile.".encode(), "Brief.txt", LIMIT)
    assert plain == with_bom == Document("Brief", [Chapter("", "Grüße aus Köln. Zweite Zeile.")])


def test_a_txt_file_that_is_not_utf8_is_refused_saying_where() -> None:
    with pytest.raises(InvalidInput, match=r"not UTF-8 text: byte 0xe9 at offset 3") as refused:
        read_document("Café au lait".encode("latin-1"), "menu.txt", LIMIT)
    assert refused.value.details == {"offset": 3}


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "blank.markdown"])
def test_an_empty_file_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="has no text to speak"):
        read_document(b"\n  \n", name, LIMIT)


def test_more_characters_than_the_limit_are_413_naming_the_limit_and_the_count() -> None:
    with pytest.raises(PayloadTooLarge, match="the text has 11 characters; MAX_JOB_CHARS is 10") as refused:
        read_document(b"hello world", "a.txt", max_chars=10)
    assert refused.value.details == {"chars": 11, "max_job_chars": 10}
    assert read_document(b"hello world", "a.txt", max_chars=11).chars == 11


@pytest.mark.parametrize("name", ["book.pdf", "book.docx", "book", "book.txt.exe", ""])
def test_an_unknown_file_type_is_415_listing_what_is_read(name: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=r"upload \.txt, \.md or \.epub"):
        read_document(b"some text", name, LIMIT)


MARKDOWN = """---
title: front matter is not read
---
# Weather Tales

## Chapter 1: The *Calm*

The sea was **flat** and `still`, see [the chart](http://example.com/chart "Chart").
![a gull](gull.png) Nothing moved.<br/>
<!-- a note
to self -->
> The gulls slept.

- first *item*
- [x] second item
1. third item

```python
print("code is not read aloud")
```

Chapter Two: The Storm
----------------------

| Wind | Rain |
| ---- | :--: |
| strong | heavy |

***
Escaped \\*stars\\* and snake_case_names stay; &amp; entities too. ~~gone~~

### A smaller heading
Final words.[^1]

[1]: http://example.com/ref
"""


def test_markdown_headings_start_chapters_and_the_markup_is_not_spoken() -> None:
    document = read_document(MARKDOWN.encode(), "tales.md", LIMIT)
    assert document.title == "Weather Tales"
    assert [chapter.title for chapter in document.chapters] == ["Chapter 1: The Calm", "Chapter Two: The Storm"]
    assert document.chapters[0].text == (
        "Weather Tales\n\n"  # a title with nothing under it opens the first chapter
        "Chapter 1: The Calm\n\n"
        "The sea was flat and still, see the chart. Nothing moved.\n\n"
        "The gulls slept.\n\n"
        "first item\n\nsecond item\n\nthird item"
    )
    assert document.chapters[1].text == (
        "Chapter Two: The Storm\n\n"
        "Wind, Rain\n\nstrong, heavy\n\n"
        "Escaped *stars* and snake_case_names stay; & entities too. gone\n\n"
        "A smaller heading\n\nFinal words."
    )


def test_markdown_without_headings_is_one_untitled_chapter_titled_by_its_file() -> None:
    document = read_document(b"Just *one* paragraph\nover two lines.", "notes/My Essay.MD", LIMIT)
    assert document == Document("My Essay", [Chapter("", "Just one paragraph over two lines.")])


def test_epub3_chapters_follow_the_spine_with_titles_from_the_nav_and_no_markup() -> None:
    nav = '<li><a href="text/one.xhtml">The Calm</a></li><li><a href="text/two%20b.xhtml#top">The Storm</a></li>'
    document = read_document(epub3(nav), "tales.epub", LIMIT)
    assert document.title == "Weather Tales"
    assert [chapter.title for chapter in document.chapters] == ["The Calm", "The Storm"]
    assert [chapter.text for chapter in document.chapters] == EXPECTED_TEXTS  # the cover and the nav are not read


def test_epub2_titles_come_from_the_ncx() -> None:
    ncx = (
        '<?xml version="1.0"?><!DOCTYPE ncx PUBLIC "-//NISO//DTD ncx 2005-1//EN" '
        '"http://www.daisy.org/z3986/2005/ncx-2005-1.dtd"><ncx xmlns="http://www.daisy.org/z3986/2005/ncx/"><navMap>'
        '<navPoint id="a"><navLabel><text>I. Calm</text></navLabel><content src="text/one.xhtml"/></navPoint>'
        '<navPoint id="b"><navLabel><text>II. Storm</text></navLabel><content src="text/two%20b.xhtml"/>'
        '<navPoint id="c"><navLabel><text>Storm, part 2</text></navLabel><content src="text/two%20b.xhtml#p2"/>'
        "</navPoint></navPoint></navMap></ncx>"
    )
    items = {**SPINE_ITEMS, "ncx": ("toc.ncx", "application/x-dtbncx+xml")}
    opf = package(items, ["cover", "one", "two"], toc="ncx").replace('version="3.0"', 'version="2.0"')
    document = read_document(
        epub_bytes({"OEBPS/content.opf": opf, "OEBPS/toc.ncx": ncx, **SPINE_FILES}), "b.epub", LIMIT
    )
    assert [chapter.title for chapter in document.chapters] == ["I. Calm", "II. Storm"]
    assert [chapter.text for chapter in document.chapters] == EXPECTED_TEXTS


def test_an_epub_without_a_table_of_contents_takes_each_documents_first_heading() -> None:
    opf = package(SPINE_ITEMS, ["cover", "one", "two"], title="")
    document = read_document(epub_bytes({"OEBPS/content.opf": opf, **SPINE_FILES}), "Untitled Book.epub", LIMIT)
    assert document.title == "Untitled Book"  # no dc:title: the file's name
    assert [chapter.title for chapter in document.chapters] == ["1. The Calm", "2. The Storm"]


def test_a_document_the_table_of_contents_does_not_list_continues_the_chapter_before_it() -> None:
    nav = '<li><a href="text/one.xhtml">The Calm</a></li>'  # "two b.xhtml" is the second half of a split chapter
    document = read_document(epub3(nav), "tales.epub", LIMIT)
    assert document.chapters == [Chapter("The Calm", "\n\n".join(EXPECTED_TEXTS))]


def test_an_epub_with_only_a_cover_image_is_refused() -> None:
    opf = package({"cover": SPINE_ITEMS["cover"], "art": SPINE_ITEMS["art"]}, ["cover"])
    files: dict[str, str | bytes] = {"OEBPS/content.opf": opf, "OEBPS/cover.xhtml": COVER, "OEBPS/cover.jpg": b"\xff"}
    with pytest.raises(InvalidInput, match=r"'cover\.epub' has no text to speak"):
        read_document(epub_bytes(files), "cover.epub", LIMIT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04 this is not a zip at all", "not a readable EPUB"),
        (epub3("")[:300], "not a readable EPUB"),  # cut short
        (epub_bytes({"OEBPS/content.opf": "<package/>"}, container=None), "container.xml is missing"),
        (epub_bytes({}), "package document 'OEBPS/content.opf' is missing"),
        (epub_bytes({"OEBPS/content.opf": "<package><unclosed></package>"}), "is not well-formed XML"),
    ],
    ids=["not-a-zip", "truncated", "no-container", "no-package", "broken-xml"],
)
def test_a_broken_epub_is_refused_as_unreadable(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_document(data, "book.EPUB", LIMIT)


def test_an_epub_declaring_xml_entities_is_refused_before_parsing() -> None:
    laughs = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    opf = f'<?xml version="1.0"?><!DOCTYPE package [<!ENTITY lol0 "lol">{laughs}]><package>&lol9;</package>'
    with pytest.raises(InvalidInput, match="declares XML entities"):
        read_document(epub_bytes({"OEBPS/content.opf": opf}), "laughs.epub", LIMIT)


def test_a_content_document_declaring_xml_entities_is_refused() -> None:
    laughs = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    page = f'<?xml version="1.0"?><!DOCTYPE html [<!ENTITY lol0 "lol">{laughs}]><html><body><p>&lol9;</p></body></html>'
    files = {"OEBPS/content.opf": package(SPINE_ITEMS, ["one"]), "OEBPS/text/one.xhtml": page}
    with pytest.raises(InvalidInput, match="declares the XML entity"):
        read_document(epub_bytes(files), "laughs.epub", LIMIT)


def test_a_zip_bomb_entry_is_refused_without_unpacking_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epub, "MAX_UNPACKED_BYTES", 1024 * 1024)  # the same check at 1 MB keeps the test fast
    opf = package(SPINE_ITEMS, ["one"])
    bomb = xhtml("<p>" + "a" * (2 * 1024 * 1024) + "</p>")  # compresses to a few kB
    data = epub_bytes({"OEBPS/content.opf": opf, "OEBPS/text/one.xhtml": bomb})
    assert len(data) < 20_000
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def recording_open(archive: zipfile.ZipFile, name: str | zipfile.ZipInfo, *args: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return real_open(archive, name, *args)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    with pytest.raises(PayloadTooLarge, match="unpacks to more than 1 MB"):
        read_document(data, "bomb.epub", LIMIT)
    assert "OEBPS/text/one.xhtml" not in opened  # refused by its declared size, before decompressing a byte


def test_the_unpacked_bytes_are_counted_over_all_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epub, "MAX_UNPACKED_BYTES", 1024 * 1024)
    chapter = xhtml("<p>" + "a" * (400 * 1024) + "</p>")  # each under the limit, three over it
    opf = package(SPINE_ITEMS, ["one", "two", "three"]).replace(
        "</manifest>", '<item id="three" href="text/three.xhtml" media-type="application/xhtml+xml"/></manifest>'
    )
    files = {"OEBPS/content.opf": opf, **{f"OEBPS/text/{n}.xhtml": chapter for n in ("one", "two b", "three")}}
    with pytest.raises(PayloadTooLarge, match="unpacks to more than 1 MB"):
        read_document(epub_bytes(files), "big.epub", LIMIT)


def marked_encrypted(data: bytes, name: str) -> bytes:
    """The zip with `name`'s "encrypted" flag set in its local and central headers (zipfile cannot write it)."""
    patched = bytearray(data)
    for signature, flags_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := patched.find(signature, start)) >= 0:
            if patched[start + name_at :].startswith(name.encode()):
                patched[start + flags_at] |= 0x1
            start += 1
    return bytes(patched)


def test_an_encrypted_epub_is_refused() -> None:
    data = marked_encrypted(epub3('<li><a href="text/one.xhtml">The Calm</a></li>'), "OEBPS/content.opf")
    with pytest.raises(InvalidInput, match="encrypted"):
        read_document(data, "locked.epub", LIMIT)


def test_a_drm_protected_epub_is_refused() -> None:
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
        '<enc:CipherReference URI="OEBPS/text/one.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'
    )
    files = {"META-INF/encryption.xml": encryption, "OEBPS/content.opf": package(SPINE_ITEMS, ["one"]), **SPINE_FILES}
    with pytest.raises(InvalidInput, match="DRM-protected"):
        read_document(epub_bytes(files), "drm.epub", LIMIT)


def test_an_epubs_text_counts_against_the_limit() -> None:
    data = epub3('<li><a href="text/one.xhtml">The Calm</a></li>')
    chars = read_document(data, "tales.epub", LIMIT).chars
    with pytest.raises(PayloadTooLarge, match=f"has {chars} characters; MAX_JOB_CHARS is {chars - 1}"):
        read_document(data, "tales.epub", max_chars=chars - 1)


def test_html_entities_and_sloppy_html_in_an_epub_are_read_as_text() -> None:
    entities = xhtml("<h1>One &mdash; Start</h1><p>Wait&nbsp;&mdash; it&rsquo;s &amp; &#233;t&#xE9;.</p>")
    sloppy = "<html><head><title>x</title></head><body><h2>Two<p>Unclosed <b>bold<p>Next &hellip; para<br></body>"
    opf = package(SPINE_ITEMS, ["one", "two"])
    files = {"OEBPS/content.opf": opf, "OEBPS/text/one.xhtml": entities, "OEBPS/text/two b.xhtml": sloppy}
    document = read_document(epub_bytes(files), "b.epub", LIMIT)
    assert document.chapters[0].title == "One \u2014 Start"  # read as XML, though XML knows no &mdash;
    assert [chapter.text for chapter in document.chapters] == [
        "One \u2014 Start\n\nWait \u2014 it\u2019s & \u00e9t\u00e9.",
        "Two\n\nUnclosed bold\n\nNext \u2026 para",  # not XML: its tags taken off
    ]


HOSTILE_LINES = ["**a ", "*a ", "_a ", "[a ", "![a](", "[a](", "<a ", "<!--", "<script>", "~~a "]


@pytest.mark.parametrize("unit", HOSTILE_LINES)
def test_hostile_markup_costs_linear_time(unit: str) -> None:
    """300 kB of unclosed markup: a quadratic parser (lazy regex pairs, Python 3.11's html.parser) takes minutes."""
    markup = unit * (300_000 // len(unit))
    started = time.perf_counter()
    read_document(markup.encode() + b" end", "hostile.md", 2_000_000)
    page = xhtml(f"<p>{markup} end</p>")
    opf = package(SPINE_ITEMS, ["one"])
    read_document(epub_bytes({"OEBPS/content.opf": opf, "OEBPS/text/one.xhtml": page}), "hostile.epub", 2_000_000)
    assert time.perf_counter() - started < 5.0
