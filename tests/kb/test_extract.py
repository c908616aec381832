"""Text extraction per document type, with every file built inside the test, and every refusal reason."""

from __future__ import annotations

import io
import json
import zipfile

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from apps.kb import extract as extract_module
from apps.kb.extract import ExtractedDocument, ExtractionError, extract, supported_extensions


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A minimal valid PDF with one Helvetica text line per string, one page per list (empty list: no text)."""
    objects: list[bytes] = []
    page_count = len(pages)
    font_id = 3 + 2 * page_count
    info_id = font_id + 1
    kids = " ".join(f"{3 + 2 * index} 0 R" for index in range(page_count))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {page_count} >>".encode())
    for index, lines in enumerate(pages):
        content_id = 4 + 2 * index
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 "
                       f"{font_id} 0 R >> >> /Contents {content_id} 0 R >>".encode())
        body = "BT /F1 12 Tf 72 720 Td 14 TL\n" + "".join(f"({_pdf_escape(line)}) Tj T*\n" for line in lines)
        body += "ET"
        stream = body.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    objects.append(f"<< /Title ({_pdf_escape(title)}) >>".encode() if title else b"<< >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body_bytes in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body_bytes + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, info_id, xref)
    return bytes(out)


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def build_docx(build) -> bytes:
    document = docx.Document()
    build(document)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def all_text(doc: ExtractedDocument) -> str:
    return "\n".join(section.text for section in doc.sections)


# --- PDF -------------------------------------------------------------------------------------------------


def test_pdf_yields_one_section_per_page_with_its_page_number():
    data = build_pdf([["Returns are accepted within 60 days."], [], ["Warranty (clause 4.2) covers seams."]],
                     title="Store Policies")
    doc = extract("policies.pdf", data)
    assert doc.title == "Store Policies"
    assert [section.page for section in doc.sections] == [1, 3]  # the blank page 2 has no section
    assert "Returns are accepted within 60 days." in doc.sections[0].text
    assert "Warranty (clause 4.2) covers seams." in doc.sections[1].text
    assert all(section.heading == "" for section in doc.sections)


def test_pdf_title_falls_back_to_the_file_stem():
    assert extract("kb/docs/Shipping Guide.PDF", build_pdf([["Ground shipping"]])).title == "Shipping Guide"


def test_pdf_with_a_user_password_is_refused_as_encrypted():
    data = encrypt_pdf(build_pdf([["secret text"]]), user_password="s3cret")
    with pytest.raises(ExtractionError, match="PDF is encrypted"):
        extract("locked.pdf", data)


def test_pdf_encrypted_with_an_empty_user_password_is_read():
    data = encrypt_pdf(build_pdf([["printing is restricted but reading is not"]]), user_password="")
    assert "reading is not" in all_text(extract("restricted.pdf", data))


def test_pdf_without_any_text_is_refused_as_probably_scanned():
    with pytest.raises(ExtractionError, match=r"no text found \(a scanned PDF\?"):
        extract("scan.pdf", build_pdf([[], []]))


def shared_stream_pdf(pages: int, lines: int) -> bytes:
    """A small PDF whose `pages` pages all draw one content stream of `lines` text lines."""
    body = "BT /F1 12 Tf 72 720 Td 14 TL\n" + "(Tents pack small and dry fast.) Tj T*\n" * lines + "ET"
    stream = body.encode()
    font_id = 4 + pages
    kids = " ".join(f"{4 + index} 0 R" for index in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    objects += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font_id} 0 R "
                f">> >> /Contents 3 0 R >>".encode()] * pages
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body_bytes in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body_bytes + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_small_pdf_that_expands_to_millions_of_characters_is_cut_at_the_text_budget(monkeypatch):
    """Pages are read only until the text budget is spent (reading all 1000 pages, 77 M characters, took 84 s)."""
    from pypdf import PageObject

    pages_read: list[PageObject] = []
    extract_text = PageObject.extract_text

    def counted_extract_text(page, *args, **kwargs):
        pages_read.append(page)
        return extract_text(page, *args, **kwargs)

    monkeypatch.setattr(PageObject, "extract_text", counted_extract_text)
    data = shared_stream_pdf(pages=1000, lines=2500)  # 250 KB; every page draws the same 77 KB of text
    doc = extract("bomb.pdf", data)
    assert doc.truncated and sum(len(s.text) for s in doc.sections) == extract_module.EXTRACT_MAX_TEXT_CHARS
    assert len(doc.sections) < 100 and doc.sections[0].page == 1
    assert len(pages_read) == len(doc.sections)  # the page that spent the budget was the last one read
    assert not extract("policies.pdf", build_pdf([["Returns within 60 days."]])).truncated


def test_a_pdf_past_the_page_limit_keeps_its_first_pages_and_is_marked_truncated(monkeypatch):
    """A long manual was refused outright ('PDF has N pages; the limit is 2000'); before the limit its first
    pages were indexed with the truncation notice."""
    from apps.kb.chunking import chunk_document, document_text
    from apps.kb.indexing import _truncation_notice

    monkeypatch.setattr(extract_module, "PDF_MAX_PAGES", 2)
    doc = extract("book.pdf", build_pdf([["one"], ["two"], ["three"]]))
    assert [(s.page, s.text.strip()) for s in doc.sections] == [(1, "one"), (2, "two")]
    assert doc.truncated and doc.read_only == "the first 2 of the PDF's 3 pages"
    notice = _truncation_notice(chunk_document(doc), len(document_text(doc)), text_cut=doc.truncated,
                                read_only=doc.read_only)
    assert notice == "only the first 2 of the PDF's 3 pages were read; split the file to make the rest searchable"
    within = extract("short.pdf", build_pdf([["one"], ["two"]]))
    assert not within.truncated and within.read_only == ""


def test_any_type_past_the_text_budget_is_cut_and_marked(monkeypatch):
    monkeypatch.setattr(extract_module, "EXTRACT_MAX_TEXT_CHARS", 100)
    doc = extract("long.md", b"# One\n" + b"a" * 80 + b"\n# Two\n" + b"b" * 80 + b"\n")
    assert doc.truncated and sum(len(s.text) for s in doc.sections) == 100
    assert [s.heading for s in doc.sections] == ["One", "Two"]


def test_damaged_pdf_is_refused_as_not_a_valid_pdf():
    with pytest.raises(ExtractionError, match="not a valid PDF"):
        extract("broken.pdf", b"%PDF-1.4\nthis is not really a pdf")


# --- DOCX ------------------------------------------------------------------------------------------------


def _handbook(document) -> None:
    document.core_properties.title = ""
    document.add_paragraph("Welcome to the handbook.")
    document.add_heading("Returns", level=1)
    document.add_paragraph("Unworn items can be returned within 60 days.")
    document.add_heading("Warranty", level=2)
    document.add_paragraph("Boots carry a two-year warranty.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "SKU", "Coverage"
    table.cell(1, 0).text, table.cell(1, 1).text = "HP-TR-2210", "Seams and zippers"


def test_docx_sections_carry_their_nearest_heading_and_table_text():
    doc = extract("handbook.docx", build_docx(_handbook))
    assert doc.title == "Returns"  # no core title: the first heading
    assert [section.heading for section in doc.sections] == ["", "Returns", "Warranty"]
    assert doc.sections[0].text == "Welcome to the handbook."
    assert "within 60 days" in doc.sections[1].text
    warranty = doc.sections[2].text
    assert warranty.startswith("Warranty")
    assert "SKU | Coverage" in warranty and "HP-TR-2210 | Seams and zippers" in warranty
    assert all(section.page is None for section in doc.sections)


def test_docx_title_comes_from_core_properties():
    def build(document):
        document.core_properties.title = "Employee Handbook"
        document.add_paragraph("Hello there, staff.")

    assert extract("h.docx", build_docx(build)).title == "Employee Handbook"


def test_docx_merged_table_cells_are_read_once():
    def build(document):
        table = document.add_table(rows=1, cols=3)
        merged = table.cell(0, 0).merge(table.cell(0, 1))
        merged.text = "Merged heading cell"
        table.cell(0, 2).text = "Other"

    assert all_text(extract("t.docx", build_docx(build))) == "Merged heading cell | Other"


def _with_body(data: bytes, body: bytes) -> bytes:
    """The DOCX `data` with `body` put at the start of its document body (python-docx builds slowly)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            part = source.read(info)
            if info.filename == "word/document.xml":
                part = part.replace(b"<w:body>", b"<w:body>" + body, 1)
            target.writestr(info, part)
    return out.getvalue()


def test_a_docx_of_30000_short_paragraphs_is_read_with_its_headings_and_its_styles_looked_up_once(monkeypatch):
    """python-docx looked each paragraph's style up among all the file's styles, twice: 37 s for 39 KB. The
    styles are read once into a table; no search of the styles per paragraph."""
    from docx.oxml.styles import CT_Styles

    searches: list[str] = []
    for name in ("get_by_id", "get_by_name", "default_for"):
        search = getattr(CT_Styles, name)
        monkeypatch.setattr(CT_Styles, name, lambda styles, key, _name=name, _search=search: (
            searches.append(_name), _search(styles, key))[1])
    paragraph = b'<w:p><w:r><w:t>Tents pack small.</w:t></w:r></w:p>'
    heading = b'<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Care</w:t></w:r></w:p>'
    data = _with_body(build_docx(lambda document: document.add_heading("Returns", level=1)),
                      paragraph * 15_000 + heading + paragraph * 15_000)
    searches.clear()  # building the file looked styles up
    doc = extract("long.docx", data)
    assert searches == []
    assert [section.heading for section in doc.sections] == ["", "Care", "Returns"]
    assert doc.title == "Care" and all_text(doc).count("Tents pack small.") == 30_000


def test_a_docx_table_with_a_tall_merged_cell_is_read_without_walking_up_the_rows_and_the_cell_once(monkeypatch):
    """python-docx's row.cells found each vertically merged cell's text by walking up the rows: a 400-row table
    took 41 s, and the cell's text came out once per row. A continuation cell is skipped where it stands."""
    from docx.oxml.table import CT_Tc

    def build(document):
        table = document.add_table(rows=400, cols=5)
        for column in range(5):
            table.cell(0, column).merge(table.cell(399, column)).text = f"Column {column}"

    data = build_docx(build)
    walks: list[str] = []
    for name in ("_tc_above", "_tr_above"):
        walk = getattr(CT_Tc, name)
        monkeypatch.setattr(CT_Tc, name, property(lambda tc, _name=name, _walk=walk: (
            walks.append(_name), _walk.fget(tc))[1]))
    text = all_text(extract("merged.docx", data))
    assert walks == []
    assert text == "Column 0 | Column 1 | Column 2 | Column 3 | Column 4"


def test_the_tasks_time_limit_is_not_reported_as_a_damaged_file(monkeypatch):
    """Celery's soft time limit is raised inside whatever the worker runs: the extractors' broad excepts turned
    it into 'not a valid DOCX/PDF', a failure blamed on the file instead of the time limit."""
    import docx as docx_module
    import pypdf
    from celery.exceptions import SoftTimeLimitExceeded

    def out_of_time(*_args, **_kwargs):
        raise SoftTimeLimitExceeded()

    docx_data, pdf_data = build_docx(_handbook), build_pdf([["text"]])
    monkeypatch.setattr(docx_module, "Document", out_of_time)
    monkeypatch.setattr(pypdf, "PdfReader", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):
        extract("slow.docx", docx_data)
    with pytest.raises(SoftTimeLimitExceeded):
        extract("slow.pdf", pdf_data)


def test_docx_that_is_not_a_zip_is_refused():
    with pytest.raises(ExtractionError, match=r"not a valid DOCX file \(not a zip archive\)"):
        extract("fake.docx", b"plain text pretending")


def test_docx_zip_without_document_xml_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ExtractionError, match=r"not a valid DOCX file \(zip missing word/document.xml\)"):
        extract("empty.docx", buffer.getvalue())


def _with_member(docx_data: bytes, name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_data)) as source, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr(name, data)
    return buffer.getvalue()


def test_docx_with_large_compressible_media_extracts_and_only_its_xml_is_held_to_the_xml_limit(monkeypatch):
    """The 50 MB limit meant for lxml's memory was applied to the whole unzipped archive: an ordinary DOCX
    with a well-compressed 60 MB image or font was refused ('expands to 60.x MB when unzipped')."""
    data = _with_member(build_docx(_handbook), "word/media/image1.bmp", bytes(60 * 1024 * 1024))
    assert len(data) < extract_module.DOCX_MAX_BYTES
    assert "Returns" in all_text(extract("handbook.docx", data))
    monkeypatch.setattr(extract_module, "DOCX_MAX_XML_BYTES", 1000)  # document.xml alone is larger
    with pytest.raises(ExtractionError, match=r"^DOCX text and markup \(its XML parts\) expand to .* MB when "
                                              r"unzipped; the limit is 0 MB$"):
        extract("handbook.docx", data)


def test_docx_that_expands_beyond_the_limit_is_refused_before_unzipping(monkeypatch):
    monkeypatch.setattr(extract_module, "DOCX_MAX_UNCOMPRESSED_BYTES", 1000)
    with pytest.raises(ExtractionError, match="DOCX expands to .* MB when unzipped; the limit is"):
        extract("bomb.docx", build_docx(_handbook))


def test_docx_with_a_damaged_document_part_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<not xml")
    with pytest.raises(ExtractionError, match="not a valid DOCX file"):
        extract("damaged.docx", buffer.getvalue())


def test_docx_without_text_is_refused():
    with pytest.raises(ExtractionError, match="no text found"):
        extract("blank.docx", build_docx(lambda document: document.add_paragraph("   ")))


# --- Markdown --------------------------------------------------------------------------------------------

MARKDOWN = b"""---
layout: page
---
Intro line before any heading.

# Harbor & Pine Returns

Return **unworn** items with the [receipt](https://example.com/r) within *60 days*.
Use `RMA-20` codes; snake_case_names stay intact.

## Exceptions
> Final-sale items cannot be returned.

- Gift cards
- 1. Custom embroidery
![a folded tent](tent.png)

| Item | Window |
|------|--------|
| Boots | 60 days |

```
code **stays** as written
```

Setext heading
--------------
Body under setext.

[ref]: https://example.com
"""


def test_markdown_sections_split_at_headings_with_markup_stripped():
    doc = extract("returns.md", MARKDOWN)
    assert doc.title == "Harbor & Pine Returns"
    assert [section.heading for section in doc.sections] == ["", "Harbor & Pine Returns", "Exceptions",
                                                             "Setext heading"]
    assert doc.sections[0].text == "Intro line before any heading."
    returns = doc.sections[1].text
    assert returns.startswith("Harbor & Pine Returns")
    assert "Return unworn items with the receipt within 60 days." in returns
    assert "Use RMA-20 codes; snake_case_names stay intact." in returns
    exceptions = doc.sections[2].text
    assert "Final-sale items cannot be returned." in exceptions
    assert "\nGift cards\n" in exceptions and "a folded tent" in exceptions
    assert "Boots 60 days" in exceptions and "---" not in exceptions and "|" not in exceptions
    assert "code **stays** as written" in exceptions
    assert "layout" not in all_text(doc) and "https://" not in all_text(doc)
    assert doc.sections[3].text == "Setext heading\nBody under setext."


def test_markdown_front_matter_title_is_used_when_there_is_no_h1():
    doc = extract("x.md", b"---\ntitle: \"Care Guide\"\n---\n## Boots\nWax them yearly.\n")
    assert doc.title == "Care Guide"
    assert doc.sections[0].heading == "Boots"


# --- plain text ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["notes.txt", "server.log", "app.ini", "deploy.yaml", "script.py", "README"])
def test_text_like_files_are_read_as_utf8(name):
    doc = extract(name, "Café hours: 9–5\n".encode())
    assert doc.sections[0].text == "Café hours: 9–5\n"
    assert doc.sections[0].page is None and doc.sections[0].heading == ""


def test_text_with_a_utf8_bom_or_utf16_bom_is_decoded():
    assert extract("a.txt", b"\xef\xbb\xbfhello world").sections[0].text == "hello world"
    assert extract("b.txt", "hello world".encode("utf-16")).sections[0].text == "hello world"


def test_text_that_is_not_utf8_is_refused_with_the_offset():
    with pytest.raises(ExtractionError, match=r"file is not UTF-8 text \(invalid byte at offset 3\)"):
        extract("latin1.txt", "abcé".encode("latin-1"))


def test_text_with_nul_bytes_is_refused_as_binary():
    with pytest.raises(ExtractionError, match="file looks binary"):
        extract("weird.txt", b"abc\x00def")


def test_whitespace_only_text_is_refused_as_empty():
    with pytest.raises(ExtractionError, match="no text found"):
        extract("blank.txt", b" \n\t\n")


def test_an_empty_file_is_refused():
    with pytest.raises(ExtractionError, match="file is empty"):
        extract("nothing.md", b"")


# --- HTML ------------------------------------------------------------------------------------------------

HTML = b"""<!doctype html><html><head><title>Store Hours</title><style>p {color: red}</style>
<script>var hidden = "do not index";</script></head>
<body><nav><a href="/">Home</a> <a href="/x">Menu link</a></nav>
<p>Intro &amp; welcome</p>
<h1>Portland</h1><p>Open <b>9am</b> to 8pm.</p><ul><li>Rentals desk</li><li>Repairs</li></ul>
<h2>Holidays</h2><p>Closed on New Year&#39;s Day.</p><noscript>enable js</noscript>
</body></html>"""


def test_html_keeps_title_and_headings_and_drops_script_style_nav():
    doc = extract("hours.html", HTML)
    assert doc.title == "Store Hours"
    assert [section.heading for section in doc.sections] == ["", "Portland", "Holidays"]
    assert doc.sections[0].text == "Intro & welcome"
    assert doc.sections[1].text == "Portland\nOpen 9am to 8pm.\nRentals desk\nRepairs"
    assert doc.sections[2].text == "Holidays\nClosed on New Year's Day."
    text = all_text(doc)
    for dropped in ("do not index", "color", "Menu link", "enable js"):
        assert dropped not in text


@pytest.mark.parametrize("page", [
    b"<!doctype html><html><head><meta charset=utf-8><title>Store Hours</title><body><h1>Portland</h1>"
    b"<p>Open 9am to 8pm.</p></body></html>",
    b"<html><head><title>Store Hours</title><script>var x = 1;</script><h1>Portland</h1><p>Open 9am to 8pm.",
    b"<head><title>Store Hours</title><link rel=stylesheet href=s.css>Portland: open 9am to 8pm.",
])
def test_html_whose_head_end_tag_is_omitted_keeps_its_body(page):
    """</head> is optional in HTML5 (and minifiers drop it): the page was refused as 'no text found'."""
    doc = extract("hours.html", page)
    assert doc.title == "Store Hours" and "9am to 8pm" in all_text(doc)
    assert "var x" not in all_text(doc)


def test_an_unclosed_nav_ends_with_its_parent_element():
    """An unclosed <nav> dropped the rest of the page silently; a browser closes it with its parent."""
    page = (b"<body><div><nav><a href='/'>Home</a> <a>Menu link</a></div><p>Returns within 60 days.</p>"
            b"<main><nav><ul><li>Shop</li></ul></main><footer>Call 555-0100.</footer><svg><g><text>logo</text>"
            b"</g></svg><p>Repairs take a week.</p></body>")
    text = all_text(extract("page.html", page))
    assert text == "Returns within 60 days.\nCall 555-0100.\nRepairs take a week."


@pytest.mark.parametrize("page", [
    b"<body><nav>Home</br>Menu link</nav><p>Returns within 60 days.</p></body>",
    b"<body><div><nav><a>Home</a></span><li>About us menu</nav><p>Returns within 60 days.</p></div></body>",
    b"<body><p>Returns within 60 days.</p><nav>a</br>b</nav></body>",
])
def test_a_stray_end_tag_inside_a_skipped_element_does_not_end_the_skip(page):
    """An end tag of an element never opened (or void) closed the <nav>: its menu text was indexed."""
    assert all_text(extract("page.html", page)) == "Returns within 60 days."


def test_html_in_a_declared_legacy_charset_is_decoded():
    data = '<meta charset="iso-8859-1"><p>Caf\u00e9 au lait</p>'.encode("latin-1")
    assert extract("old.htm", data).sections[0].text == "Café au lait"


def test_html_in_an_undeclared_legacy_charset_is_refused():
    with pytest.raises(ExtractionError, match="file is not UTF-8 text"):
        extract("old.html", "<p>Caf\u00e9</p>".encode("latin-1"))


def test_html_with_only_scripts_is_refused_as_empty():
    with pytest.raises(ExtractionError, match="no text found"):
        extract("app.html", b"<html><script>boot()</script></html>")


# --- CSV / TSV -------------------------------------------------------------------------------------------


def test_csv_rows_become_header_value_lines():
    data = b"sku,name,price\nHP-TN-0420,Ridgeline tent,349\nHP-BT-1180,,129\n\n"
    doc = extract("catalog.csv", data)
    assert doc.sections[0].text == ("sku: HP-TN-0420; name: Ridgeline tent; price: 349\n"
                                    "sku: HP-BT-1180; price: 129")


def test_semicolon_csv_and_tsv_are_split_on_their_delimiter():
    assert extract("eu.csv", b"name;city\nAna;Porto\nBo;Lyon\n").sections[0].text == "name: Ana; city: Porto\n" \
                                                                                    "name: Bo; city: Lyon"
    assert extract("t.tsv", b"a\tb\n1\t2, 3\n").sections[0].text == "a: 1; b: 2, 3"


def test_csv_extra_cells_and_header_only_files():
    assert extract("x.csv", b"a,b\n1,2,3\n").sections[0].text == "a: 1; b: 2; column 3: 3"
    assert extract("h.csv", b"only,a,header\n").sections[0].text == "only; a; header"


def test_csv_with_too_many_rows_is_refused(monkeypatch):
    monkeypatch.setattr(extract_module, "CSV_MAX_ROWS", 3)
    with pytest.raises(ExtractionError, match="CSV has more than 3 rows"):
        extract("big.csv", b"h\n" + b"x\n" * 4)
    assert extract("ok.csv", b"h\n" + b"x\n" * 3).sections[0].text.count("h: x") == 3


def test_csv_with_a_broken_quote_names_the_line():
    with pytest.raises(ExtractionError, match=r"CSV line \d+"):
        extract("bad.csv", b'a,b\n1,"x' + b"y" * 200_000 + b"\n")


# --- JSON / JSONL ----------------------------------------------------------------------------------------


def test_json_string_values_are_collected_recursively_with_their_keys():
    data = json.dumps({"store": {"name": "Harbor & Pine", "tags": ["outdoor", "", "rentals"], "open": True,
                                 "floors": 2, "manager": None}}).encode()
    assert extract("store.json", data).sections[0].text == ("name: Harbor & Pine\ntags: outdoor\ntags: rentals\n"
                                                            "open: true\nfloors: 2")


def test_jsonl_reads_every_line_and_names_a_bad_one():
    assert extract("faq.jsonl", b'{"q": "hours?"}\n\n"plain string"\n').sections[0].text == "q: hours?\nplain string"
    with pytest.raises(ExtractionError, match=r"line 2 is not valid JSON"):
        extract("bad.jsonl", b'{"q": "ok"}\n{"q": \n')


def test_invalid_json_is_refused():
    with pytest.raises(ExtractionError, match=r"is not valid JSON \(Expecting"):
        extract("bad.json", b'{"a": }')


def test_deeply_nested_json_is_refused():
    with pytest.raises(ExtractionError, match="JSON is nested deeper than 64 levels"):
        extract("deep.json", b"[" * 100 + b'"x"' + b"]" * 100)
    with pytest.raises(ExtractionError, match="JSON is nested deeper than 64 levels"):
        extract("deeper.json", b"[" * 100_000 + b"]" * 100_000)


def test_json_without_strings_is_refused_as_empty():
    with pytest.raises(ExtractionError, match="no text found"):
        extract("n.json", b"[1, 2, null]")


# --- XML -------------------------------------------------------------------------------------------------


def test_xml_text_nodes_are_collected():
    data = b'<?xml version="1.0"?><faq><q id="1">Do you rent kayaks?</q><a>Yes, <b>daily</b>.</a></faq>'
    assert extract("faq.xml", data).sections[0].text == "Do you rent kayaks?\nYes,\ndaily\n."


def test_xml_with_entity_declarations_is_refused():
    bomb = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"""
    with pytest.raises(ExtractionError, match="entity-expansion risk"):
        extract("bomb.xml", bomb)
    utf16_bomb = bomb.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    with pytest.raises(ExtractionError, match="entity-expansion risk"):
        extract("bomb16.xml", utf16_bomb)


def test_xml_with_an_external_entity_is_refused_without_fetching_it():
    data = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    with pytest.raises(ExtractionError, match="entity-expansion risk"):
        extract("xxe.xml", data)


def test_svg_with_an_external_dtd_only_is_read():
    data = (b'<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
            b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg><text>Trail map</text></svg>')
    assert extract("map.svg", data).sections[0].text == "Trail map"


def test_malformed_xml_is_refused_with_its_position():
    with pytest.raises(ExtractionError, match=r"not well-formed XML \(.* at line 1 column \d+\)"):
        extract("bad.xml", b"<a><b></a>")


# --- dispatch and limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "limit_mb"), [("big.md", 10), ("big.txt", 10), ("big.html", 10),
                                                ("big.pdf", 50), ("big.docx", 20), ("big.csv", 50)])
def test_files_over_their_type_limit_are_refused_before_parsing(name, limit_mb):
    extension = name.rsplit(".", 1)[1]
    data = b"x" * (limit_mb * 1024 * 1024 + 1)
    with pytest.raises(ExtractionError, match=rf"file is {limit_mb} MB; the limit for \.{extension} is {limit_mb} MB"):
        extract(name, data)


def test_size_message_shows_one_decimal_when_needed():
    with pytest.raises(ExtractionError, match=r"file is 12.5 MB; the limit for \.md is 10 MB"):
        extract("big.md", b"x" * int(12.5 * 1024 * 1024))


@pytest.mark.parametrize(("name", "hint"), [("sheet.xlsx", "export it as .csv"), ("deck.pptx", "save it as .pdf"),
                                            ("old.doc", "save it as .docx"), ("book.epub", "convert it to .pdf")])
def test_binary_formats_we_do_not_read_are_refused_with_a_hint(name, hint):
    with pytest.raises(ExtractionError, match=f"files are not supported; {hint}"):
        extract(name, b"PK\x03\x04 whatever")


def test_unknown_extension_is_read_when_it_is_text_and_refused_when_binary():
    assert extract("notes.xyz", b"plain words here").sections[0].text == "plain words here"
    with pytest.raises(ExtractionError, match=r"unsupported file type \(\.bin\) with binary content"):
        extract("blob.bin", b"\x89PNG\x00\x01\x02")


def test_extension_matching_ignores_case_and_directories():
    assert extract("kb/Docs/READ.ME.MD", b"# Hi there\ntext body").title == "Hi there"
    assert extract("dir\\file.TXT", b"some text").title == "file"
    assert extract(".env", b"KEY=value").title == ".env"


def test_supported_extensions_cover_the_minimum_types():
    assert {"md", "txt", "pdf", "docx", "csv", "html", "json", "xml", "tsv", "jsonl", "htm"} <= supported_extensions()


def test_markdown_heading_closing_hashes_and_hostile_lines():
    doc = extract("h.md", b"## Care guide ##\nbody text here\n# C#\nmore body text\n#\n#hashtag is not a heading\n")
    assert [section.heading for section in doc.sections] == ["Care guide", "C#"]
    assert "#hashtag is not a heading" in doc.sections[1].text
    # unmatched markup on a long line must not make the inline patterns rescan the line quadratically
    long_line = b"*a [b <c _d " * 50_000
    assert extract("long.md", long_line).sections[0].text.startswith("*a [b <c _d")


def _whitespace_runs_that_meet(pattern: str) -> set[tuple[int, int]]:
    """Pairs of whitespace runs of `pattern` (`\\s*`, `\\s+`, `[ \\t]*`, `.*`; numbered left to right) that can
    follow each other with nothing but optional items between them, a repeated group included. A run of n spaces can
    be shared between two such runs in n ways, and a failing match tries them all at each place: the scan is
    quadratic. An empty set: every two runs are kept apart by a required character, each space is matched one way."""
    from re import _constants as sre
    from re import _parser

    runs: list[int] = []

    def matches_space(op, av) -> bool:
        if op is sre.IN:
            return any(x in ((sre.CATEGORY, sre.CATEGORY_SPACE), (sre.LITERAL, 32), (sre.LITERAL, 9)) for x in av)
        return (op is sre.LITERAL and av in (9, 32)) or op is sre.ANY

    def sequence(items):  # (can be empty, runs it can start with, runs it can end with, runs that meet)
        nullable, first, last, meet = True, set(), set(), set()
        for op, av in items:
            empty, starts, ends, inner = item(op, av)
            meet |= inner | {(a, b) for a in last for b in starts}
            first |= starts if nullable else set()
            last = (ends | last) if empty else ends
            nullable = nullable and empty
        return nullable, first, last, meet

    def item(op, av):
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, body = av
            if len(body) == 1 and matches_space(*body[0]):
                runs.append(len(runs))
                return low == 0, {runs[-1]}, {runs[-1]}, set()
            empty, starts, ends, inner = sequence(body)
            again = {(a, b) for a in ends for b in starts} if high > 1 else set()
            return low == 0 or empty, starts, ends, inner | again
        if op is sre.SUBPATTERN:
            return sequence(av[-1])
        if op is sre.BRANCH:
            parts = [sequence(branch) for branch in av[1]]
            return (any(part[0] for part in parts), *(set().union(*(part[i] for part in parts)) for i in (1, 2, 3)))
        if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            return True, set(), set(), set()
        return False, set(), set(), set()  # one required character

    return sequence(_parser.parse(pattern))[3]


def test_the_table_ruler_pattern_keeps_its_whitespace_runs_apart():
    """What keeps the ruler check linear: the pattern that took minutes on a line of spaces ending in a letter had
    two whitespace runs around an optional pipe (and more); the ruler is now matched against the stripped line with
    a pattern where a required `|` or `--` stands between any two runs."""
    assert _whitespace_runs_that_meet(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")  # the old pattern
    assert _whitespace_runs_that_meet(extract_module._MD_TABLE_SEPARATOR.pattern) == set()


@pytest.mark.parametrize("prefix", [b"", b"--", b"| -- |"])
def test_a_line_of_200k_spaces_ending_in_a_letter_is_text_not_a_table_ruler(prefix):
    doc = extract("spaces.md", b"before\n" + prefix + b" " * 200_000 + b"x\nafter\n")
    lines = doc.sections[0].text.split("\n")
    assert lines[0] == "before" and lines[-1] == "after" and lines[1].endswith("x")
    # A real ruler still carries no words, with or without outer pipes and padding.
    ruled = extract("t.md", b"| a | b |\n  | :-- |  --: |  \n-- | --\n| 1 | 2 |\n")
    assert ruled.sections[0].text == "a b\n1 2"


def test_jsonl_records_may_hold_unicode_line_separators_inside_strings():
    """JSON allows U+2028, U+2029 and U+0085 raw in strings; str.splitlines() cut the records there."""
    data = ('{"q": "Returns\u2028within 60 days"}\r\n{"q": "Para\u2029graph\u0085next"}\n'
            '\n{"q": "Last"}').encode()
    doc = extract("faq.jsonl", data)
    assert doc.sections[0].text == "q: Returns\u2028within 60 days\nq: Para\u2029graph\u0085next\nq: Last"
    with pytest.raises(ExtractionError, match="line 2 is not valid JSON"):
        extract("bad.jsonl", b'{"q": 1}\n{"q": \n')


@pytest.mark.parametrize(("name", "data"), [
    ("notes.md", "# Ti\x00tle\nThe body\x00 text.\n".encode("utf-16")),  # UTF-16 skipped the NUL check
    ("notes.txt", "The body\x00 text.".encode("utf-16")),
    ("data.json", b'{"Ti\\ud800tle": "The body \\udfff text.", "x": "\\u0000"}'),
    ("data.jsonl", b'{"a": "The body \\ud83d text."}\n'),
])
def test_nul_and_lone_surrogates_never_reach_the_database(name, data):
    """PostgreSQL refuses NUL in text and psycopg (and the tokenizer) cannot encode a lone surrogate: the
    indexer failed with a DataError/TypeError, retried five times, long after extraction had 'succeeded'."""
    doc = extract(name, data)
    for text in [doc.title, *(s.text for s in doc.sections), *(s.heading for s in doc.sections)]:
        text.encode("utf-8")  # no lone surrogate
        assert "\x00" not in text
    assert "body" in all_text(doc)
    with pytest.raises(ExtractionError, match="no text found"):
        extract("nul.txt", "\x00\x00".encode("utf-16"))


def test_remaining_refusal_reasons_are_specific():
    with pytest.raises(ExtractionError, match=r"file is 10.5 MB; the limit for files \.xyz is 10 MB"):
        extract("huge.xyz", b"x" * int(10.5 * 1024 * 1024))
    with pytest.raises(ExtractionError, match=r"file is not valid UTF-16 text \(bad data at byte \d+\)"):
        extract("odd.txt", b"\xff\xfeA\x00\x00\xd8")  # a lone high surrogate
    with pytest.raises(ExtractionError, match=r"neither UTF-8 nor valid no-such-codec"):
        extract("x.html", b'<meta charset="no-such-codec"><p>caf\xe9</p>')
    with pytest.raises(ExtractionError, match="XML has a DOCTYPE with declarations"):
        extract("d.xml", b'<!DOCTYPE r [<!ELEMENT r (#PCDATA)>]><r>text</r>')
