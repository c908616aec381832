"""config.csv parsing, normalisation, lookup and param-* injection (spec §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.bots.config_csv import (
    CONFIG_MAX_BYTES,
    CONFIG_MAX_KEY_CHARS,
    CONFIG_MAX_VALUE_CHARS,
    SECRET_MASK,
    ConfigIssue,
    config_is_secret_reference,
    config_key_is_secret,
    config_key_normalize,
    config_lookup,
    config_params,
    config_parse,
    config_text_masked,
    config_value_is_unset,
)


def messages(parsed) -> list[str]:
    return [issue.message for issue in parsed.issues]


# --- parsing -----------------------------------------------------------------------------------------


def test_parse_skips_headers_comments_blank_and_separator_lines():
    parsed = config_parse(
        "name,value\n"
        "# a comment\n"
        "\n"
        "   \n"
        ",\n"
        ",,,\n"
        "bot-name,Demo\n"
        "Key,Value\n"
    )
    assert parsed.ok
    assert [(r.line, r.key, r.value) for r in parsed.rows] == [(7, "bot-name", "Demo")]


def test_parse_splits_on_first_comma_and_trims_key_and_value():
    parsed = config_parse("  theme-color1 , #0d2111  \nError Message,I apologize, but something failed\n")
    assert parsed.as_dict() == {"theme-color1": "#0d2111",
                                "Error Message": "I apologize, but something failed"}


def test_parse_accepts_bom_and_crlf_from_windows_editors():
    parsed = config_parse(b"\xef\xbb\xbfname,value\r\nllm-model,gpt-4o\r\nbot-name,Demo\r\n")
    assert parsed.ok
    assert parsed.as_dict() == {"llm-model": "gpt-4o", "bot-name": "Demo"}
    assert [r.line for r in parsed.rows] == [2, 3]


def test_parse_keeps_vault_references_verbatim():
    parsed = config_parse("meet-api-key,vault:gbo/meet/api_key\n")
    assert parsed.as_dict() == {"meet-api-key": "vault:gbo/meet/api_key"}


def test_parse_reports_a_line_without_comma_and_keeps_the_rest():
    parsed = config_parse("a,1\nb,2\nc,3\nd,4\ne,5\nf,6\njust some text\ng,7\n")
    assert messages(parsed) == ["line 7: expected key,value (no comma found)"]
    assert parsed.issues == [ConfigIssue(7, "line 7: expected key,value (no comma found)")]
    assert not parsed.ok
    assert parsed.as_dict()["g"] == "7"
    assert "just some text" not in parsed.as_dict()


def test_parse_reports_invalid_utf8_with_line_and_byte():
    parsed = config_parse(b"a,1\nb,caf\xe9\nc,3\n")
    assert messages(parsed) == ["line 2: invalid UTF-8 at byte 6 of the line (byte 10 of the file)"]
    assert parsed.as_dict() == {"a": "1", "c": "3"}


def test_parse_reports_nul_byte():
    parsed = config_parse(b"a,1\nb,x\x00y\n")
    assert len(parsed.issues) == 1
    assert parsed.issues[0].line == 2
    assert "NUL byte" in parsed.issues[0].message
    assert parsed.as_dict() == {"a": "1"}


def test_parse_rejects_an_oversized_file_before_reading_it():
    data = b"k,v\n" * (CONFIG_MAX_BYTES // 4 + 1)
    parsed = config_parse(data)
    assert parsed.rows == []
    assert messages(parsed) == [f"config.csv is {len(data)} bytes; the limit is {CONFIG_MAX_BYTES}"]


def test_parse_reports_key_and_value_over_their_limits():
    long_key = "k" * (CONFIG_MAX_KEY_CHARS + 1)
    long_value = "v" * (CONFIG_MAX_VALUE_CHARS + 1)
    parsed = config_parse(f"{long_key},1\nprompt,{long_value}\nok,1\n")
    assert messages(parsed) == [
        f"line 1: key is {CONFIG_MAX_KEY_CHARS + 1} characters; the limit is {CONFIG_MAX_KEY_CHARS}",
        f"line 2: value of 'prompt' is {CONFIG_MAX_VALUE_CHARS + 1} characters; "
        f"the limit is {CONFIG_MAX_VALUE_CHARS}",
    ]
    assert parsed.as_dict() == {"ok": "1"}


def test_parse_reports_duplicate_key_naming_both_lines():
    parsed = config_parse("llm-model,a\nbot-name,x\nllm-model,b\n")
    assert messages(parsed) == ["line 3: duplicate key 'llm-model' (first set on line 1); a key may be set once: "
                                "remove one of the two lines"]
    assert parsed.as_dict()["llm-model"] == "b"


def test_parse_keys_are_case_sensitive():
    parsed = config_parse("server-port,1\nServer-Port,2\n")
    assert parsed.ok
    assert parsed.as_dict() == {"server-port": "1", "Server-Port": "2"}


def test_parse_does_not_split_on_unicode_line_separators_inside_values():
    parsed = config_parse("system-prompt,one\u2028two\n")
    assert parsed.as_dict() == {"system-prompt": "one\u2028two"}


# --- unset values, secrets, normalisation -------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "  ", "none", "None", "NULL", "n/a", "N/A"])
def test_unset_values(value):
    assert config_value_is_unset(value)


@pytest.mark.parametrize("value", ["0", "false", "nonempty", "na"])
def test_set_values(value):
    assert not config_value_is_unset(value)


def test_secret_reference():
    assert config_is_secret_reference("vault:gbo/meet/api_key")
    assert not config_is_secret_reference("sk-abc")
    assert not config_is_secret_reference(None)


@pytest.mark.parametrize(("key", "canonical"), [
    ("llm-model", "llm-model"),
    ("Bot Name", "bot-name"),
    ("Answer Mode", "answer-mode"),
    ("LLM_Model", "llm-model"),
    ("  Welcome   Message ", "welcome-message"),
    ("Theme Color", "theme-color1"),
    ("theme-color1", "theme-color1"),
    ("max-tokens", "llm-max-tokens"),
    ("bot-system-prompt", "system-prompt"),
])
def test_key_normalize(key, canonical):
    assert config_key_normalize(key) == canonical


# --- lookup ------------------------------------------------------------------------------------------


def test_lookup_exact_key_first():
    values = {"Bot Name": "Legacy", "bot-name": "Modern"}
    assert config_lookup(values, "bot-name") == "Modern"
    assert config_lookup(values, "Bot Name") == "Legacy"


def test_lookup_finds_the_other_dialect():
    values = {"Theme Color": "blue", "Answer Mode": "direct"}
    assert config_lookup(values, "theme-color1") == "blue"
    assert config_lookup(values, "answer-mode") == "direct"


def test_lookup_treats_placeholders_as_absent():
    assert config_lookup({"llm-key": "none"}, "llm-key", "fallback") == "fallback"
    assert config_lookup({"llm-key": ""}, "llm-key") is None
    # An exact placeholder does not hide a usable value written in the other dialect.
    assert config_lookup({"theme-color1": "n/a", "Theme Color": "green"}, "theme-color1") == "green"


@pytest.mark.parametrize("path", ["../models/x.gguf", "./m", "/opt/models/m", "~/m", "model.BIN", "m.safetensors"])
def test_lookup_treats_local_file_paths_as_absent(path):
    assert config_lookup({"llm-model": path}, "llm-model", "default-model") == "default-model"


def test_lookup_can_allow_server_paths_for_path_keys():
    assert config_lookup({"sites-root": "/tmp"}, "sites-root", allow_local_paths=True) == "/tmp"


def test_lookup_returns_vault_reference_unresolved():
    assert config_lookup({"meet-api-key": "vault:gbo/meet/api_key"}, "meet-api-key") == "vault:gbo/meet/api_key"


def test_lookup_missing_key_returns_default():
    assert config_lookup({}, "llm-model", "x") == "x"


# --- param-* injection -------------------------------------------------------------------------------


def test_params_are_lowercased_and_typed():
    values = {
        "param-blingClientID": "42",
        "param-ratio": "0.5",
        "param-enabled": "TRUE",
        "param-off": "false",
        "param-greeting": "Hello, world",
        "param-neg": "-7",
        "param-huge": "99999999999999999999",
        "param-spaced": "1 000",
        "param-underscored": "1_000",
        "param-notanumber": "nan",
        "llm-model": "gpt",
        "Param-Case": "1",
        "param-": "empty name",
    }
    assert config_params(values) == {
        "blingclientid": 42,
        "ratio": 0.5,
        "enabled": True,
        "off": False,
        "greeting": "Hello, world",
        "neg": -7,
        "huge": 1e20,
        "spaced": "1 000",
        "underscored": "1_000",
        "notanumber": "nan",
    }


def test_params_types_are_exact():
    params = config_params({"param-a": "3", "param-b": "3.0", "param-c": "1e3"})
    assert type(params["a"]) is int
    assert type(params["b"]) is float
    assert params["c"] == 1000.0


def test_params_past_the_integer_and_float_ranges_stay_usable():
    """A param of thousands of digits made int() raise on every script run (start, tools, jobs)."""
    huge = "9" * 5000
    params = config_params({"param-big": "1" + "0" * 24, "param-huge": huge, "param-negative": "-" + huge})
    assert params["big"] == 1e24 and type(params["big"]) is float  # past 64 bits: a float, as upstream
    assert params["huge"] == huge and params["negative"] == "-" + huge  # past the float range: the text


def test_sample_config_parses_cleanly():
    sample = Path(__file__).resolve().parents[2] / "samples" / "demo.gbai" / "demo.gbot" / "config.csv"
    parsed = config_parse(sample.read_bytes())
    assert parsed.ok, parsed.issues
    values = parsed.as_dict()
    assert config_lookup(values, "bot-name") == "Riverside Garden"
    assert config_lookup(values, "llm-model", "server-default") == "server-default"
    assert config_params(values) == {"maxgroup": 12}


# --- quoted fields and masking ------------------------------------------------------------------------


def test_parse_reads_quoted_fields_as_csv_does():
    """LibreOffice's quote-all and pandas' QUOTE_ALL write `"llm-key","sk-live-123"`: the key was stored with its
    quotes, so the setting silently did nothing."""
    parsed = config_parse('"name","value"\n"llm-key","sk-live-123"\n"Error Message","Sorry, ""again"""\n'
                          '"a,b" , "1"\nplain,"quoted" then text\n')
    assert parsed.ok
    assert parsed.as_dict() == {"llm-key": "sk-live-123", "Error Message": 'Sorry, "again"', "a,b": "1",
                                "plain": '"quoted" then text'}


def test_parse_reports_a_quoted_key_that_is_not_closed_or_not_followed_by_a_comma():
    parsed = config_parse('"llm-key,sk\nbot-name,x\n')
    assert messages(parsed) == ["line 1: the key opens a quote that is not closed"]
    assert messages(config_parse('"llm-key" sk\n')) == [
        "line 1: unexpected text after the quoted key (expected a comma)"]


@pytest.mark.parametrize("text", ['"llm-key","sk-live-123"\n', '\ufeffllm-key,sk-live-123\r\nbot-name,Demo\r\n',
                                  '\ufeff"llm-key","sk-live-123"\n', '"email,pass","sk-live-123"\n',
                                  '"llm-key,sk-live-123\n'],
                         ids=["quote-all", "bom", "bom-and-quotes", "comma-in-key", "refused-line"])
def test_masked_text_holds_no_secret(text):
    """Quoted keys were not seen as a secret's (config_key_is_secret('"llm-key"') was False), nor was the first
    key behind a BOM (a download decoded with "utf-8" keeps it): viewers saw the secret."""
    masked = config_text_masked(text)
    assert "sk-live-123" not in masked and SECRET_MASK in masked
    assert config_key_is_secret('"llm-key"') and config_key_is_secret("\ufeffllm-key")
