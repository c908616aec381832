"""Chunking (spec §5.2): window sizes, overlap, word boundaries, limits, provenance, cleaning, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.kb.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    MIN_CHUNK_CHARS,
    chunk_document,
    chunk_settings_from_config,
    clean_text,
    document_text,
)
from apps.kb.extract import ExtractedDocument, ExtractedSection, extract


def single(text: str, page: int | None = None, heading: str = "") -> ExtractedDocument:
    return ExtractedDocument(title="t", sections=[ExtractedSection(text=text, page=page, heading=heading)])


def words(count: int, prefix: str = "word") -> str:
    return " ".join(f"{prefix}{index:04d}" for index in range(count))  # 8-character words + spaces


# --- cleaning --------------------------------------------------------------------------------------------


def test_clean_text_removes_controls_and_collapses_whitespace():
    assert clean_text("  Line one  \r\n\n\tline\u000btwo\x00\x07 three\x1fx \u0085 end\u00a0 ") == (
        "Line one line two threex end")


def test_document_text_joins_cleaned_sections_with_a_space_and_skips_empty_ones():
    doc = ExtractedDocument(title="t", sections=[ExtractedSection("a\n b", 1, ""), ExtractedSection(" \n", 2, ""),
                                                 ExtractedSection("c", 3, "")])
    assert document_text(doc) == "a b c"


# --- windows ---------------------------------------------------------------------------------------------


def test_short_text_is_one_chunk_with_cleaned_text():
    chunks = chunk_document(single("  Hello,\n\n   world of tents.  "))
    assert [(chunk.index, chunk.text, chunk.start_char, chunk.end_char) for chunk in chunks] == [
        (0, "Hello, world of tents.", 0, 22)]


def test_default_windows_are_at_most_1000_chars_and_end_on_a_word_boundary():
    text = words(500)  # 4499 characters
    chunks = chunk_document(single(text))
    cleaned = clean_text(text)
    for chunk in chunks:
        assert len(chunk.text) <= DEFAULT_CHUNK_SIZE
        assert chunk.text == cleaned[chunk.start_char:chunk.end_char]
    for chunk in chunks[:-1]:
        # moved back to the last space of the window: the chunk ends with a whole word
        assert chunk.text.split(" ")[-1].startswith("word") and len(chunk.text.split(" ")[-1]) == 8
        assert DEFAULT_CHUNK_SIZE - 100 <= len(chunk.text) <= DEFAULT_CHUNK_SIZE
    assert chunks[-1].end_char == len(cleaned)


def test_upstream_window_positions_at_defaults():
    # 8-char words: the first window [0, 1000) ends after the space at 998, so the chunk is [0, 998);
    # the next one starts 200 before the end of the first window (999 - 200).
    chunks = chunk_document(single(words(500)))
    assert (chunks[0].start_char, chunks[0].end_char) == (0, 998)
    assert chunks[1].start_char == 799
    assert chunks[1].end_char - chunks[1].start_char <= DEFAULT_CHUNK_SIZE


def test_consecutive_chunks_overlap_by_about_the_overlap():
    chunks = chunk_document(single(words(2000)), size=500, overlap=100)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        shared = previous.end_char - current.start_char
        assert 98 <= shared <= 100  # the space after the word boundary is trimmed from the chunk


def test_zero_overlap_chunks_tile_the_text():
    cleaned = clean_text(words(300))
    chunks = chunk_document(single(cleaned), size=200, overlap=0)
    assert " ".join(chunk.text for chunk in chunks) == cleaned
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert current.start_char == previous.end_char + 1


def test_a_word_longer_than_the_window_is_cut_at_the_window():
    chunks = chunk_document(single("x" * 130), size=50, overlap=10)
    assert [(chunk.start_char, chunk.end_char) for chunk in chunks] == [(0, 50), (40, 90), (80, 130)]


def test_a_tail_too_short_for_its_own_chunk_is_absorbed():
    text = "a" * 49 + " " + "tail"  # window of 50 ends after the space; only "tail" would remain
    chunks = chunk_document(single(text), size=50, overlap=0)
    assert [chunk.text for chunk in chunks] == [text]
    assert len(chunks[0].text) <= 50 + MIN_CHUNK_CHARS - 1


def test_sections_shorter_than_ten_chars_are_skipped():
    doc = ExtractedDocument(title="t", sections=[ExtractedSection("Page 2", 2, ""),
                                                 ExtractedSection("Real content on page three.", 3, "")])
    chunks = chunk_document(doc)
    assert [(chunk.text, chunk.page, chunk.start_char) for chunk in chunks] == [
        ("Real content on page three.", 3, 7)]


def test_max_chunks_truncates_and_indexes_stay_dense():
    chunks = chunk_document(single(words(5000)), size=100, overlap=20, max_chunks=7)
    assert [chunk.index for chunk in chunks] == list(range(7))
    doc = ExtractedDocument(title="t", sections=[ExtractedSection(words(200), page, "") for page in (1, 2, 3)])
    assert len(chunk_document(doc, size=100, overlap=0, max_chunks=5)) == 5


def test_default_max_is_1000_chunks():
    assert len(chunk_document(single(words(120_000)))) == 1000


# --- provenance ------------------------------------------------------------------------------------------


def test_chunks_never_cross_sections_and_carry_page_and_heading():
    doc = ExtractedDocument(title="Guide", sections=[
        ExtractedSection(words(150, "ret"), page=1, heading="Returns"),
        ExtractedSection("Short warranty note here.", page=2, heading="Warranty"),
        ExtractedSection(words(150, "shp"), page=2, heading="Shipping"),
    ])
    chunks = chunk_document(doc, size=300, overlap=50)
    full = document_text(doc)
    for chunk in chunks:
        assert full[chunk.start_char:chunk.end_char] == chunk.text
        prefixes = {word[:3] for word in chunk.text.split() if word.startswith(("ret", "shp"))}
        assert len(prefixes) <= 1
    by_heading = {chunk.heading: chunk.page for chunk in chunks}
    assert by_heading == {"Returns": 1, "Warranty": 2, "Shipping": 2}
    warranty = next(chunk for chunk in chunks if chunk.heading == "Warranty")
    assert warranty.text == "Short warranty note here."
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))


# --- arguments and settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "overlap", "max_chunks", "message"), [
    (49, 0, 10, "chunk size must be at least 50"),
    (100, 100, 10, "overlap must be at least 0 and below the chunk size"),
    (100, -1, 10, "overlap must be at least 0"),
    (100, 10, 0, "max_chunks must be at least 1"),
])
def test_invalid_arguments_are_refused(size, overlap, max_chunks, message):
    with pytest.raises(ValueError, match=message):
        chunk_document(single("some text here"), size=size, overlap=overlap, max_chunks=max_chunks)


def test_overlap_close_to_size_still_advances():
    chunks = chunk_document(single(words(100)), size=60, overlap=59)
    starts = [chunk.start_char for chunk in chunks]
    assert starts == sorted(set(starts))
    assert chunks[-1].end_char == len(clean_text(words(100)))


@pytest.mark.parametrize(("values", "expected"), [
    ({}, (DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP)),
    ({"rag-chunk-size": "1500", "rag-chunk-overlap": "300"}, (1500, 300)),
    ({"rag-chunk-size": " 800 "}, (800, 200)),
    ({"rag-chunk-size": "lots", "rag-chunk-overlap": "none"}, (1000, 200)),
    ({"rag-chunk-size": "10"}, (200, 100)),
    ({"rag-chunk-size": "100000", "rag-chunk-overlap": "9000"}, (4000, 2000)),
    ({"rag-chunk-overlap": "-5"}, (1000, 0)),
    ({"RAG Chunk Size": "600"}, (600, 200)),
])
def test_chunk_settings_from_config(values, expected):
    assert chunk_settings_from_config(values) == expected


# --- properties ------------------------------------------------------------------------------------------

_sections = st.lists(
    st.builds(ExtractedSection, text=st.text(alphabet=st.characters(codec="utf-8"), max_size=600)
              | st.text(alphabet="ab \n\t\x00", max_size=600),
              page=st.none() | st.integers(1, 50), heading=st.text(max_size=20)),
    min_size=1, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sections=_sections, size=st.integers(50, 400), overlap_fraction=st.floats(0, 0.99),
       max_chunks=st.integers(1, 60))
def test_chunking_never_raises_and_covers_the_text(sections, size, overlap_fraction, max_chunks):
    overlap = int(size * overlap_fraction)
    doc = ExtractedDocument(title="t", sections=sections)
    chunks = chunk_document(doc, size=size, overlap=overlap, max_chunks=max_chunks)
    full = document_text(doc)
    assert len(chunks) <= max_chunks
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    covered = [False] * len(full)
    for chunk in chunks:
        assert full[chunk.start_char:chunk.end_char] == chunk.text
        assert len(chunk.text.strip()) >= MIN_CHUNK_CHARS and chunk.text == chunk.text.strip()
        assert len(chunk.text) <= size + MIN_CHUNK_CHARS - 1
        for position in range(chunk.start_char, chunk.end_char):
            covered[position] = True
    if len(chunks) == max_chunks:
        return  # truncated on purpose: coverage is only promised up to max_chunks
    offset = 0
    for section in sections:
        cleaned = clean_text(section.text)
        if not cleaned:
            continue
        if len(cleaned) >= MIN_CHUNK_CHARS:
            missing = [i for i in range(offset, offset + len(cleaned)) if not covered[i] and full[i] != " "]
            assert not missing, (cleaned, missing)
        offset += len(cleaned) + 1


# --- the retrieval evaluation set ------------------------------------------------------------------------

EVALSET = Path(__file__).parent / "evalset"


def test_evalset_is_well_formed():
    documents = sorted(path for path in (EVALSET / "docs").iterdir() if path.suffix in (".md", ".txt"))
    questions = json.loads((EVALSET / "questions.json").read_text(encoding="utf-8"))
    assert len(documents) >= 10
    assert len(questions) >= 40
    assert len({item["question"] for item in questions}) == len(questions)
    texts: dict[str, str] = {}
    chunks: dict[str, list[str]] = {}
    for path in documents:
        assert 300 <= len(path.read_text(encoding="utf-8").split()) <= 1500, path.name
        extracted = extract(path.name, path.read_bytes())
        texts[path.name] = document_text(extracted)
        chunks[path.name] = [chunk.text for chunk in chunk_document(extracted)]
    for item in questions:
        assert set(item) == {"question", "document", "answer_contains"}, item
        assert item["document"] in texts, item
        answer = item["answer_contains"]
        assert answer in texts[item["document"]], item
        assert any(answer in chunk for chunk in chunks[item["document"]]), item
        others = [name for name, text in texts.items() if name != item["document"] and answer.lower() in text.lower()]
        assert not others, (item, others)
    assert {item["document"] for item in questions} == set(texts)  # every document is asked about
