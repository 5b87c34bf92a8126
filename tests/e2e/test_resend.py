"""Resends end to end (docs/requests.md, Resends): a spokesperson's post goes to two outside
contacts from the list's address, each copy encrypted to that contact's own key (read with gpg
and with rnp) and signed by the list's, with nothing of the member in it; the members' copies
say it was resent. Every refusal sends nothing to anyone and tells the poster why; with
resend_unencrypted a contact without a key gets a signed plain copy; a held resend goes out only once
approved, and is checked again then. One server run."""

from __future__ import annotations

import email
import re
from email import policy

import pytest

from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.keys import fingerprints_in, make_gpg_user, make_rnp_user
from tests.helpers.members_clients import decrypt, encrypted_part, read_reply, text_of, verify_reply
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"
OWNER = "news-owner@example.org"


@pytest.fixture
def site(tmp_path, people):
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate",
                                                              "sally": "immediate"})
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "spokesperson")
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    return cli, list_key, fingerprint


@pytest.fixture(scope="module")
def outsiders(tmp_path_factory):
    base = tmp_path_factory.mktemp("press")
    return {"desk": make_gpg_user(base, "Desk", "desk@paper.example"),
            "counsel": make_rnp_user(base, "Counsel", "counsel@law.example")}


def resend_post(user, list_key, *lines: str, body: str = "The group's statement.") -> tuple[bytes, str]:
    """A post beginning with resend lines, and its Message-ID."""
    raw = mf.post(user, list_key, body="\n".join([f"x-list-name: {LIST}", *lines, "", body]), subject="Statement")
    return raw, re.search(rb"Message-ID: (<[^>]+>)", raw).group(1).decode()


def to(messages, address: str) -> list:
    return [m for m in messages if address in m.rcpt_tos]


def key_part(user) -> bytes:
    head = 'Content-Type: application/pgp-keys; name="key.asc"\r\nContent-Disposition: attachment; filename="key.asc"\r\n'
    return (head + "\r\n").encode() + user.public_key.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def request(user, list_key, lines: list[str], keys: list[bytes] = ()) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, ""])
    inner = mf.protected(user, REQUEST, "request", {}, mf.text_part(body), *keys)
    outer = mf.outer_subject(mf.headers(user, to=REQUEST, subject="request"), "...")
    return mf.message(outer, mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner, to_self=True)))


def nothing_of(member, message_id: str, *data: bytes) -> None:
    for blob in data:
        text = blob.decode("utf-8", "replace")
        for trace in (member.name, member.email, message_id, message_id.strip("<>").split("@")[0], "x-resend"):
            assert trace not in text, trace


def test_resends_reach_each_contact_under_its_own_key_and_every_refusal_sends_nothing(site, people, outsiders,
                                                                                       tmp_path):
    cli, list_key, fingerprint = site
    alice, bob, sally = people["alice"], people["bob"], people["sally"]
    desk, counsel = outsiders["desk"], outsiders["counsel"]
    cli.ok("contact", "add", LIST, desk.email, "--key", write_key(tmp_path, desk))
    cli.ok("contact", "add", LIST, "plain@paper.example")  # no key
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        # An admin adds the second contact by signed request, its key attached.
        assert submit(proc.port, REQUEST, request(bob, list_key, [f"x-add-contact: {counsel.email}", "x-contacts"],
                                                  [key_part(counsel)]))[0] == 250
        got = sink.wait_for(2)  # the reply, and every admin told of the change
        replies = [text_of(read_reply(m, bob, list_key, fingerprint)[1]) for m in to(got, bob.email)]
        [reply] = [t for t in replies if "is a contact" in t]
        assert f"{counsel.email} is a contact, key {counsel.fingerprint[:4]}" in reply
        assert re.search(rf"{re.escape(desk.email)}  {desk.fingerprint[:4]} ", reply)  # x-contacts lists both
        seen = len(got)

        raw, message_id = resend_post(alice, list_key, f"x-resend: {desk.email}, {counsel.email}")
        assert submit(proc.port, LIST, raw)[0] == 250
        got = sink.wait_for(seen + 5)[seen:]  # two outsiders, three members
        seen += 5
        for who, user in (("desk", desk), ("counsel", counsel)):
            [copy] = to(got, user.email)
            assert copy.rcpt_tos == (user.email,) and copy.mail_from == OWNER
            outer = email.message_from_bytes(copy.data, policy=policy.default)
            assert outer["From"].addresses[0].addr_spec == LIST and outer["To"].addresses[0].addr_spec == user.email
            assert outer["Reply-To"].addresses[0].addr_spec == OWNER
            assert outer["Message-ID"].endswith("@example.org>") and outer["Date"].endswith("+0000")
            assert "References" not in outer and "In-Reply-To" not in outer and "List-Id" not in outer
            plain = decrypt(user, encrypted_part(copy.data), list_key, fingerprint)  # gpg for desk, rnp for counsel
            inner = email.message_from_bytes(plain, policy=policy.default)
            assert inner["Subject"] == "Statement" and inner["Reply-To"].addresses[0].addr_spec == OWNER
            assert "The group's statement." in text_of(inner)
            nothing_of(alice, message_id, copy.data, plain)
        for member in (alice, bob, sally):
            [copy] = to(got, member.email)
            text = text_of(read_reply(copy, member, list_key, fingerprint)[1])
            assert "[Resent by Alice from the list's address to desk@paper.example (key " in text
            assert "counsel@law.example (key " in text and "x-resend" not in text and "The group's statement." in text

        refusals = [
            (sally, f"x-resend: {desk.email}", "Only the list's spokespersons and admins"),
            (alice, "x-resend: stranger@elsewhere.example", "stranger@elsewhere.example is not one of the list's contacts"),
            (alice, f"x-resend: {desk.email} not-an-address", "'not-an-address' is not a valid email address"),
            (alice, "x-resend: plain@paper.example", "no usable key for plain@paper.example"),
        ]
        for poster, line, says in refusals:
            assert submit(proc.port, LIST, resend_post(poster, list_key, line)[0])[0] == 250
            [reply] = sink.wait_for(seen + 1)[seen:]
            seen += 1
            assert reply.rcpt_tos == (poster.email,)  # nobody else: no member, no outsider
            assert says in text_of(read_reply(reply, poster, list_key, fingerprint)[1])
            proc.wait_log(r"resend-refused qid=\S+")

        cli.ok("list", "set", LIST, "resend_unencrypted", "true")
        raw, message_id = resend_post(alice, list_key, "x-resend: plain@paper.example")
        assert submit(proc.port, LIST, raw)[0] == 250
        got = sink.wait_for(seen + 4)[seen:]
        seen += 4
        said = text_of(read_reply(to(got, sally.email)[0], sally, list_key, fingerprint)[1])
        assert "to plain@paper.example (signed, not encrypted: no usable key)." in said

        # Held in an emergency: resent only once approved -- and checked again then, so the
        # second, approved after its contact was removed, is refused.
        cli.ok("list", "set", LIST, "emergency", "on")  # every admin is told
        for body in ("First held.", "Second held."):
            assert submit(proc.port, LIST, resend_post(alice, list_key, f"x-resend: {desk.email}", body=body)[0])[0] == 250
        told = sink.wait_for(seen + 3)[seen:]
        seen += 3
        assert not to(told, desk.email) and not to(told, sally.email)  # nothing out while held
        ids = {}
        for m in told:
            _, inner = read_reply(m, bob, list_key, fingerprint)
            if "(held " in inner["Subject"]:
                [attached] = [p for p in inner.walk() if p.get_content_type() == "message/rfc822"]
                ids["First held." in attached.as_string()] = re.search(r"\(held ([0-9a-f]{12})\)", inner["Subject"]).group(1)
        first, qid = ids[True], ids[False]
        assert submit(proc.port, REQUEST, request(bob, list_key, [f"x-approve: {first}"]))[0] == 250
        approved = sink.wait_for(seen + 6)[seen:]  # the reply and its notice to the admins, desk's copy, 3 members'
        seen += 6
        [copy] = to(approved, desk.email)
        assert "First held." in text_of(email.message_from_bytes(
            decrypt(desk, encrypted_part(copy.data), list_key, fingerprint), policy=policy.default))
        assert len(to(approved, sally.email)) == 1
        assert submit(proc.port, REQUEST, request(bob, list_key, [f"x-remove-contact: {desk.email}"]))[0] == 250
        told = sink.wait_for(seen + 2)[seen:]  # the reply, and every admin told of the change
        seen += 2
        assert any(f"{desk.email} is no longer a contact." in text_of(read_reply(m, bob, list_key, fingerprint)[1])
                   for m in told)
        assert desk.fingerprint not in cli.ok("contact", "list", LIST).stdout.replace(" ", "")
        assert fingerprints_in(cli.home / "data" / "contacts") == {counsel.fingerprint}  # its key left too
        assert not {desk.fingerprint, counsel.fingerprint} & fingerprints_in(cli.home / "keys")  # never a member's
        assert submit(proc.port, REQUEST, request(bob, list_key, [f"x-approve: {qid}"]))[0] == 250
        proc.wait_log(rf"resend-refused qid={qid} ")
        late = sink.wait_for(seen + 3)[seen:]  # the approval's reply and its notice to the admins; alice's refusal
        assert not to(late, desk.email) and not to(late, sally.email)
        [refused] = to(late, alice.email)
        assert "desk@paper.example is not one of the list's contacts" in \
            text_of(read_reply(refused, alice, list_key, fingerprint)[1])
    [plain] = to(got, "plain@paper.example")
    assert plain.mail_from == OWNER
    signed = verify_reply(plain.data, list_key, fingerprint, tmp_path)  # signed by the list, gpg and sq agree
    assert signed["Reply-To"].addresses[0].addr_spec == OWNER and "The group's statement." in plain.data.decode()
    nothing_of(alice, message_id, plain.data)
    assert len(to(got, alice.email)) == len(to(got, sally.email)) == 1
