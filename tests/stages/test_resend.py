"""The resend decision (listserv.stages.resend): who may resend, to whom, and what each side reads."""

from __future__ import annotations

import email
from email import policy

import pytest

from listserv.model import MailingList, Member
from listserv.stages.commands import is_resend, looks_like_request
from listserv.stages.resend import MAX_ADDRESSES, read_resend, rewrite

LIST = "news@example.org"
KEY_J, KEY_K = "A" * 40, "B" * 40
CONTACTS = {"j@press.example": KEY_J, "k@law.example": KEY_K, "nokey@press.example": None}


def mailing_list(**options) -> MailingList:
    return MailingList(LIST, "News", "F" * 40, options)


def poster(role: str = "spokesperson") -> Member:
    return Member(LIST, "alice@example.org", "C" * 40, "Alice", role=role)


def content(*lines: str, body: str = "The statement.") -> bytes:
    text = "\r\n".join([*lines, "", body, ""])
    return (f"Subject: Our statement\r\nTo: {LIST}\r\nMessage-ID: <m1@alice.example>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}").encode()


def text(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=policy.default)
    return next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content().replace("\r\n", "\n")


def test_a_spokesperson_resends_to_two_contacts_each_with_its_key():
    post = content(f"x-list-name: {LIST}", "x-resend: j@press.example, K@LAW.example")
    resend = read_resend(post, mailing_list(), poster(), CONTACTS, {KEY_J, KEY_K})
    assert resend.refused is None
    assert [(t.address, t.fingerprint) for t in resend.targets] == [("j@press.example", KEY_J), ("k@law.example", KEY_K)]
    members, outside = text(resend.content), text(resend.outside)
    assert outside == "The statement.\n" and "x-resend" not in members and "x-list-name" not in members
    first, rest = members.split("\n", 1)
    assert first.startswith("[Resent by Alice from the list's address to j@press.example (key AAAA AAAA")
    assert "k@law.example (key BBBB" in first and rest.strip() == "The statement."


def test_several_lines_and_an_admin_and_duplicates():
    post = content("x-resend j@press.example", f"x-list-name: {LIST}", "x-resend: k@law.example j@press.example")
    resend = read_resend(post, mailing_list(), poster("admin"), CONTACTS, {KEY_J, KEY_K})
    assert resend.refused is None and [t.address for t in resend.targets] == ["j@press.example", "k@law.example"]


@pytest.mark.parametrize("role, lines, usable, options, says", [
    ("member", ["x-resend: j@press.example"], {KEY_J}, {}, "Only the list's spokespersons and admins"),
    ("spokesperson", ["x-resend: stranger@elsewhere.example"], {KEY_J}, {}, "stranger@elsewhere.example is not one of"),
    ("spokesperson", ["x-resend: not-an-address"], {KEY_J}, {}, "'not-an-address' is not a valid email address"),
    ("spokesperson", ["x-resend: j@press.example"], set(), {}, "no usable key for j@press.example"),
    ("spokesperson", ["x-resend: nokey@press.example"], {KEY_J}, {}, "no usable key for nokey@press.example"),
    ("spokesperson", ["x-resend:"], {KEY_J}, {}, "write it as x-resend: ADDRESS"),
])
def test_each_refusal_says_why_in_one_sentence(role, lines, usable, options, says):
    post = content(f"x-list-name: {LIST}", *lines)
    resend = read_resend(post, mailing_list(**options), poster(role), CONTACTS, usable)
    assert resend.refused is not None and says in resend.refused and resend.refused.endswith("nothing was sent.")
    assert not resend.targets


def test_the_lines_must_name_this_list():
    for lines in (["x-resend: j@press.example"], ["x-list-name: other@example.org", "x-resend: j@press.example"]):
        resend = read_resend(content(*lines), mailing_list(), poster(), CONTACTS, {KEY_J})
        assert "must name this list" in resend.refused


def test_too_many_addresses_are_refused():
    many = {f"c{i}@press.example": KEY_J for i in range(MAX_ADDRESSES + 1)}
    post = content(f"x-list-name: {LIST}", "x-resend: " + " ".join(many))
    assert f"at most {MAX_ADDRESSES}" in read_resend(post, mailing_list(), poster(), many, {KEY_J}).refused


def test_resend_unencrypted_lets_a_contact_without_a_usable_key_have_a_plain_copy():
    post = content(f"x-list-name: {LIST}", "x-resend: nokey@press.example j@press.example")
    resend = read_resend(post, mailing_list(resend_unencrypted=True), poster(), CONTACTS, set())
    assert [(t.address, t.fingerprint) for t in resend.targets] == [("nokey@press.example", None), ("j@press.example", None)]
    assert "nokey@press.example (signed, not encrypted: no usable key)" in text(resend.content).split("\n")[0]
    # still no stranger, even with the option on
    post = content(f"x-list-name: {LIST}", "x-resend: stranger@elsewhere.example")
    assert "is not one of" in read_resend(post, mailing_list(resend_unencrypted=True), poster(), CONTACTS, set()).refused


def test_a_post_that_is_no_resend_passes_and_a_misdirected_request_is_still_refused():
    assert read_resend(content(), mailing_list(), poster(), CONTACTS, set()) is None
    assert read_resend(content("x-help"), mailing_list(), poster(), CONTACTS, set()) is None
    resend = content(f"x-list-name: {LIST}", "x-resend: j@press.example")
    assert is_resend(resend) and not looks_like_request(resend)
    mixed = content(f"x-list-name: {LIST}", "x-resend: j@press.example", "x-help")
    assert not is_resend(mixed) and looks_like_request(mixed)
    assert looks_like_request(content(f"x-list-name: {LIST}", "x-status"))


def test_rewrite_cuts_the_lines_in_the_first_text_part_of_a_multipart_and_keeps_the_rest():
    boundary = "b0undary"
    post = (f"Subject: s\r\nContent-Type: multipart/mixed; boundary={boundary}\r\n\r\n--{boundary}\r\n"
            "Content-Type: text/plain\r\n\r\n\r\nx-list-name: news@example.org\r\nx-resend: j@press.example\r\n"
            f"\r\nBody text.\r\n--{boundary}\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"JVBERi0=\r\n--{boundary}--\r\n").encode()
    out = email.message_from_bytes(rewrite(post, 2, "NOTE"), policy=policy.default)
    parts = list(out.iter_parts())
    assert parts[0].get_content().replace("\r\n", "\n") == "NOTE\n\nBody text.\n"
    assert parts[1].get_filename() == "a.pdf" and parts[1].get_payload(decode=True) == b"%PDF-"


def test_an_outsiders_copy_is_the_lists_own_word_to_them():
    from listserv.stages.compose import Wrapping, compose
    from listserv.stages.resend import outside_post

    post = content(f"x-list-name: {LIST}", "x-resend: j@press.example")
    resend = read_resend(post, mailing_list(subject_prefix="[News]"), poster(), CONTACTS, {KEY_J})
    composed = compose(outside_post(resend, resend.targets[0]), mailing_list(subject_prefix="[News]"),
                       Wrapping("FOOTER FOR MEMBERS"))
    outer = email.message_from_bytes(composed.outer_prefix + composed.outer_suffix, policy=policy.default)
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    for message in (outer, inner):
        assert message["To"].addresses[0].addr_spec == "j@press.example"
        assert message["Reply-To"].addresses[0].addr_spec == "news-owner@example.org"
        assert message["From"].addresses[0].addr_spec == LIST and message["From"].addresses[0].display_name == "News"
        assert "List-Id" not in message and "Precedence" not in message and "References" not in message
    assert inner["Subject"] == "Our statement"  # no list prefix for an outsider
    whole = composed.inner.decode()
    assert "FOOTER FOR MEMBERS" not in whole and "Alice" not in whole and "m1@alice.example" not in whole
    assert "The statement." in whole and "x-resend" not in whole
