"""Text extraction from knowledge-base files (spec §5.1): bytes in, titled sections of plain text out.

`extract(filename, data)` picks an extractor by extension: PDF (one section per page), DOCX and Markdown
(one section per heading), HTML (headings h1-h6), CSV/TSV (rows as `header: value` lines), JSON/JSONL
(string values), XML (text nodes) and plain text for the many text formats upstream accepts (`.txt`,
`.log`, `.ini`, `.yaml`, source code ...). No Django: the indexer calls it from a worker.

Failure modes it prevents:

* A half-indexed document: every problem raises `ExtractionError` and nothing is returned, so a document
  is either fully extracted or not at all; a document with no text at all is an error too.
* A stack trace as the only explanation: each `ExtractionError` carries one specific reason a tenant admin
  can act on (`PDF is encrypted`, `file is 12 MB; the limit for .md is 10 MB`, `file is not UTF-8 text`).
* A worker exhausted by one upload: sizes are checked per type before parsing, a DOCX's uncompressed
  size is checked before unzipping, CSV rows and JSON nesting are bounded, and XML that declares entities
  is refused (entity-expansion "billion laughs" bombs); external entities are never fetched.
* Binary garbage indexed as text: files with NUL bytes or invalid UTF-8 are refused instead of decoded
  with replacement characters, and binary formats we do not read (`.xlsx`, `.pptx`, `.doc` ...) are
  refused by name with a hint to convert them.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any
from xml.parsers import expat

from celery.exceptions import SoftTimeLimitExceeded

MB = 1024 * 1024

# Size limits per type, checked before any parsing. Upstream's are far larger (PDF 500 MB, CSV 1 GB); ours
# keep one extraction within a worker's memory and a few seconds, and the chunker keeps at most 1000 chunks
# (about 800 KB of text) per document anyway.
# pypdf is pure Python: a larger PDF takes minutes and hundreds of MB on a worker.
PDF_MAX_BYTES = 50 * MB
# DOCX is zipped XML that python-docx loads whole; 20 MB of DOCX is mostly images already.
DOCX_MAX_BYTES = 20 * MB
# Zip-bomb guards, checked on the sizes the archive declares, before unzipping anything:
# - the XML parts (word/document.xml and the other *.xml/*.rels python-docx parses), summed: lxml holds each
#   parsed part whole, and a tiny element costs far more as a node than as bytes (40 MB of empty paragraphs
#   took 1.6 GB of memory); 50 MB is still hundreds of times the text a document keeps (about 800 KB of chunks).
DOCX_MAX_XML_BYTES = 50 * MB
# - all members together: python-docx keeps media and fonts as bytes (no parsing), which compress well in
#   ordinary documents (bitmaps, embedded fonts) and cost only their size; this bounds the unzipped total.
DOCX_MAX_UNCOMPRESSED_BYTES = 200 * MB
# Hand-written text, markup and code: 10 MB is thousands of pages, far beyond what gets indexed.
TEXT_MAX_BYTES = 10 * MB
# Data exports are bulkier per useful word than prose.
CSV_MAX_BYTES = 50 * MB
JSON_MAX_BYTES = 20 * MB
XML_MAX_BYTES = 20 * MB

# Pages of a PDF that are read: a 2,000-page PDF is a book already; pypdf takes milliseconds per page even
# without text, and a small file can list tens of thousands of pages. A longer PDF (a long manual) is read up
# to here and marked truncated, as before the limit: its first pages stay searchable and the notice says so.
PDF_MAX_PAGES = 2000
# Characters of text extracted from one file, at most: 1,000 chunks (the chunker's limit) of the largest
# configurable size (4,000, no overlap) cover 4 M; the rest could never be indexed. A tiny PDF whose 1,000
# pages all draw one 100 KB content stream expands to ~100 M characters (and took over a minute): extraction
# stops here, and the document says its text was cut (`ExtractedDocument.truncated`).
EXTRACT_MAX_TEXT_CHARS = 5_000_000
# A CSV beyond this many rows is a database dump, not a knowledge document; it is refused, not truncated.
CSV_MAX_ROWS = 200_000
# Deeper JSON is machine-generated nesting, and Python's own parser would hit its recursion limit.
JSON_MAX_DEPTH = 64
# Nested DOCX tables (a table in a cell in a table ...) are read this deep; deeper ones are layout tricks.
DOCX_MAX_TABLE_DEPTH = 5
# A file is sniffed for a CSV delimiter from this many leading characters.
CSV_SNIFF_CHARS = 8192

TEXT_EXTENSIONS = frozenset({
    "txt", "log", "cfg", "ini", "conf", "env", "yaml", "yml", "toml", "py", "rs", "js", "ts", "sh", "sql",
    "css", "ics", "vcf", "eml", "rst", "adoc", "properties", "graphql", "proto",
})
# Formats upstream accepts that we do not read (yet); refused with a hint rather than indexed as garbage.
UNSUPPORTED_HINTS = {
    "doc": "save it as .docx", "xls": "export it as .csv", "xlsx": "export it as .csv",
    "ppt": "save it as .pdf", "pptx": "save it as .pdf", "odt": "save it as .docx", "ods": "export it as .csv",
    "odp": "save it as .pdf", "epub": "convert it to .pdf", "rtf": "save it as .docx",
}
_HEADING_STYLE_RE = re.compile(r"^(heading \d|title)$", re.IGNORECASE)


class ExtractionError(ValueError):
    """The file cannot be turned into text; `str(error)` is a reason fit to show a tenant admin."""


@dataclass(frozen=True)
class ExtractedSection:
    """A run of text with one provenance: its PDF page (1-based, else None) and nearest heading ("" if none)."""

    text: str
    page: int | None
    heading: str


@dataclass(frozen=True)
class ExtractedDocument:
    title: str
    sections: list[ExtractedSection]
    # The file had more text than EXTRACT_MAX_TEXT_CHARS (or a PDF more than PDF_MAX_PAGES pages): the sections
    # hold its beginning only.
    truncated: bool = False
    # What was read of a truncated file, for the indexed row's notice ("the first 2,000 of the PDF's 2,400
    # pages"); empty: the first EXTRACT_MAX_TEXT_CHARS characters of its text.
    read_only: str = ""


# --- helpers ---------------------------------------------------------------------------------------------


def _format_mb(size: int) -> str:
    return f"{size / MB:.1f}".removesuffix(".0")


def _check_size(data: bytes, extension: str, limit: int) -> None:
    if len(data) > limit:
        raise ExtractionError(f"file is {_format_mb(len(data))} MB; the limit for .{extension} is "
                              f"{_format_mb(limit)} MB")


def _decode_text(data: bytes) -> str:
    """UTF-8 (a BOM is fine; UTF-16 with a BOM too); anything else is refused with the offending offset."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise ExtractionError(f"file is not valid UTF-16 text (bad data at byte {error.start})") from None
    if b"\x00" in data:
        raise ExtractionError("file looks binary (it contains NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ExtractionError(f"file is not UTF-8 text (invalid byte at offset {error.start}); "
                              "save it as UTF-8") from None


def _non_empty(title: str, sections: list[ExtractedSection], reason: str = "no text found",
               truncated: bool = False, read_only: str = "") -> ExtractedDocument:
    kept = [section for section in sections if section.text.strip()]
    if not kept:
        raise ExtractionError(reason)
    return ExtractedDocument(title=title.strip(), sections=kept, truncated=truncated,
                             read_only=read_only if truncated else "")


# Characters no stored text may hold: NUL (PostgreSQL text refuses it) and lone UTF-16 surrogates (not
# encodable as UTF-8: psycopg and the tokenizer raise). A UTF-16 file, a PDF's text or a JSON "\ud800" escape
# can carry them past the decoders; the indexer then failed (and retried) long after extraction.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    """`text` without NUL, with each lone surrogate replaced by U+FFFD."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda match: "" if match.group() == "\x00" else "\ufffd", text)


def _finished(document: ExtractedDocument) -> ExtractedDocument:
    """What `extract` returns, whatever the extractor: storable text, title and headings, within the budget."""
    sections = [ExtractedSection(text=_storable(section.text), page=section.page, heading=_storable(section.heading))
                for section in document.sections]
    # Sections that were nothing but NUL are gone: a document left with none has no text.
    return _within_text_budget(_non_empty(_storable(document.title), sections, truncated=document.truncated,
                                          read_only=document.read_only))


def _within_text_budget(document: ExtractedDocument) -> ExtractedDocument:
    """`document` with at most EXTRACT_MAX_TEXT_CHARS characters of section text (marked truncated if cut)."""
    if sum(len(section.text) for section in document.sections) <= EXTRACT_MAX_TEXT_CHARS:
        return document
    kept: list[ExtractedSection] = []
    remaining = EXTRACT_MAX_TEXT_CHARS
    for section in document.sections:
        if remaining <= 0:
            break
        kept.append(section if len(section.text) <= remaining else
                    ExtractedSection(text=section.text[:remaining], page=section.page, heading=section.heading))
        remaining -= len(section.text)
    return ExtractedDocument(title=document.title, sections=kept, truncated=True)


class _SectionBuilder:
    """Collects lines, starting a new section at each heading; the heading line is part of the text."""

    def __init__(self) -> None:
        self.sections: list[ExtractedSection] = []
        self._heading = ""
        self._lines: list[str] = []

    def heading(self, text: str) -> None:
        self._flush()
        self._heading = " ".join(text.split())
        self._lines = [self._heading]

    def line(self, text: str) -> None:
        self._lines.append(text)

    def _flush(self) -> None:
        text = "\n".join(self._lines).strip()
        if text:
            self.sections.append(ExtractedSection(text=text, page=None, heading=self._heading))
        self._lines = []

    def finish(self) -> list[ExtractedSection]:
        self._flush()
        return self.sections


# --- PDF -------------------------------------------------------------------------------------------------


def _extract_pdf(stem: str, data: bytes) -> ExtractedDocument:
    from pypdf import PdfReader  # imported here: only PDF indexing pays for it

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # An empty user password only restricts printing/copying; such PDFs open in any viewer.
            try:
                opened = reader.decrypt("")
            except Exception:  # unsupported cipher or missing crypto backend: still unreadable to us
                opened = 0
            if not opened:
                raise ExtractionError("PDF is encrypted (it needs a password to open)")
        pages = reader.pages
        page_count = len(pages)
        pages_cut = page_count > PDF_MAX_PAGES
        sections = []
        remaining = EXTRACT_MAX_TEXT_CHARS
        for number in range(1, min(page_count, PDF_MAX_PAGES) + 1):
            text = pages[number - 1].extract_text() or ""
            if text.strip():
                sections.append(ExtractedSection(text=text[:remaining], page=number, heading=""))
                remaining -= len(text)
                if remaining <= 0:  # the rest could not be indexed anyway: stop reading pages
                    break
        title = _pdf_title(reader) or stem
    except ExtractionError:
        raise
    except SoftTimeLimitExceeded:  # the task's time limit, not a damaged file: the task reports it
        raise
    except Exception as error:  # pypdf raises many types on damaged files; all mean the same to a user
        raise ExtractionError(f"not a valid PDF ({type(error).__name__}: {error})"[:300]) from None
    # The text budget, when it stopped the reading, is the cut that counts (it came before the page limit).
    return _non_empty(title, sections, "no text found (a scanned PDF? text inside images is not read)",
                      truncated=remaining <= 0 or pages_cut,
                      read_only="" if remaining <= 0 else
                      f"the first {PDF_MAX_PAGES:,} of the PDF's {page_count:,} pages")


def _pdf_title(reader: object) -> str:
    try:
        metadata = reader.metadata  # type: ignore[attr-defined]
        title = metadata.title if metadata is not None else None
    except Exception:  # damaged info dictionary: the title is optional
        return ""
    return title.strip() if isinstance(title, str) else ""


# --- DOCX ------------------------------------------------------------------------------------------------


def _check_docx_archive(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ExtractionError("not a valid DOCX file (not a zip archive)") from None
    except NotImplementedError as error:  # zipfile's "zip file version 6.3": a member needs a newer zip reader
        raise ExtractionError(f"not a valid DOCX file (its zip archive needs a feature that is not supported: "
                              f"{error})"[:300]) from None
    except UnicodeDecodeError:  # a member's name flagged as UTF-8 is not
        raise ExtractionError("not a valid DOCX file (a name in its zip archive is marked UTF-8 but is not "
                              "valid UTF-8)") from None
    with archive:
        names = set(archive.namelist())
        if "word/document.xml" not in names:
            raise ExtractionError("not a valid DOCX file (zip missing word/document.xml)")
        members = archive.infolist()
    uncompressed = sum(info.file_size for info in members)
    if uncompressed > DOCX_MAX_UNCOMPRESSED_BYTES:
        raise ExtractionError(f"DOCX expands to {_format_mb(uncompressed)} MB when unzipped; the limit is "
                              f"{_format_mb(DOCX_MAX_UNCOMPRESSED_BYTES)} MB")
    xml = sum(info.file_size for info in members if info.filename.lower().endswith((".xml", ".rels")))
    if xml > DOCX_MAX_XML_BYTES:
        raise ExtractionError(f"DOCX text and markup (its XML parts) expand to {_format_mb(xml)} MB when unzipped; "
                              f"the limit is {_format_mb(DOCX_MAX_XML_BYTES)} MB")


def _docx_table_lines(tbl: Any, depth: int) -> Iterator[str]:
    """Lines of a table (`w:tbl`), read from its XML. python-docx's `row.cells` resolves each vertically
    merged cell by walking up the rows (a 400-row merged table took 41 s); here a merged cell's text is read
    once, from the cell that starts the merge, and its continuation cells (`w:vMerge` without "restart")
    are skipped. A horizontally merged cell is one `w:tc` already."""
    if depth > DOCX_MAX_TABLE_DEPTH:
        return
    for tr in tbl.tr_lst:
        cells: list[str] = []
        for tc in tr.tc_lst:
            if tc.vMerge == "continue":
                continue
            text = " ".join(p.text for p in tc.p_lst).strip()
            if text:
                cells.append(text)
            for inner in tc.tbl_lst:
                yield from _docx_table_lines(inner, depth + 1)
        if cells:
            yield " | ".join(cells)


def _docx_paragraph_style_names(document: Any) -> tuple[dict[str, str], str]:
    """Paragraph style id -> name, and the default paragraph style's name, read once. python-docx's
    `paragraph.style` searches every style of the file per paragraph (30,000 paragraphs took 37 s)."""
    from docx.enum.style import WD_STYLE_TYPE

    names: dict[str, str] = {}
    default = ""
    for style in document.styles.element.style_lst:
        if style.type not in (WD_STYLE_TYPE.PARAGRAPH, None) or style.styleId is None:  # no type: paragraph
            continue
        name = style.name_val or ""
        names.setdefault(style.styleId, name)
        if style.default and not default:
            default = name
    return names, default


def _extract_docx(stem: str, data: bytes) -> ExtractedDocument:
    _check_docx_archive(data)
    import docx  # imported here: only DOCX indexing pays for it
    from docx.oxml.ns import qn

    paragraph_tag, text_path = qn("w:p"), ".//" + qn("w:t")
    try:
        document = docx.Document(io.BytesIO(data))
        style_names, default_style = _docx_paragraph_style_names(document)
        builder = _SectionBuilder()
        first_title = ""
        # The body's paragraphs and tables one at a time (not a list of millions of element proxies), and a
        # paragraph without any text element skipped before python-docx assembles its (empty) text.
        for block in document.element.body.iterchildren(paragraph_tag, qn("w:tbl")):
            if block.tag != paragraph_tag:
                for line in _docx_table_lines(block, 1):
                    builder.line(line)
                continue
            if block.find(text_path) is None:
                continue
            text = block.text.strip()
            if not text:
                continue
            style_id = block.style
            style_name = style_names.get(style_id, default_style) if style_id else default_style
            if _HEADING_STYLE_RE.match(style_name):
                first_title = first_title or text
                builder.heading(text)
            else:
                builder.line(text)
        sections = builder.finish()
        title = (document.core_properties.title or "").strip() or first_title or stem
    except ExtractionError:
        raise
    except SoftTimeLimitExceeded:  # the task's time limit, not a damaged file: the task reports it
        raise
    except Exception as error:  # python-docx/lxml raise many types on damaged parts
        raise ExtractionError(f"not a valid DOCX file ({type(error).__name__}: {error})"[:300]) from None
    return _non_empty(title, sections)


# --- Markdown --------------------------------------------------------------------------------------------

_MD_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_MD_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_MD_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+")
# A table ruler (`| --- | :-: |`), matched against the stripped line: no two whitespace runs may meet with only
# optional text between them, which backtracked quadratically on a line of spaces ending in a letter.
_MD_TABLE_SEPARATOR = re.compile(r"\|?\s*:?-{2,}:?(?:\s*\|\s*:?-{2,}:?)*(?:\s*\|)?")
# Inline patterns bound every span ({0,N}): unbounded ones rescan the rest of the line from every unmatched
# `*`, `[` or `<`, which is quadratic on a hostile multi-megabyte line.
_MD_SPAN = 300
# Emphasis is a few words; a longer "span" is more likely two unrelated asterisks, left as they are.
_MD_EMPHASIS_SPAN = 100
_MD_IMAGE = re.compile(rf"!\[([^\]\n]{{0,{_MD_SPAN}}})\]\([^)\n]{{0,{_MD_SPAN}}}\)")
_MD_LINK = re.compile(rf"\[([^\]\n]{{1,{_MD_SPAN}}})\](\([^)\n]{{0,{_MD_SPAN}}}\)|\[[^\]\n]{{0,{_MD_SPAN}}}\])")
_MD_EMPHASIS = re.compile(rf"(\*\*|__|\*|(?<!\w)_)(?=\S)(.{{1,{_MD_EMPHASIS_SPAN}}}?)(?<=\S)\1(?!\w)")
_MD_CODE_SPAN = re.compile(rf"`+([^`\n]{{1,{_MD_SPAN}}})`+")
_MD_HTML_TAG = re.compile(rf"</?[A-Za-z][^<>\n]{{0,{_MD_SPAN}}}>")
_MD_LINE_PREFIX = re.compile(r"^\s*(>\s*)*([-*+]\s+(\[[ xX]\]\s+)?|\d{1,9}[.)]\s+)?")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.IGNORECASE)


def _strip_markdown_inline(line: str) -> str:
    line = _MD_IMAGE.sub(r"\1", line)
    line = _MD_LINK.sub(r"\1", line)
    line = _MD_CODE_SPAN.sub(r"\1", line)
    line = _MD_HTML_TAG.sub(" ", line)
    line = _MD_EMPHASIS.sub(r"\2", line)
    return line.strip()


def _is_table_separator(line: str) -> bool:
    return _MD_TABLE_SEPARATOR.fullmatch(line.strip()) is not None


def _without_closing_hashes(text: str) -> str:
    """`Title ##` -> `Title` (an optional closing sequence), but `C#` stays; done without a regex that could
    backtrack over a long run of spaces."""
    text = text.strip()
    bare = text.rstrip("#")
    if bare != text and (not bare or bare[-1] in " \t"):
        return bare.rstrip()
    return text


def _extract_markdown(stem: str, data: bytes) -> ExtractedDocument:
    lines = _decode_text(data).splitlines()
    title = ""
    if lines and lines[0].strip() == "---":  # YAML front matter: metadata, not content (but keep a title)
        for end, line in enumerate(lines[1:], start=1):
            if line.strip() in ("---", "..."):
                for meta in lines[1:end]:
                    match = _FRONT_MATTER_TITLE.match(meta.strip())
                    if match:
                        title = match.group(1)
                lines = lines[end + 1:]
                break
    builder = _SectionBuilder()
    in_fence = False
    for number, raw in enumerate(lines):
        if _MD_FENCE.match(raw):
            in_fence = not in_fence
            continue
        if in_fence:
            builder.line(raw)  # code is content, but its markup is not ours to strip
            continue
        heading = _MD_ATX_HEADING.match(raw)
        if heading:
            text = _strip_markdown_inline(_without_closing_hashes(heading.group(2) or ""))
            if not text:
                continue
            if heading.group(1) == "#" and not title:
                title = text
            builder.heading(text)
            continue
        next_line = lines[number + 1] if number + 1 < len(lines) else ""
        if raw.strip() and _MD_SETEXT_UNDERLINE.match(next_line) and not _is_table_separator(raw):
            text = _strip_markdown_inline(raw)
            if next_line.strip().startswith("=") and not title:
                title = text
            builder.heading(text)
            continue
        if _MD_SETEXT_UNDERLINE.match(raw) or _MD_LINK_DEFINITION.match(raw) or _is_table_separator(raw):
            continue  # underlines, horizontal rules, link targets and table rulers carry no words
        text = _MD_LINE_PREFIX.sub("", raw, count=1)
        if "|" in text:
            text = " ".join(cell.strip() for cell in text.strip().strip("|").split("|"))
        builder.line(_strip_markdown_inline(text))
    return _non_empty(title or stem, builder.finish())


# --- plain text ------------------------------------------------------------------------------------------


def _extract_text(stem: str, data: bytes) -> ExtractedDocument:
    return _non_empty(stem, [ExtractedSection(text=_decode_text(data), page=None, heading="")])


# --- HTML ------------------------------------------------------------------------------------------------

_HTML_SKIPPED = frozenset({"script", "style", "nav", "noscript", "template", "svg", "head"})
# What may stand in <head>: any other start tag (or text) ends a head whose </head> was omitted (HTML5 allows
# it, minifiers do it), as a browser ends it; otherwise the whole page was skipped as head.
_HTML_HEAD_CONTENT = frozenset({"title", "meta", "link", "style", "script", "noscript", "template", "base"})
_HTML_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Elements without an end tag: never open, so a (stray) end tag of one closes nothing.
_HTML_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                        "source", "track", "wbr"})
_HTML_BLOCKS = frozenset({
    "p", "div", "br", "li", "tr", "td", "th", "section", "article", "header", "footer", "main", "aside",
    "blockquote", "pre", "dd", "dt", "table", "ul", "ol", "hr", "figcaption", "address",
})
_HTML_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", re.IGNORECASE)


class _HTMLTextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = _SectionBuilder()
        self.title = ""
        self.first_heading = ""
        # Open skipped elements, innermost last, each with the tags opened inside it and not yet closed: an end
        # tag of an element opened outside it closes it (`<div><nav>...</div>`, as a browser does), so an
        # unclosed <nav> no longer swallows the rest of the page.
        self._skipped: list[tuple[str, dict[str, int]]] = []
        # Tags open outside every skipped element (void ones never are). Only the end tag of an element opened
        # outside a skipped one closes it: a stray end tag inside (`<nav>a</br>b</nav>`, `</span>` never opened)
        # is ignored, as a browser does, instead of ending the skip and indexing the menu.
        self._open: dict[str, int] = {}
        self._in_title = False
        self._heading_tag = ""
        self._heading_parts: list[str] = []
        self._line: list[str] = []

    def _end_line(self) -> None:
        text = " ".join("".join(self._line).split())
        if text:
            self.builder.line(text)
        self._line = []

    def _end_pending_head(self) -> None:
        if self._skipped and self._skipped[-1][0] == "head":
            self._skipped.pop()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_HEAD_CONTENT:
            self._end_pending_head()
        if tag == "title":
            self._in_title = True
        elif tag in _HTML_SKIPPED:
            self._skipped.append((tag, {}))
        elif self._skipped:
            opened = self._skipped[-1][1]
            opened[tag] = opened.get(tag, 0) + 1
            return
        else:
            if tag not in _HTML_VOID:
                self._open[tag] = self._open.get(tag, 0) + 1
            if tag in _HTML_HEADINGS:
                self._end_line()
                self._heading_tag, self._heading_parts = tag, []
            elif tag in _HTML_BLOCKS:
                self._end_line()

    def _opened_outside(self, tag: str, index: int) -> bool:
        """Whether `tag` is open outside the skipped element at `index` (before it, or in an enclosing one)."""
        return bool(self._open.get(tag)) or any(opened.get(tag) for _, opened in self._skipped[:index])

    def _close_skipped(self, tag: str) -> bool:
        """An end tag while skipping: True if it is still inside the skipped content (nothing else to do)."""
        if tag in ("body", "html"):
            self._skipped.clear()
            self._open.clear()
            return False
        if tag in _HTML_SKIPPED:
            for index in range(len(self._skipped) - 1, -1, -1):
                if self._skipped[index][0] == tag:
                    del self._skipped[index:]
                    break
            return True  # a skipped element's end tag (or a stray one) is never text structure
        opened = self._skipped[-1][1]
        if opened.get(tag):
            opened[tag] -= 1
            return True
        if not self._opened_outside(tag, len(self._skipped) - 1):
            return True  # a stray end tag (never opened, or void): the skipped element goes on
        while self._skipped and not self._skipped[-1][1].get(tag):
            self._skipped.pop()  # the tag was opened outside: its end closes the skipped element(s) too
        if self._skipped:  # opened inside an enclosing skipped element: still skipped content
            self._skipped[-1][1][tag] -= 1
            return True
        return False

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif (self._skipped or tag in _HTML_SKIPPED) and self._close_skipped(tag):
            return
        if self._open.get(tag):
            self._open[tag] -= 1
        if tag == "title":
            return
        elif tag == self._heading_tag:
            text = " ".join("".join(self._heading_parts).split())
            self._heading_tag = ""
            if text:
                self.first_heading = self.first_heading or text
                self.builder.heading(text)
        elif tag in _HTML_BLOCKS:
            self._end_line()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if data.strip():
            self._end_pending_head()  # text cannot stand in <head>: the body has begun
        if self._skipped:
            return
        elif self._heading_tag:
            self._heading_parts.append(data)
        else:
            self._line.append(data)

    def finish(self) -> list[ExtractedSection]:
        self.close()
        if self._heading_tag:  # an unclosed heading still counts as text
            self.builder.line(" ".join(self._heading_parts))
        self._end_line()
        return self.builder.finish()


def _decode_html(data: bytes) -> str:
    try:
        return _decode_text(data)
    except ExtractionError:
        declared = _HTML_META_CHARSET.search(data[:4096])
        if declared is None or b"\x00" in data:
            raise
        try:
            return data.decode(declared.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            raise ExtractionError(f"file is neither UTF-8 nor valid {declared.group(1).decode('ascii')} "
                                  "as its <meta charset> declares") from None


def _extract_html(stem: str, data: bytes) -> ExtractedDocument:
    parser = _HTMLTextParser()
    text = _decode_html(data)
    try:
        parser.feed(text)
        sections = parser.finish()
    except AssertionError as error:
        # html.parser raises AssertionError (its way of reporting malformed markup since Python 3.10) on a
        # declaration it cannot parse: `<![` not followed by a keyword it knows (CDATA, if, ...), for one.
        raise ExtractionError(f"HTML has a malformed markup declaration that cannot be read ({error})"[:300]) from None
    title = " ".join(parser.title.split()) or parser.first_heading or stem
    return _non_empty(title, sections)


# --- CSV / TSV -------------------------------------------------------------------------------------------


def _csv_delimiter(text: str, extension: str) -> str:
    if extension == "tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(text[:CSV_SNIFF_CHARS], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _extract_csv(stem: str, data: bytes, extension: str) -> ExtractedDocument:
    text = _decode_text(data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text, extension))
    lines: list[str] = []
    header: list[str] = []
    try:
        for number, row in enumerate(reader, start=1):
            if number > CSV_MAX_ROWS + 1:
                raise ExtractionError(f"CSV has more than {CSV_MAX_ROWS} rows; split it into smaller files")
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if not header:
                header = [cell or f"column {index}" for index, cell in enumerate(cells, start=1)]
                continue
            pairs = []
            for index, value in enumerate(cells):
                if value:
                    name = header[index] if index < len(header) else f"column {index + 1}"
                    pairs.append(f"{name}: {value}")
            lines.append("; ".join(pairs))
    except csv.Error as error:
        raise ExtractionError(f"CSV line {reader.line_num}: {error}") from None
    if not lines and header:  # a single row: index it as it is
        lines = ["; ".join(header)]
    return _non_empty(stem, [ExtractedSection(text="\n".join(lines), page=None, heading="")])


# --- JSON / JSONL ----------------------------------------------------------------------------------------


def _json_lines(value: object, key: str, depth: int, out: list[str]) -> None:
    if depth > JSON_MAX_DEPTH:
        raise ExtractionError(f"JSON is nested deeper than {JSON_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for child_key, child in value.items():
            _json_lines(child, str(child_key), depth + 1, out)
    elif isinstance(value, list):
        for child in value:
            _json_lines(child, key, depth + 1, out)
    elif isinstance(value, str):
        if value.strip():
            out.append(f"{key}: {value}" if key else value)
    elif isinstance(value, bool | int | float) and key:
        # Numbers and flags only mean something next to their key (`price: 129`), so only keyed ones are kept.
        out.append(f"{key}: {json.dumps(value)}")


def _parse_json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ExtractionError(f"{where}is not valid JSON ({error.msg} at line {error.lineno} column "
                              f"{error.colno})") from None
    except RecursionError:
        raise ExtractionError(f"JSON is nested deeper than {JSON_MAX_DEPTH} levels") from None
    except ValueError:  # not a JSONDecodeError: int() refuses a number longer than Python's digit limit
        raise ExtractionError(f"JSON {where}has a number of more than {sys.get_int_max_str_digits()} digits; "
                              "store it as a string") from None


def _extract_json(stem: str, data: bytes, extension: str) -> ExtractedDocument:
    text = _decode_text(data)
    out: list[str] = []
    if extension == "jsonl":
        # Records end at "\n" (JSON Lines): str.splitlines() also splits at U+2028, U+2029, U+0085 and other
        # separators that JSON allows raw inside strings, and refused valid files.
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.removesuffix("\r")
            if line.strip():
                _json_lines(_parse_json(line, f"line {number} "), "", 0, out)
    else:
        _json_lines(_parse_json(text, ""), "", 0, out)
    return _non_empty(stem, [ExtractedSection(text="\n".join(out), page=None, heading="")])


# --- XML -------------------------------------------------------------------------------------------------


# The encoding an XML declaration names (after an optional UTF-8 BOM), for messages only: expat does the reading.
_XML_DECLARED_ENCODING = re.compile(rb"(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]{0,200}?\bencoding\s*=\s*"
                                    rb"""["']([^"'>]{0,60})["']""")


def _xml_declared_encoding(data: bytes) -> str:
    """` ('name')`, the encoding the XML declaration at the start of `data` names, for a message ("" if none)."""
    match = _XML_DECLARED_ENCODING.match(data[:300])
    return f" ({match.group(1).decode('ascii', 'replace')!r})" if match else ""


def _extract_xml(stem: str, data: bytes) -> ExtractedDocument:
    parts: list[str] = []
    parser = expat.ParserCreate()
    # Never read an external DTD or parameter entity: that is a network or file fetch on a worker.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse_doctype(name: str, system_id: str | None, public_id: str | None, has_internal_subset: int) -> None:
        # A DOCTYPE that only names an external DTD (old SVG files) is harmless since it is never loaded;
        # an internal subset is where entity-expansion bombs live.
        if has_internal_subset:
            raise ExtractionError("XML has a DOCTYPE with declarations; refused (entity-expansion risk)")

    def refuse_entity(*_args: object) -> None:
        raise ExtractionError("XML declares entities; refused (entity-expansion risk)")

    def text_node(content: str) -> None:
        parts.append(content)

    def element_boundary(*_args: object) -> None:
        parts.append("\n")  # text of adjacent elements must not run together

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity
    parser.CharacterDataHandler = text_node
    parser.StartElementHandler = element_boundary
    parser.EndElementHandler = element_boundary
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise ExtractionError(f"not well-formed XML ({expat.ErrorString(error.code)} at line {error.lineno} "
                              f"column {error.offset})") from None
    except ExtractionError:  # one of the handlers above refused it
        raise
    # expat reads UTF-8, UTF-16, ISO-8859-1 and US-ASCII itself and asks Python for any other declared encoding:
    # a name without a text codec raises LookupError, a codec expat cannot use (multi-byte: Shift_JIS, UTF-32)
    # ValueError or UnicodeError. Not transient: the same file fails the same way.
    except LookupError:
        raise ExtractionError(f"XML declares an encoding{_xml_declared_encoding(data)} that is not supported "
                              "(no such text encoding); save the file as UTF-8") from None
    except ValueError:
        raise ExtractionError(f"XML declares an encoding{_xml_declared_encoding(data)} that is not supported "
                              "(only UTF-8, UTF-16 and single-byte encodings are read); save the file as UTF-8"
                              ) from None
    lines = [" ".join(line.split()) for line in "".join(parts).split("\n")]
    return _non_empty(stem, [ExtractedSection(text="\n".join(line for line in lines if line), page=None,
                                              heading="")])


# --- dispatch --------------------------------------------------------------------------------------------

_Extractor = Callable[[str, bytes, str], ExtractedDocument]

_EXTRACTORS: dict[str, tuple[_Extractor, int]] = {
    "pdf": (lambda stem, data, _ext: _extract_pdf(stem, data), PDF_MAX_BYTES),
    "docx": (lambda stem, data, _ext: _extract_docx(stem, data), DOCX_MAX_BYTES),
    "md": (lambda stem, data, _ext: _extract_markdown(stem, data), TEXT_MAX_BYTES),
    "markdown": (lambda stem, data, _ext: _extract_markdown(stem, data), TEXT_MAX_BYTES),
    "html": (lambda stem, data, _ext: _extract_html(stem, data), TEXT_MAX_BYTES),
    "htm": (lambda stem, data, _ext: _extract_html(stem, data), TEXT_MAX_BYTES),
    "csv": (_extract_csv, CSV_MAX_BYTES),
    "tsv": (_extract_csv, CSV_MAX_BYTES),
    "json": (_extract_json, JSON_MAX_BYTES),
    "jsonl": (_extract_json, JSON_MAX_BYTES),
    "xml": (lambda stem, data, _ext: _extract_xml(stem, data), XML_MAX_BYTES),
    "svg": (lambda stem, data, _ext: _extract_xml(stem, data), XML_MAX_BYTES),
    **{extension: (lambda stem, data, _ext: _extract_text(stem, data), TEXT_MAX_BYTES)
       for extension in TEXT_EXTENSIONS},
}

# Size limit for files whose extension we do not know but whose content turns out to be text.
UNKNOWN_TEXT_MAX_BYTES = TEXT_MAX_BYTES


def supported_extensions() -> frozenset[str]:
    """Extensions (lower case, no dot) `extract` reads with a dedicated or plain-text extractor."""
    return frozenset(_EXTRACTORS)


def extract(filename: str, data: bytes) -> ExtractedDocument:
    """The text of `data`, read according to the extension of `filename` (a name or a drive path).

    Raises ExtractionError with a user-facing reason when the file is too large, damaged, encrypted, of an
    unsupported kind or without any text. Never returns a partial result.
    """
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    extension = extension.lower()
    stem = stem or name
    if not data:
        raise ExtractionError("file is empty")
    if extension in UNSUPPORTED_HINTS:
        raise ExtractionError(f".{extension} files are not supported; {UNSUPPORTED_HINTS[extension]}")
    entry = _EXTRACTORS.get(extension)
    if entry is not None:
        extractor, limit = entry
        _check_size(data, extension, limit)
        return _finished(extractor(stem, data, extension))
    # Unknown extension: index it only if it is plainly text.
    label = f".{extension}" if extension else "without an extension"
    if len(data) > UNKNOWN_TEXT_MAX_BYTES:
        raise ExtractionError(f"file is {_format_mb(len(data))} MB; the limit for files {label} is "
                              f"{_format_mb(UNKNOWN_TEXT_MAX_BYTES)} MB")
    try:
        text = _decode_text(data)
    except ExtractionError:
        raise ExtractionError(f"unsupported file type ({label}) with binary content") from None
    return _finished(_non_empty(stem, [ExtractedSection(text=text, page=None, heading="")]))
