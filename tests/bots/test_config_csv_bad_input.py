"""config.csv input the parser must not misread: its refusals say what is wrong and what happens (nothing of
the file is applied), and no setting is made up from a piece of another."""

import time

import pytest
from django_tenants.utils import schema_context

from apps.bots.config_csv import SECRET_MASK, config_parse, config_text_masked
from apps.bots.models import BotConfig
from apps.bots.services import bot_deploy, package_limits
from apps.drive.package import package_read_dir
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive

CONFIG_KEY = "shop.gbai/shop.gbot/config.csv"


def _deployed_shop(tmp_path) -> None:
    root = tmp_path / "package" / "shop.gbai"
    (root / "shop.gbot").mkdir(parents=True)
    (root / "shop.gbot" / "config.csv").write_bytes(b"name,value\nbot-name,Shop\n")
    assert bot_deploy(package=package_read_dir(root, limits=package_limits())).errors == {}


@pytest.mark.django_db
def test_a_duplicate_key_refuses_the_file_and_says_so(canary_tenants, local_storage, tmp_path):
    """The refusal read "the value on line 3 wins" while nothing of the file was applied."""
    with schema_context(canary_tenants.a.schema_name):
        _deployed_shop(tmp_path)
        tenant_drive().write(CONFIG_KEY, b"name,value\nbot-name,Old\nbot-name,New\n")
        failure = drive_scan().failed[CONFIG_KEY]
        assert failure == ("config.csv: line 3: duplicate key 'bot-name' (first set on line 2); a key may be set "
                           "once: remove one of the two lines")
        assert "wins" not in failure
        assert list(BotConfig.objects.values_list("key", "value")) == [("bot-name", "Shop")]


# --- a quoted value over several lines (a spreadsheet cell with line breaks) ---------------------------------

SPAN = ("config.csv holds one setting per line, so a value over several lines (a spreadsheet cell with line breaks) "
        "is not read; put it on one line")


@pytest.mark.parametrize(("text", "line", "closed_on", "key"), [
    ('name,value\n"system-prompt","You are helpful,\nfriendly, and brief"\nbot-name,Shop\n', 2, 3, "system-prompt"),
    ("system-prompt,\"Line one\r\nLine two\r\n\r\nLast, \"\"quoted\"\" line\"\r\nbot-name,Shop\r\n", 1, 4,
     "system-prompt"),
], ids=["excel-quote-all", "crlf-unquoted-key-blank-line-and-doubled-quotes"])
def test_a_quoted_value_over_several_lines_is_refused_and_makes_up_no_setting(text, line, closed_on, key):
    """Read line by line, the value's first line kept its open quote and each following line became a setting of
    its own (`friendly` = `and brief"`), with no issue at all."""
    parsed = config_parse(text)
    assert [(issue.line, issue.message) for issue in parsed.issues] == [
        (line, f"line {line}: the value of '{key}' opens a quote that is closed only on line {closed_on}: {SPAN}")]
    assert parsed.as_dict() == {"bot-name": "Shop"}


def test_a_quote_never_closed_is_refused_on_its_line_and_the_next_lines_still_read():
    parsed = config_parse('welcome,"Hello\nbot-name,Shop\n')
    assert [issue.message for issue in parsed.issues] == ["line 1: the value of 'welcome' opens a quote that is not "
                                                          "closed"]
    assert parsed.as_dict() == {"bot-name": "Shop"}


def test_a_quote_closed_on_its_line_is_still_a_value_as_before():
    parsed = config_parse('Error Message,"Sorry, ""again"""\nplain,"quoted" then text\n')
    assert parsed.ok and parsed.as_dict() == {"Error Message": 'Sorry, "again"', "plain": '"quoted" then text'}


def test_many_open_quotes_cost_one_pass():
    text = "".join(f'k{n},"x\n' for n in range(100_000))
    started = time.perf_counter()
    parsed = config_parse(text)
    assert time.perf_counter() - started < 5
    assert len(parsed.issues) == 50_000 and not parsed.rows  # each line's quote closes on the next one


@pytest.mark.parametrize("text", [
    '"llm-key","-----BEGIN KEY-----\nMIIsecret\n-----END KEY-----"\nbot-name,Shop\n',
    'llm-key,"-----BEGIN KEY-----\nMIIsecret\n-----END KEY-----\n',
], ids=["closed", "never-closed"])
def test_a_secret_over_several_lines_is_masked_on_every_line(text):
    """Only the first line of a multi-line secret (a private key pasted as a cell) was masked for viewers."""
    masked = config_text_masked(text)
    assert "MIIsecret" not in masked and "BEGIN KEY" not in masked and SECRET_MASK in masked
    assert masked.count("\n") == text.count("\n")  # lines stay where they were: issues name the same lines
    if "bot-name" in text:
        assert "bot-name,Shop" in masked


@pytest.mark.django_db
def test_a_multi_line_value_in_the_drive_changes_nothing_and_names_its_lines(canary_tenants, local_storage, tmp_path):
    with schema_context(canary_tenants.a.schema_name):
        _deployed_shop(tmp_path)
        tenant_drive().write(CONFIG_KEY, b'name,value\n"system-prompt","You are helpful,\nfriendly, and brief"\n')
        failure = drive_scan().failed[CONFIG_KEY]
        assert failure == (f"config.csv: line 2: the value of 'system-prompt' opens a quote that is closed only on "
                           f"line 3: {SPAN}")
        assert list(BotConfig.objects.values_list("key", "value")) == [("bot-name", "Shop")]
