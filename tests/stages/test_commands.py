"""listserv.stages.commands: what a request asks, read from its signed text."""

from __future__ import annotations

import pytest

from listserv.model import MailingList, Member
from listserv.stages.commands import MAX_COMMANDS, help_lines, looks_like_request, read_request

NEWS = MailingList("news@example.org", "News", "A" * 40)
ALICE = Member(NEWS.address, "alice@example.org", "B" * 40, "Alice")


def text(body: str) -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.replace("\n", "\r\n").encode()


def test_commands_are_the_first_lines_in_any_case_with_a_colon_or_a_space_and_comma_lists():
    request = read_request(text("\n\nX-List-Name: news@example.org\nx-MODE digest\nx-status:\n\nx-leave\n"),
                           NEWS, ALICE)
    assert request.refused is None
    assert [(line.command.keyword, line.arguments, line.number) for line in request.lines] == \
        [("mode", ("digest",), 4), ("status", (), 5)]  # the blank line ended them: no x-leave


def test_the_first_line_that_is_no_command_ends_them_and_a_signature_is_not_read():
    request = read_request(text("x-list-name: news@example.org\nx-status\nthanks!\nx-leave\n"), NEWS, ALICE)
    assert request.keywords == ("status",)


@pytest.mark.parametrize("body, why", [
    ("x-status\n", "does not name this list (x-list-name: news@example.org)"),
    ("x-list-name: tips@example.org\nx-status\n", "does not name this list"),
    ("x-list-name: news@example.org\n", "holds no command"),
    ("x-list-name: news@example.org\nx-frobnicate\n", "Line 2 (x-frobnicate): there is no command x-frobnicate"),
    ("x-list-name: news@example.org\nx-mode: sometimes\n", "Line 2 (x-mode: sometimes): write it as x-mode: immediate|digest"),
    ("x-list-name: news@example.org\nx-mode\n", "write it as x-mode: immediate|digest"),
    ("x-list-name: news@example.org\nx-status now\n", "Line 2 (x-status now): write it as x-status;"),
    ("x-list-name: news@example.org, tips@example.org\nx-status\n", "Line 1"),
    ("x-list-name: news@example.org\n" + "x-status\n" * (MAX_COMMANDS + 1), f"more than {MAX_COMMANDS}"),
])
def test_one_bad_line_refuses_the_whole_request_and_says_which(body, why):
    request = read_request(text(body), NEWS, ALICE)
    assert request.lines == () and why in request.refused and request.refused.endswith(".")


def test_a_post_that_begins_with_a_command_looks_like_a_request_and_one_that_mentions_one_does_not():
    assert looks_like_request(text("\nx-leave\nplease\n"))
    assert not looks_like_request(text("To leave, write x-leave to news-request@.\n"))
    assert not looks_like_request(text("x-ray results attached\n"))  # no such command


def test_help_names_every_command_a_member_may_use_with_its_usage():
    lines = help_lines(ALICE)
    assert any(line.startswith("x-mode: immediate|digest  --  ") for line in lines)
    assert [line.split()[0].rstrip(":") for line in lines] == \
        ["x-list-name", "x-help", "x-status", "x-get-listkey", "x-mode", "x-pause", "x-resume", "x-leave",
         "x-key-update", "x-key-revoke", "x-key-change", "x-confirm"]


def test_commands_come_from_the_first_body_part_past_a_legacy_display_and_never_from_html_first():
    legacy = (b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
              b'Content-Type: text/plain; charset=utf-8; hp-legacy-display="1"\r\n\r\nSubject: request\r\n'
              b"--m\r\nContent-Type: text/plain\r\n\r\nx-list-name: news@example.org\r\nx-status\r\n--m--\r\n")
    assert read_request(legacy, NEWS, ALICE).keywords == ("status",)
    html_first = (b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n'
                  b"--m\r\nContent-Type: text/plain\r\n\r\nx-list-name: news@example.org\r\nx-status\r\n--m--\r\n")
    assert read_request(html_first, NEWS, ALICE).lines == ()


def test_a_pseudonym_may_not_carry_a_line_separator():
    from listserv.errors import UsageError
    from listserv.model import check_pseudonym
    with pytest.raises(UsageError):
        check_pseudonym("Rita\u2028\u2028Bob was removed too")
