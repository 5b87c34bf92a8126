"""VERP: each copy's return path carries a token that maps a bounce back to its member, names
the member to this server only, and is the same for the same member on every copy."""

from __future__ import annotations

import re
from pathlib import Path

from listserv import verp
from listserv.model import Member
from listserv.stages.route import route
from listserv.store import Store

LIST = "news@example.org"


def member(email: str, list_address: str = LIST) -> Member:
    return Member(list_address, email, "0" * 40, email.split("@")[0].title())


def test_the_secret_is_made_once_and_kept_in_the_database(tmp_path: Path):
    store = Store(tmp_path / "listserv.json")
    first = store.secret(verp.SECRET_KEY)
    assert len(first) == 32
    assert store.secret(verp.SECRET_KEY) == first
    assert Store(tmp_path / "listserv.json").secret(verp.SECRET_KEY) == first  # another process, same secret
    assert Store(tmp_path / "other.json").secret(verp.SECRET_KEY) != first  # another deployment, another


def test_a_token_is_short_lowercase_and_fits_an_address_local_part():
    value = verp.token(b"k" * 32, LIST, "alice@example.net")
    assert re.fullmatch(r"[a-z2-7]{16}", value), value
    # the token survives the trip through RCPT TO and route()
    assert route(f"news-bounces+{value}@example.org", {LIST}).token == value


def test_a_token_says_nothing_of_the_address_and_depends_on_the_secret_list_and_member():
    key, other_key = b"k" * 32, b"q" * 32
    value = verp.token(key, LIST, "alice@example.net")
    assert verp.token(key, LIST, "alice@example.net") == value  # stable: one per member and list
    assert "alice" not in value and "example" not in value
    assert verp.token(other_key, LIST, "alice@example.net") != value
    assert verp.token(key, "team@example.org", "alice@example.net") != value
    assert verp.token(key, LIST, "bob@example.net") != value


def test_member_for_finds_the_member_a_token_names_in_any_case():
    key = b"k" * 32
    alice, bob, carol = member("alice@example.net"), member("bob@example.net"), member("carol@example.net")
    members = [alice, bob, carol]
    assert verp.member_for(key, LIST, members, verp.token(key, LIST, bob.email)) is bob
    assert verp.member_for(key, LIST, members, verp.token(key, LIST, carol.email).upper()) is carol


def test_member_for_finds_no_one_for_a_token_it_did_not_make():
    key = b"k" * 32
    members = [member("alice@example.net"), member("bob@example.net")]
    assert verp.member_for(key, LIST, members, "") is None
    assert verp.member_for(key, LIST, members, "aaaaaaaaaaaaaaaa") is None
    # a token of another secret (another deployment), of another list, of a former member
    assert verp.member_for(key, LIST, members, verp.token(b"q" * 32, LIST, "alice@example.net")) is None
    assert verp.member_for(key, LIST, members, verp.token(key, "team@example.org", "alice@example.net")) is None
    assert verp.member_for(key, LIST, members, verp.token(key, LIST, "carol@example.net")) is None


DSN = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: news-bounces+tok@example.org\r\nSubject: failure\r\n"
       b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
       b"--b\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n"
       b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
       b"Final-Recipient: rfc822; someone@example.net\r\nAction: ACTION\r\nStatus: STATUS\r\n\r\n--b--\r\n")


def test_a_report_gives_its_permanent_status_and_a_delay_or_no_report_gives_none():
    from listserv.verp import permanent_status

    assert permanent_status(DSN.replace(b"ACTION", b"failed").replace(b"STATUS", b"5.1.1")) == "5.1.1"
    assert permanent_status(DSN.replace(b"ACTION", b"delayed").replace(b"STATUS", b"4.4.1")) == ""
    assert permanent_status(b"Subject: out of office\r\n\r\nStatus: 5.1.1\r\n") == ""  # no DSN
