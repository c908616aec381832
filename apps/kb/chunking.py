"""Splitting an extracted document into overlapping chunks for embedding and citation (spec §5.2).

The window is upstream's: text cleaned (control characters removed, all whitespace collapsed to single
spaces), a sliding window of `size` characters whose end moves back to just after the last space in its
final 100 characters, the next window starting `overlap` characters before the previous end, pieces under
10 characters skipped, at most 1000 chunks per document.

Failure modes it prevents:

* A chunk that cannot be cited: chunks never cross a section (a PDF page, a heading), so each one carries
  exactly one page number and heading, and `start_char`/`end_char` locate its text in
  `document_text(doc)`, the cleaned text of the whole document (`text == document_text(doc)[start:end]`).
* A loop that never ends or walks backwards: upstream's window can step back to or before its own start
  when `size - 100 <= overlap`; here every step advances, and arguments that make no sense are refused
  with a ValueError instead of producing thousands of near-identical chunks.
* Text silently dropped: a tail too short to stand as its own chunk (under 10 characters) is absorbed
  into the chunk before it instead of being skipped, so every section of 10 or more characters is covered
  up to `max_chunks`. Only whole sections under 10 characters are skipped, as upstream skips such pieces.
* A bad `rag-chunk-size` in config.csv breaking indexing: config values are parsed leniently and clamped
  to bounds that keep chunks embeddable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from apps.bots.config_csv import config_lookup
from apps.kb.extract import ExtractedDocument

logger = logging.getLogger(__name__)

# Upstream defaults (§5.2): 1000-character windows overlapping by 200, at most 1000 chunks per document.
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 200
DEFAULT_MAX_CHUNKS = 1000
# Upstream looks for a word boundary only in the last 100 characters, so a chunk keeps >= 90% of its window.
WORD_BOUNDARY_WINDOW = 100
# Upstream skips pieces whose trimmed text is shorter than this: too little to embed or to answer from.
MIN_CHUNK_CHARS = 10
# Below this a window holds a sentence fragment at best; also keeps the word-boundary search meaningful.
MIN_CHUNK_SIZE = 50

# Bounds for the `rag-chunk-size` / `rag-chunk-overlap` settings of config.csv.
# Smaller chunks carry too little context to answer from and multiply the number of vectors.
CONFIG_CHUNK_SIZE_MIN = 200
# About 1000 tokens: embedding models truncate their input (upstream cuts at ~600 tokens), and a few large
# chunks would fill the 4000-token context budget of a chat turn (§5.7).
CONFIG_CHUNK_SIZE_MAX = 4000
# An overlap above half the window embeds most of the text twice for no retrieval gain.
CONFIG_OVERLAP_MAX_FRACTION = 0.5

CHUNK_SIZE_KEY = "rag-chunk-size"
CHUNK_OVERLAP_KEY = "rag-chunk-overlap"

# Control characters (Unicode category Cc) that upstream removes; the whitespace ones among them (tab,
# line breaks, NEL) become spaces instead. Python counts U+001C-U+001F as whitespace, Rust does not: they
# are removed, as upstream does.
_WHITESPACE_CONTROLS = frozenset("\t\n\x0b\x0c\r\x85")
_CONTROL_TO_NONE = {
    code: None for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(code) not in _WHITESPACE_CONTROLS
}


@dataclass(frozen=True)
class TextChunk:
    """One chunk: `text` is `document_text(doc)[start_char:end_char]`; `page`/`heading` are its section's."""

    index: int
    text: str
    start_char: int
    end_char: int
    page: int | None
    heading: str


def clean_text(text: str) -> str:
    """Upstream's cleaning: control characters removed, all whitespace runs collapsed to one space, trimmed."""
    return " ".join(text.translate(_CONTROL_TO_NONE).split())


def document_text(doc: ExtractedDocument) -> str:
    """The cleaned text of the whole document that chunk offsets refer to: cleaned sections joined by a space."""
    return " ".join(cleaned for cleaned in (clean_text(section.text) for section in doc.sections) if cleaned)


def _validate(size: int, overlap: int, max_chunks: int) -> None:
    if size < MIN_CHUNK_SIZE:
        raise ValueError(f"chunk size must be at least {MIN_CHUNK_SIZE} characters, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be at least 0 and below the chunk size ({size}), got {overlap}")
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")


def _section_windows(text: str, size: int, overlap: int, limit: int) -> list[tuple[int, int]]:
    """(start, end) of the first `limit` kept pieces of one cleaned section, trimmed of surrounding spaces."""
    length = len(text)
    # For small sizes the boundary search is capped at half the window so that a chunk never shrinks to a
    # fragment; at the default size this is upstream's 100 characters.
    boundary_window = min(WORD_BOUNDARY_WINDOW, size // 2)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < length and len(windows) < limit:
        end = min(start + size, length)
        chunk_end = end
        if end < length:
            space = text.rfind(" ", max(start, end - boundary_window), end)
            if space != -1:
                chunk_end = space + 1
            if length - chunk_end <= MIN_CHUNK_CHARS and len(text[chunk_end:].strip()) < MIN_CHUNK_CHARS:
                chunk_end = length  # absorb a tail too short to be a chunk of its own
        piece = text[start:chunk_end]
        stripped = piece.strip()
        if len(stripped) >= MIN_CHUNK_CHARS:
            piece_start = start + len(piece) - len(piece.lstrip())
            windows.append((piece_start, piece_start + len(stripped)))
        if chunk_end >= length:
            break
        next_start = chunk_end - overlap
        # Upstream steps back by the overlap; when that would not move forward, continue from the end.
        start = next_start if next_start > start else chunk_end
    return windows


def chunk_document(doc: ExtractedDocument, *, size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP,
                   max_chunks: int = DEFAULT_MAX_CHUNKS) -> list[TextChunk]:
    """Chunks of `doc`, section by section, numbered from 0; at most `max_chunks` (the rest is dropped).

    A chunk's text is at most `size + MIN_CHUNK_CHARS - 1` characters (a short tail is absorbed); offsets are
    into `document_text(doc)`. Raises ValueError for sizes below MIN_CHUNK_SIZE or an overlap outside
    [0, size).
    """
    _validate(size, overlap, max_chunks)
    chunks: list[TextChunk] = []
    offset = 0
    for section in doc.sections:
        cleaned = clean_text(section.text)
        if not cleaned:
            continue
        if len(chunks) >= max_chunks:
            break
        for start, end in _section_windows(cleaned, size, overlap, max_chunks - len(chunks)):
            chunks.append(TextChunk(index=len(chunks), text=cleaned[start:end], start_char=offset + start,
                                    end_char=offset + end, page=section.page, heading=section.heading))
        offset += len(cleaned) + 1  # the space that joins sections in document_text
    return chunks


def _config_int(values: Mapping[str, str], key: str, default: int) -> int:
    raw = config_lookup(values, key)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        logger.warning("config %s=%r is not a whole number; using %d", key, raw, default)
        return default


def chunk_settings_from_config(values: Mapping[str, str]) -> tuple[int, int]:
    """(size, overlap) from a bot's config: `rag-chunk-size` / `rag-chunk-overlap`, upstream defaults 1000/200.

    Unparsable values fall back to the default; out-of-range values are clamped (size to
    [CONFIG_CHUNK_SIZE_MIN, CONFIG_CHUNK_SIZE_MAX], overlap to [0, half the size]), each with a warning.
    """
    size = _config_int(values, CHUNK_SIZE_KEY, DEFAULT_CHUNK_SIZE)
    clamped_size = min(max(size, CONFIG_CHUNK_SIZE_MIN), CONFIG_CHUNK_SIZE_MAX)
    if clamped_size != size:
        logger.warning("config %s=%d is outside [%d, %d]; using %d", CHUNK_SIZE_KEY, size,
                       CONFIG_CHUNK_SIZE_MIN, CONFIG_CHUNK_SIZE_MAX, clamped_size)
    overlap_default = min(DEFAULT_CHUNK_OVERLAP, int(clamped_size * CONFIG_OVERLAP_MAX_FRACTION))
    overlap = _config_int(values, CHUNK_OVERLAP_KEY, overlap_default)
    overlap_max = int(clamped_size * CONFIG_OVERLAP_MAX_FRACTION)
    clamped_overlap = min(max(overlap, 0), overlap_max)
    if clamped_overlap != overlap:
        logger.warning("config %s=%d is outside [0, %d]; using %d", CHUNK_OVERLAP_KEY, overlap, overlap_max,
                       clamped_overlap)
    return clamped_size, clamped_overlap
