"""Every refusal and every CLI error is one plain sentence on one line, whatever it quotes."""

from __future__ import annotations

import pytest

from listserv.errors import Malformed, UsageError, one_line

from tests.helpers.cli import Cli, write_key

LIST = "news@example.org"


@pytest.mark.parametrize("bad,shown", [
    ("a\r\nBcc: b", "a\\r\\nBcc: b"),
    ("nul\0here", "nul\\x00here"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("line\u2028separator\x85", "line\\u2028separator\\x85"),
    ("tab\tstop", "tab\\tstop"),
    ("Grüße, 🙂", "Grüße, 🙂"),
])
def test_a_quoted_value_cannot_break_the_line(bad, shown):
    error = UsageError(f"'{bad}' is not a valid email address.")
    assert str(error) == f"'{shown}' is not a valid email address."
    assert one_line(bad) == shown
    assert Malformed("x", f"Bad {bad}.").smtp_reply == f"554 5.6.0 Bad {shown}."


@pytest.mark.parametrize("args", [
    ("member", "add", LIST, "al\r\nice@example.org"),
    ("member", "add", LIST, "alice@example.org\nBcc: mallory@example.com"),
    ("member", "remove", LIST, "al\rice@example.org"),
    ("list", "create", "ne\nws@example.org", "--name", "News"),
])
def test_a_command_given_a_line_break_prints_one_line_and_exits_2(tmp_path, people, args):
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("list", "create", LIST, "--name", "News")
    extra = ("--key", write_key(tmp_path, people["alice"])) if args[:2] == ("member", "add") else ()
    result = cli(*args, *extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.endswith(".\n"), repr(result.stderr)
    assert result.stderr.startswith("listserv: '") and "\\" in result.stderr
