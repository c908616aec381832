"""Malformed input raises ExtractionError with a reason, never another exception: the indexer fails the document
for ExtractionError (and ValueError) and retries anything else as transient, so an XML file declaring an unknown
encoding was retried five times and ended as "indexing failed (LookupError)"."""

from __future__ import annotations

import io
import zipfile

import pytest
from django_tenants.utils import schema_context

from apps.kb.extract import ExtractionError, extract

NOT_SUPPORTED = "that is not supported (no such text encoding); save the file as UTF-8"
MULTI_BYTE = "that is not supported (only UTF-8, UTF-16 and single-byte encodings are read); save the file as UTF-8"


def _refusal(name: str, data: bytes) -> str:
    with pytest.raises(ExtractionError) as refused:
        extract(name, data)
    return str(refused.value)


# --- XML: the encoding its declaration names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        # No codec of that name (LookupError from the codec lookup).
        ("notes.xml", b'<?xml version="1.0" encoding="bogus"?><a>hi</a>', f"('bogus') {NOT_SUPPORTED}"),
        ("logo.svg", b"\xef\xbb\xbf<?xml version='1.0' encoding='bogus' standalone='yes'?><svg><text>hi</text></svg>",
         f"('bogus') {NOT_SUPPORTED}"),
        # A codec that is not a text encoding (LookupError too).
        ("notes.xml", b'<?xml version="1.0" encoding="base64"?><a>hi</a>', f"('base64') {NOT_SUPPORTED}"),
        # Codecs expat cannot take (ValueError: multi-byte; UnicodeError from the idna codec).
        ("notes.xml", '<?xml version="1.0" encoding="shift_jis"?><a>日本</a>'.encode("shift_jis"),
         f"('shift_jis') {MULTI_BYTE}"),
        ("notes.xml", b'<?xml version="1.0" encoding="utf-32"?><a>hi</a>', f"('utf-32') {MULTI_BYTE}"),
        ("notes.xml", b'<?xml version="1.0" encoding="idna"?><a>hi</a>', f"('idna') {MULTI_BYTE}"),
    ],
)
def test_xml_declaring_an_encoding_that_cannot_be_read_is_refused_with_its_name(name, data, reason):
    assert _refusal(name, data) == f"XML declares an encoding {reason}"


def test_xml_in_a_declared_single_byte_encoding_is_still_read():
    document = extract("notes.xml", b'<?xml version="1.0" encoding="cp1252"?><a>caf\xe9</a>')
    assert document.sections[0].text == "café"


@pytest.fixture
def bot(canary_tenants, local_storage):
    from apps.bots.models import Bot

    with schema_context(canary_tenants.a.schema_name):
        yield Bot.objects.create(name="shop")


@pytest.mark.django_db
def test_the_indexer_fails_such_xml_at_once_with_the_reason_instead_of_retrying(bot):
    from apps.drive.storage import tenant_drive
    from apps.kb.models import Document
    from apps.kb.services import document_register
    from apps.kb.tasks import document_index_task

    path = "shop.gbai/shop.gbkb/faq/notes.xml"
    data = b'<?xml version="1.0" encoding="bogus"?><a>Harbor tents are waterproof.</a>'
    document = document_register(bot=bot, kb_name="faq", path=path, etag=tenant_drive().write(path, data),
                                 size=len(data))
    result = document_index_task.apply(args=[document.pk, document.etag])
    assert result.state == "SUCCESS" and result.result == "failed"  # returned, not raised and retried
    document = Document.objects.get(pk=document.pk)
    assert document.status == "failed" and document.index_attempts == 1
    assert document.error == f"XML declares an encoding ('bogus') {NOT_SUPPORTED}"


# --- HTML: declarations html.parser cannot parse (AssertionError) ------------------------------------------


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"<p>Tents</p><![bogus[ x ]]>", "unknown status keyword 'bogus' in marked section"),
        (b"<p>Tents</p><![<p>more", "expected name token at '<![<p>more'"),
    ],
)
def test_html_with_a_marked_section_the_parser_cannot_read_is_refused(data, detail):
    assert _refusal("page.html", data) == f"HTML has a malformed markup declaration that cannot be read ({detail})"


def test_html_with_the_conditional_sections_word_writes_is_still_read():
    document = extract("page.html", b"<p>Tents<![if !supportLists]> and boots<![endif]></p>")
    assert document.sections[0].text == "Tents and boots"


# --- JSON: a number past Python's integer digit limit (ValueError) ------------------------------------------


def test_json_with_a_number_longer_than_the_digit_limit_is_refused():
    import sys

    limit = sys.get_int_max_str_digits()
    assert (_refusal("data.json", b'{"id": ' + b"7" * (limit + 1) + b"}")
            == f"JSON has a number of more than {limit} digits; store it as a string")
    assert (_refusal("data.jsonl", b'{"a": "ok"}\n[' + b"7" * (limit + 1) + b"]")
            == f"JSON line 2 has a number of more than {limit} digits; store it as a string")


# --- DOCX: zip archives zipfile opens with something else than BadZipFile ----------------------------------


def _zip(names: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in names.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_docx_whose_zip_marks_a_name_utf8_that_is_not_is_refused():
    # "café.xml" is stored with the UTF-8 flag; its bytes are then made invalid UTF-8 (UnicodeDecodeError).
    data = _zip({"word/document.xml": "<x/>", "caf\u00e9.xml": "<x/>"}).replace("café".encode(), b"caf\xff\xfe")
    assert _refusal("report.docx", data) == ("not a valid DOCX file (a name in its zip archive is marked UTF-8 but "
                                            "is not valid UTF-8)")


def test_docx_whose_zip_needs_a_newer_zip_version_is_refused():
    data = bytearray(_zip({"word/document.xml": "<x/>"}))
    central = data.find(b"PK\x01\x02")
    data[central + 6] = 255  # "version needed to extract": 25.5 (NotImplementedError)
    assert _refusal("report.docx", bytes(data)) == ("not a valid DOCX file (its zip archive needs a feature that is "
                                                   "not supported: zip file version 25.5)")
