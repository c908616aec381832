"""Behaviour of typed HEAR validation (apps/basic/hear_types.py).

Each kind has accepted inputs with their normalised value and rejected inputs with the
re-ask message; aliases resolve to the same behaviour; hypothesis checks that no text makes
hear_validate raise for any kind.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.basic.builtins import FixedContext
from apps.basic.hear_types import (
    HEAR_KINDS,
    LOGIN_UNAVAILABLE,
    SECRET_HEAR_KINDS,
    HearResult,
    hear_kind_canonical,
    hear_validate,
)
from tests.basic.conftest import run

# Friday 15 March 2024, 23:30 in São Paulo is already the 16th in UTC: relative dates must
# follow the context zone.
NOW = dt.datetime(2024, 3, 15, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
CTX = FixedContext(NOW)


def check(kind: str, text: str, options: list | None = None) -> HearResult:
    return hear_validate(kind, text, ctx=CTX, options=options)


# (kind, user text, normalised value)
ACCEPTED: list[tuple[str, str, object]] = [
    ("STRING", "  hello there ", "hello there"),
    ("STRING", "", ""),
    ("TEXT", " Olá\n", "Olá"),
    ("ANY", "42", "42"),
    ("EMAIL", "  John.Doe+tag@Example.COM ", "john.doe+tag@example.com"),
    ("EMAIL", "a@b.co", "a@b.co"),
    ("NAME", "john   doe", "John Doe"),
    ("NAME", "joão d'ávila-souza", "João D'ávila-souza"),
    ("NAME", "Zé", "Zé"),
    ("INTEGER", " 42 ", 42),
    ("INTEGER", "-7", -7),
    ("INT", "1.234.567", 1234567),
    ("NUMBER", "1,234", 1234),
    ("FLOAT", "3,14", 3.14),
    ("DECIMAL", "-2.5", -2.5),
    ("DOUBLE", "1.234,5", 1234.5),
    ("FLOAT", "10", 10.0),
    ("BOOLEAN", "Yes", True),
    ("BOOLEAN", "sim!", True),
    ("BOOL", "NÃO", False),
    ("BOOLEAN", "nope", False),
    ("BOOLEAN", "1", True),
    ("DATE", "25/12/2024", "2024-12-25"),
    ("DATE", "2024-12-25", "2024-12-25"),
    ("DATE", "2024/12/25", "2024-12-25"),
    ("DATE", "25-12-2024", "2024-12-25"),
    ("DATE", "25.12.2024", "2024-12-25"),
    ("DATE", "12/25/2024", "2024-12-25"),
    ("DATE", "01/02/2024", "2024-02-01"),
    ("DATE", "5 Mar 2024", "2024-03-05"),
    ("DATE", "5 March 2024", "2024-03-05"),
    ("DATE", "Today", "2024-03-15"),
    ("DATE", "hoje", "2024-03-15"),
    ("DATE", "amanhã", "2024-03-16"),
    ("DATE", "tomorrow", "2024-03-16"),
    ("DATE", "ontem", "2024-03-14"),
    ("HOUR", "14:30", "14:30"),
    ("HOUR", "9:05", "09:05"),
    ("TIME", "2:30 PM", "14:30"),
    ("HOUR", "12:00 am", "00:00"),
    ("HOUR", "12:15 p.m.", "12:15"),
    ("HOUR", "7 pm", "19:00"),
    ("HOUR", "14h30", "14:30"),
    ("MONEY", "R$ 1.234,56", 1234.56),
    ("MONEY", "$1,234.56", 1234.56),
    ("CURRENCY", "€ 10", 10.0),
    ("AMOUNT", "99,9", 99.9),
    ("MONEY", "0", 0.0),
    # One separator followed by exactly three digits groups thousands (was read as 1.23, 1.23, 1.5).
    ("MONEY", "$1,234", 1234.0),
    ("MONEY", "R$ 1.234", 1234.0),
    ("MONEY", "€1.500", 1500.0),
    ("MONEY", "12.345", 12345.0),
    ("MONEY", "1,234.56", 1234.56),
    ("MONEY", "1.234,56", 1234.56),
    ("MONEY", "1.234.567,8", 1234567.8),
    ("MONEY", "12,50", 12.5),
    ("MONEY", "1.5", 1.5),
    ("MONEY", "1234,567", 1234.57),  # four digits before: not a thousands group
    ("MONEY", "0.125", 0.13),  # half-up on the decimal text; float round() gives 0.12
    ("MONEY", "2.67", 2.67),
    ("MONEY", "1" * 40, float("1" * 40)),
    ("MOBILE", "+55 (11) 98765-4321", "5511987654321"),
    ("PHONE", "(11) 98765-4321", "11987654321"),
    ("TELEPHONE", "+44 20 7946 0958", "442079460958"),
    ("ZIPCODE", "01310-100", "01310-100"),
    ("CEP", "01310100", "01310-100"),
    ("ZIP", "90210", "90210"),
    ("ZIPCODE", "90210-1234", "90210-1234"),
    ("POSTALCODE", "sw1a1aa", "SW1A 1AA"),
    ("ZIPCODE", "EC1A 1BB", "EC1A 1BB"),
    ("LANGUAGE", "pt", "pt"),
    ("LANGUAGE", "Português", "pt"),
    ("LANG", "english", "en"),
    ("LANGUAGE", "Espanhol", "es"),
    ("LANGUAGE", "pt-BR", "pt"),
    ("LANGUAGE", "sv", "sv"),
    ("CPF", "529.982.247-25", "529.982.247-25"),
    ("CPF", "52998224725", "529.982.247-25"),
    ("CNPJ", "11.222.333/0001-81", "11.222.333/0001-81"),
    ("CNPJ", "11222333000181", "11.222.333/0001-81"),
    ("URL", "https://example.com/a?b=1", "https://example.com/a?b=1"),
    ("LINK", "example.com.br/page", "https://example.com.br/page"),
    ("URL", "HTTP://Example.com:8080/", "HTTP://Example.com:8080/"),
    ("UUID", "123E4567-E89B-12D3-A456-426614174000", "123e4567-e89b-12d3-a456-426614174000"),
    ("GUID", "{123e4567-e89b-12d3-a456-426614174000}", "123e4567-e89b-12d3-a456-426614174000"),
    ("COLOR", "Red", "#FF0000"),
    ("COLOUR", "#0f8", "#00FF88"),
    ("COLOR", "a1b2c3", "#A1B2C3"),
    ("COLOR", "rgb(255, 128, 0)", "#FF8000"),
    ("CREDITCARD", "4111 1111 1111 1111", "4111 **** **** 1111"),
    ("CARD", "5555-5555-5555-4444", "5555 **** **** 4444"),
    ("PASSWORD", "correct horse", "correct horse"),
    ("PASS", " spaced pw ", " spaced pw "),
    ("SECRET", "12345678", "12345678"),
    ("IMAGE", "https://cdn.example.com/u/photo.JPG", "https://cdn.example.com/u/photo.JPG"),
    ("PHOTO", "https://media.example.com/abc123", "https://media.example.com/abc123"),
    ("PICTURE", "https://x.example.com/p.webp?sig=1", "https://x.example.com/p.webp?sig=1"),
    ("QRCODE", "https://x.example.com/qr.png", "https://x.example.com/qr.png"),
    ("QR", "https://x.example.com/media/77", "https://x.example.com/media/77"),
    ("AUDIO", "https://x.example.com/voice.ogg", "https://x.example.com/voice.ogg"),
    ("VOICE", "https://x.example.com/v.opus", "https://x.example.com/v.opus"),
    ("SOUND", "https://x.example.com/s.mp3", "https://x.example.com/s.mp3"),
    ("VIDEO", "https://x.example.com/clip.mp4", "https://x.example.com/clip.mp4"),
    ("FILE", "https://x.example.com/anything.bin", "https://x.example.com/anything.bin"),
    ("DOCUMENT", "https://x.example.com/contract.pdf", "https://x.example.com/contract.pdf"),
    ("DOC", "https://x.example.com/report.docx", "https://x.example.com/report.docx"),
    ("PDF", "https://x.example.com/files/9", "https://x.example.com/files/9"),
]


@pytest.mark.parametrize(("kind", "text", "expected"), ACCEPTED, ids=[f"{a[0]}:{a[1]!r}" for a in ACCEPTED])
def test_hear_accepts_and_normalises(kind, text, expected) -> None:
    result = check(kind, text)
    assert result == HearResult(True, expected, "")
    assert type(result.value) is type(expected)


# (kind, user text, expected re-ask message)
REJECTED: list[tuple[str, str, str]] = [
    ("EMAIL", "john@", "Please enter a valid email address (e.g., user@example.com)"),
    ("EMAIL", "john@localhost", "Please enter a valid email address (e.g., user@example.com)"),
    ("EMAIL", "a..b@example.com", "Please enter a valid email address (e.g., user@example.com)"),
    ("EMAIL", "", "Please enter a valid email address (e.g., user@example.com)"),
    ("NAME", "J", "Name must be at least 2 characters"),
    ("NAME", "x" * 101, "Name is too long (maximum 100 characters)"),
    ("NAME", "R2D2", "Please enter a valid name (letters and spaces only)"),
    ("INTEGER", "1.5", "Please enter a valid whole number"),
    ("INTEGER", "twelve", "Please enter a valid whole number"),
    ("INTEGER", "9" * 20, "Please enter a valid whole number"),
    ("FLOAT", "abc", "Please enter a valid number"),
    ("FLOAT", "nan", "Please enter a valid number"),
    ("FLOAT", "1e999", "Please enter a valid number"),
    ("BOOLEAN", "maybe", "Please answer yes or no"),
    ("DATE", "31/02/2024", "Please enter a valid date (e.g., 25/12/2024 or 2024-12-25)"),
    ("DATE", "next week", "Please enter a valid date (e.g., 25/12/2024 or 2024-12-25)"),
    ("HOUR", "25:00", "Please enter a valid time (e.g., 14:30 or 2:30 PM)"),
    ("HOUR", "13:00 PM", "Please enter a valid time (e.g., 14:30 or 2:30 PM)"),
    ("MONEY", "-5", "Please enter a valid amount (e.g., 100.00 or R$ 100,00)"),
    ("MONEY", "ten bucks", "Please enter a valid amount (e.g., 100.00 or R$ 100,00)"),
    ("MOBILE", "12345", "Please enter a valid mobile number with area code (e.g., +55 11 98765-4321)"),
    ("MOBILE", "call 11987654321", "Please enter a valid mobile number with area code (e.g., +55 11 98765-4321)"),
    ("MOBILE", "1" * 16, "Please enter a valid mobile number with area code (e.g., +55 11 98765-4321)"),
    ("ZIPCODE", "1234", "Please enter a valid ZIP/postal code"),
    ("ZIPCODE", "ABCDE", "Please enter a valid ZIP/postal code"),
    ("LANGUAGE", "klingon", "Please enter a valid language code (e.g., en, pt, es)"),
    ("CPF", "123.456.789-00", "That CPF is not valid, please check the digits (e.g., 123.456.789-09)"),
    ("CPF", "111.111.111-11", "That CPF is not valid, please check the digits (e.g., 123.456.789-09)"),
    ("CPF", "1234", "Please enter a valid CPF (11 digits, e.g., 123.456.789-09)"),
    ("CNPJ", "11.222.333/0001-82", "That CNPJ is not valid, please check the digits (e.g., 12.345.678/0001-95)"),
    ("CNPJ", "00000000000000", "That CNPJ is not valid, please check the digits (e.g., 12.345.678/0001-95)"),
    ("CNPJ", "11.222.333", "Please enter a valid CNPJ (14 digits, e.g., 12.345.678/0001-95)"),
    ("URL", "not a url", "Please enter a valid URL (e.g., https://example.com)"),
    ("URL", "ftp://example.com", "Please enter a valid URL (e.g., https://example.com)"),
    ("URL", "https://example.com:99999/", "Please enter a valid URL (e.g., https://example.com)"),
    ("UUID", "123e4567", "Please enter a valid UUID"),
    ("COLOR", "rgb(300, 0, 0)", "Please enter a valid color (e.g., #FF0000 or red)"),
    ("COLOR", "blurple", "Please enter a valid color (e.g., #FF0000 or red)"),
    ("CREDITCARD", "4111 1111 1111 1112", "That card number is not valid, please check the digits"),
    ("CREDITCARD", "4111", "Please enter a valid credit card number"),
    ("PASSWORD", "short", "Password must be at least 8 characters"),
    ("IMAGE", "here is my photo", "Please send an image"),
    ("IMAGE", "https://x.example.com/doc.pdf", "Please send an image"),
    ("QRCODE", "ABC-123", "Please send an image containing a QR code"),
    ("AUDIO", "https://x.example.com/a.png", "Please send an audio file or voice message"),
    ("VIDEO", "", "Please send a video"),
    ("FILE", "file.txt", "Please upload a file"),
    ("DOCUMENT", "https://x.example.com/a.exe", "Please send a document (PDF, Word, etc.)"),
    ("LOGIN", "done", LOGIN_UNAVAILABLE),
    ("LOGIN", '{"name": "no id"}', LOGIN_UNAVAILABLE),
    ("LOGIN", "[" * 900, LOGIN_UNAVAILABLE),
    # A typed identity proves nothing: accepting it made anyone any user.
    ("LOGIN", '{"id": "u1", "email": "a@b.co"}', LOGIN_UNAVAILABLE),
    ("AUTH", '{"email": "admin@example.com"}', LOGIN_UNAVAILABLE),
]


@pytest.mark.parametrize(("kind", "text", "message"), REJECTED, ids=[f"{r[0]}:{r[1]!r}"[:50] for r in REJECTED])
def test_hear_rejects_with_a_specific_message(kind, text, message) -> None:
    assert check(kind, text) == HearResult(False, None, message)


def test_every_kind_and_alias_has_accepted_and_rejected_cases() -> None:
    accepted = {case[0] for case in ACCEPTED} | {"MENU", "LOGIN", "AUTH"}  # LOGIN accepts no typed answer
    assert sorted(HEAR_KINDS - accepted) == []
    rejected = {hear_kind_canonical(case[0]) for case in REJECTED} | {"STRING", "MENU"}
    assert sorted({hear_kind_canonical(kind) for kind in HEAR_KINDS} - rejected) == []


def test_kinds_include_every_spec_type_and_menu() -> None:
    spec_kinds = {
        "STRING", "EMAIL", "NAME", "INTEGER", "INT", "NUMBER", "FLOAT", "DECIMAL", "DOUBLE", "BOOLEAN", "BOOL",
        "DATE", "HOUR", "TIME", "MONEY", "CURRENCY", "AMOUNT", "MOBILE", "PHONE", "TELEPHONE", "ZIPCODE", "ZIP",
        "CEP", "POSTALCODE", "LANGUAGE", "LANG", "CPF", "CNPJ", "URL", "LINK", "UUID", "GUID", "COLOR", "COLOUR",
        "CREDITCARD", "CARD", "PASSWORD", "PASS", "SECRET", "IMAGE", "PHOTO", "PICTURE", "QRCODE", "QR", "AUDIO",
        "VOICE", "SOUND", "VIDEO", "FILE", "DOCUMENT", "DOC", "PDF", "LOGIN", "AUTH", "MENU",
    }
    assert spec_kinds <= HEAR_KINDS
    assert all(kind == kind.upper() for kind in HEAR_KINDS)


def test_aliases_resolve_to_their_canonical_kind_case_insensitively() -> None:
    assert hear_kind_canonical("phone") == "MOBILE"
    assert hear_kind_canonical(" Cep ") == "ZIPCODE"
    assert hear_kind_canonical("TEXT") == "STRING"
    assert check("email", "A@B.CO").value == "a@b.co"


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown HEAR kind 'FAVOURITE'"):
        check("FAVOURITE", "blue")


def test_password_and_card_answers_are_marked_secret() -> None:
    assert {"PASSWORD", "PASS", "SECRET", "CREDITCARD", "CARD"} <= SECRET_HEAR_KINDS
    assert "EMAIL" not in SECRET_HEAR_KINDS


def test_typed_answers_longer_than_any_real_value_are_rejected_quickly() -> None:
    assert not check("EMAIL", "a" * 5000 + "@example.com").ok
    assert not check("DATE", "1" * 5000).ok
    assert check("STRING", "x" * 5000).value == "x" * 5000


# --- MENU -----------------------------------------------------------------------------

OPTIONS = ["Sales", "Support", "Billing questions"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sales", "Sales"),
        ("  support ", "Support"),
        ("2", "Support"),
        ("3.", "Billing questions"),
        ("1)", "Sales"),
        ("bill", "Billing questions"),
        ("SUPP", "Support"),
        ("questions", "Billing questions"),
    ],
)
def test_menu_matches_text_number_prefix_or_unique_substring(text, expected) -> None:
    assert check("MENU", text, OPTIONS) == HearResult(True, expected, "")


@pytest.mark.parametrize("text", ["S", "4", "0", "", "refund", "-1"])
def test_menu_rejects_ambiguous_or_unknown_choices_listing_the_options(text) -> None:
    assert check("MENU", text, OPTIONS) == HearResult(
        False, None, "Please select one of: Sales, Support, Billing questions"
    )


def test_menu_exact_option_text_wins_over_its_number() -> None:
    assert check("MENU", "2", ["10", "2", "1"]).value == "2"
    assert check("MENU", "3", ["10", "2", "1"]).value == "1"


def test_menu_returns_the_option_value_as_given() -> None:
    assert check("MENU", "2", [10, 20]).value == 20
    assert check("MENU", "20", [10, 20]).value == 20


def test_menu_without_options_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs at least one option"):
        check("MENU", "1", [])
    with pytest.raises(ValueError, match="needs at least one option"):
        check("MENU", "1", None)


# --- contract properties ----------------------------------------------------------------

_interesting = st.sampled_from(
    ["", " ", "0", "1", "-1", "yes", "não", "25/12/2024", "2:30 PM", "R$ 1.234,56", "1,2,3", "..", "@", "a@b",
     "https://", "https://x.y/z.png", "{", '{"id": 1}', "rgb(1,2,3)", "#fff", "[[[[", "1e999", "nan", "١٢٣",
     "9" * 40, "9" * 400]
)
_texts = st.text(max_size=60) | _interesting | st.builds(lambda a, b: a + b, _interesting, st.text(max_size=10))


@pytest.mark.parametrize("kind", sorted(HEAR_KINDS))
@settings(max_examples=25, deadline=None)
@given(text=_texts, options=st.lists(st.text(max_size=8) | st.integers(), min_size=1, max_size=4))
def test_hear_validate_never_raises_and_results_are_consistent(kind, text, options) -> None:
    result = hear_validate(kind, text, ctx=CTX, options=options)
    assert isinstance(result, HearResult)
    if result.ok:
        assert result.error == ""
        assert result.value is not None
    else:
        assert result.value is None
        assert result.error


@settings(max_examples=100, deadline=None)
@given(text=_texts)
def test_accepted_values_are_stable_when_validated_again(text) -> None:
    # Normalised values are themselves valid answers of the same kind (idempotence).
    for kind in ("EMAIL", "NAME", "INTEGER", "DATE", "HOUR", "MOBILE", "ZIPCODE", "CPF", "CNPJ", "COLOR", "UUID"):
        first = check(kind, text)
        if first.ok:
            assert check(kind, str(first.value)).value == first.value


def test_hear_as_login_never_takes_a_typed_identity_in_a_dialog() -> None:
    r = run('HEAR u AS LOGIN\nIF u THEN\nTALK "welcome " & u.id\nELSE\nTALK "not signed in"\nEND IF',
            '{"id": "admin", "email": "admin@example.com"}', '{"id": "admin"}', '{"id": "admin"}')
    assert r.host.messages == [LOGIN_UNAVAILABLE, LOGIN_UNAVAILABLE, "not signed in"]
