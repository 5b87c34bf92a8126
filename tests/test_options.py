"""List options: one table of types and defaults that validates `list set` and renders the docs."""

from __future__ import annotations

import re

import pytest

from listserv.errors import UsageError
from listserv.options import OPTIONS, defaults, duration_seconds, parse_option, render_markdown


def test_the_options_the_issue_asks_for_with_their_defaults():
    assert defaults() == {
        "name": "", "subject_prefix": "", "require_encryption": True, "alert_senders": "members",
        "digest_schedule": "daily 18:00", "max_message_size_kb": 7000, "max_signature_age": "7d",
        "footer": "", "missed_notice": True, "key_change_approval": "admin", "announce_key_changes": True, "join_approval": "admin",
        "bounce_pause": True, "new_member_probation": False, "max_days_to_hold": 7,
        "emergency": False, "post_senders": "members", "hold_refused_posts": False,
        "statement_signers": "admins", "statement_quorum": 1, "resend_unencrypted": False,
    }
    for option in OPTIONS.values():
        assert option.doc and option.kind
        if option.default != "":
            # Every default passes its own validation and parses back to itself.
            text = str(option.default).lower() if isinstance(option.default, bool) else str(option.default)
            assert parse_option(option.name, text) == option.default


@pytest.mark.parametrize("text, value", [
    ("true", True), ("YES", True), (" on ", True), ("1", True),
    ("false", False), ("No", False), ("off", False), ("0", False),
])
def test_booleans(text, value):
    assert parse_option("require_encryption", text) is value


@pytest.mark.parametrize("text", ["maybe", "", "2", "truthy"])
def test_bad_booleans(text):
    with pytest.raises(UsageError, match="not true or false"):
        parse_option("require_encryption", text)


def test_integers_choices_and_text():
    assert parse_option("max_message_size_kb", "512") == 512
    for bad in ("0", "-5", "1.5", "lots"):
        with pytest.raises(UsageError):
            parse_option("max_message_size_kb", bad)
    assert parse_option("alert_senders", "admins") == "admins"
    with pytest.raises(UsageError, match="not one of: members, admins"):
        parse_option("alert_senders", "Admins")
    with pytest.raises(UsageError, match="single line"):
        parse_option("subject_prefix", "[a]\r\n")
    assert parse_option("footer", "one\r\ntwo") == "one\ntwo"


@pytest.mark.parametrize("text, seconds", [("90m", 5400), ("12h", 43200), ("7d", 604800),
                                           ("2w", 1209600), ("30s", 30), (" 1d ", 86400)])
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds
    assert parse_option("max_signature_age", text) == text.strip()


@pytest.mark.parametrize("text", ["0d", "7", "d", "1.5h", "7 d", "-1d", "1y"])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="not a duration"):
        parse_option("max_signature_age", text)


def test_schedules_are_validated_and_normalised():
    assert parse_option("digest_schedule", " weekly   fri  17:30 ") == "weekly fri 17:30"
    for bad in ("daily", "daily 7pm", "every day", "* * * *", "0 0 31 2 *"):
        with pytest.raises(UsageError):
            parse_option("digest_schedule", bad)


def test_unknown_option_names_every_option():
    with pytest.raises(UsageError) as caught:
        parse_option("colour", "red")
    assert caught.value.exit_code == 2
    assert str(caught.value) == f"'colour' is not a list option; the options are: {', '.join(OPTIONS)}."


def test_rendered_table_has_one_row_per_option():
    rows = [line for line in render_markdown().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(OPTIONS)
    assert "| `require_encryption` | bool | `true` |" in render_markdown()


def test_rendered_table_rows_have_four_cells():
    for line in render_markdown().splitlines():
        if line.startswith("|"):
            cells = [cell for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert len(cells) == 4, line
