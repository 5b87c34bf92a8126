"""What x-sign-this signs and when enough have asked: pure."""

from __future__ import annotations

import pytest

from listserv.errors import UsageError
from listserv.stages.statement import QUORUM_WINDOW, file_name, normalise, quorum, read_statement


def request(text: str, *attachments: tuple[str, bytes]) -> bytes:
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")  # strict MIME: CRLF throughout
    parts = [f"x-list-name: news@example.org\r\nx-sign-this\r\n\r\n{text}".encode()]
    if not attachments:
        return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + parts[0]
    body = b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + parts[0] + b"\r\n"
    for name, data in attachments:
        body += (f'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="{name}"'
                 f"\r\n\r\n").encode() + data + b"\r\n"
    return b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + b"--b--\r\n"


def test_what_a_mail_client_changes_on_the_way_does_not_change_the_statement():
    plain = read_statement(request("We did not write that.\nAsk us here.\n"))
    mangled = read_statement(request("\r\n\r\nWe did not write that.   \r\nAsk us here.\t\r\n\r\n"))
    assert plain.digest == mangled.digest and plain.text == "We did not write that.\nAsk us here.\n"
    assert read_statement(request("We did write that.\n")).digest != plain.digest
    assert normalise("Cafe\u0301\n") == "Caf\u00e9\n"  # NFC: the same letters, however typed


def test_the_files_belong_to_the_statement_and_their_names_are_made_safe():
    text = "See the memo.\n"
    with_memo = read_statement(request(text, ("memo.pdf", b"one")))
    assert with_memo.attachments == (("memo.pdf", b"one"),)
    assert with_memo.digest != read_statement(request(text)).digest
    assert with_memo.digest != read_statement(request(text, ("memo.pdf", b"two"))).digest
    assert with_memo.digest != read_statement(request(text, ("other.pdf", b"one"))).digest
    assert file_name("../../etc/passwd", 1) == "passwd" and file_name("a b;rm -rf.pdf", 1) == "a_b_rm_-rf.pdf"
    assert file_name("", 3) == "attachment-3" and file_name("...", 2) == "attachment-2"
    with pytest.raises(UsageError, match="same file name"):
        read_statement(request(text, ("a.pdf", b"1"), ("a.pdf", b"2")))


def test_a_request_with_nothing_after_its_commands_has_nothing_to_sign():
    with pytest.raises(UsageError, match="There is no text to sign"):
        read_statement(request("  \n\n"))


def test_the_quorum_counts_different_askers_within_48_hours():
    now = 1_000_000.0
    assert not quorum((("Alice", now), ("Alice", now)), 2, now).enough  # one admin twice is one
    met = quorum((("Alice", now - 10), ("Bob", now)), 2, now)
    assert met.enough and [name for name, _ in met.asked] == ["Alice", "Bob"]
    late = quorum((("Alice", now - QUORUM_WINDOW - 1), ("Bob", now)), 2, now)
    assert not late.enough and [name for name, _ in late.asked] == ["Bob"]
    assert quorum((("Alice", now),), 1, now).enough
