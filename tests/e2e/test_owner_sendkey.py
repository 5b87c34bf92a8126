"""LIST-owner@ and LIST-sendkey@ end to end, over SMTP to `listserv serve`: anyone may write to
the admins, who each get the message re-encrypted to their own key and read it with their own
tool (GnuPG, Sequoia); anyone may ask for the list's key, and gets it once a day, signed by
the list, never to a null or automatic sender."""

from __future__ import annotations

import email
import json
from email import policy

import pytest

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.keys import make_gpg_user
from tests.helpers.members_clients import decrypt, encrypted_part, verify_reply
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
OWNER = "news-owner@example.org"
SENDKEY = "news-sendkey@example.org"
STRANGER = "reporter@example.com"


@pytest.fixture
def site(tmp_path, people):
    """news@ with admins bob (GnuPG, RSA) and sally (Sequoia); alice and rita are members."""
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "sally": "immediate",
                                                              "rita": "digest", "bob": "immediate"})
    for admin in ("bob", "sally"):
        cli.ok("member", "set", LIST, people[admin].email, "--role", "admin")
    return cli, list_key, fingerprint


def plain_letter(subject: str = "A tip for the admins", body: str = "Call me on the usual number.",
                 sender: str = STRANGER) -> bytes:
    return mf.crlf(f"From: A Reporter <{sender}>\nTo: {OWNER}\nSubject: {subject}\n"
                   f"Message-ID: <tip-1@example.com>\nDate: Tue, 01 Dec 2026 10:00:00 +0000\n"
                   f"Received: from [198.51.100.7] by mx.example.com\n"
                   f"Content-Type: text/plain; charset=utf-8\n\n{body}\n".encode())


def read_notice(copy, user, list_key, fingerprint) -> tuple[email.message.EmailMessage, email.message.EmailMessage]:
    """The admin's notice, decrypted with the admin's own tool (which checks the list's
    signature), and the message it carries."""
    inner = email.message_from_bytes(decrypt(user, encrypted_part(copy.data), list_key, fingerprint),
                                     policy=policy.default)
    [attached] = [part for part in inner.walk() if part.get_content_type() == "message/rfc822"]
    return inner, attached.get_payload(0)


def text_of(message) -> str:
    return "\n".join(part.get_content() for part in message.walk() if part.get_content_type() == "text/plain")


def admins_of(people):
    return {people["bob"].email: people["bob"], people["sally"].email: people["sally"]}


def test_an_outsiders_mail_reaches_every_admin_encrypted_to_each_and_nobody_else(site, people):
    cli, list_key, fingerprint = site
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, text = submit(proc.port, OWNER, plain_letter(), mail_from=STRANGER)
        assert code == 250 and "Queued as" in text
        copies = sink.wait_for(2)
        proc.wait_log(r"answered qid=\S+ kind=owner jobs=1")
    admins = admins_of(people)
    assert sorted(c.rcpt_tos[0] for c in copies) == sorted(admins)  # alice and rita get nothing
    for copy in copies:
        assert b"A tip for the admins" not in copy.data and b"Call me" not in copy.data  # nothing in clear
        outer = email.message_from_bytes(copy.data, policy=policy.default)
        assert outer["From"].addresses[0].addr_spec == OWNER
        inner, letter = read_notice(copy, admins[copy.rcpt_tos[0]], list_key, fingerprint)
        assert "FROM OUTSIDE THE LIST" in text_of(inner)
        assert inner["Subject"].endswith(f"From outside News: a message to {OWNER}")
        assert inner["Auto-Submitted"] == "auto-generated"
        assert letter["Subject"] == "A tip for the admins" and letter["From"].addresses[0].addr_spec == STRANGER
        assert letter["Message-ID"] == "<tip-1@example.com>"
        assert letter.get_content().strip() == "Call me on the usual number."
        assert letter["Received"] is None  # the sender's IP stays out of the list's mail
    log = proc.log
    assert STRANGER not in log and "A tip" not in log and "198.51.100.7" not in log


def test_mail_encrypted_to_the_list_key_by_an_outsider_is_opened_for_the_admins(site, people, tmp_path):
    cli, list_key, fingerprint = site
    source = make_gpg_user(tmp_path, "Source", "source@example.net")  # no member: not signed by one
    content = mf.crlf(b"Content-Type: text/plain; charset=utf-8\n\nThe documents are real.\n")
    raw = mf.message([f"From: {source.email}", f"To: {OWNER}", "Subject: ..."],
                     mf.encrypted_entity(mf.encrypt_only(source, list_key, content)))
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, OWNER, raw, mail_from=source.email)[0] == 250
        copies = sink.wait_for(2)
    bob = people["bob"]
    [copy] = [c for c in copies if c.rcpt_tos == (bob.email,)]
    inner, letter = read_notice(copy, bob, list_key, fingerprint)
    assert "encrypted to the list's key" in text_of(inner) and "FROM OUTSIDE THE LIST" in text_of(inner)
    assert letter.get_content().strip() == "The documents are real."


def test_a_members_signed_mail_to_the_admins_says_who_signed_it(site, people):
    cli, list_key, fingerprint = site
    alice = people["alice"]
    raw = mf.post(alice, list_key, body="I lost my phone; please pause me.", subject="Lost phone", to=OWNER)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, OWNER, raw, mail_from=alice.email)[0] == 250
        copies = sink.wait_for(2)
    sally = people["sally"]
    [copy] = [c for c in copies if c.rcpt_tos == (sally.email,)]
    inner, letter = read_notice(copy, sally, list_key, fingerprint)  # sally reads it with Sequoia
    assert inner["Subject"].endswith(f"Alice wrote to {OWNER}")
    assert f"signed by their pinned key ({alice.fingerprint})" in " ".join(text_of(inner).split())
    assert "OUTSIDE" not in text_of(inner)
    assert letter["Subject"] == "Lost phone" and "please pause me" in text_of(letter)


def test_list_owner_forwards_twenty_an_hour_and_then_answers_452(site, people):
    cli, _, _ = site
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        for number in range(20):
            code, _ = submit(proc.port, OWNER, plain_letter(subject=f"Letter {number}"), mail_from=STRANGER)
            assert code == 250, number
        code, text = submit(proc.port, OWNER, plain_letter(subject="One too many"), mail_from=STRANGER)
        assert (code, text) == (452, "4.7.0 The list's admins have had all the mail this address forwards "
                                     "in an hour; try again later.")
        sink.wait_for(40)
        proc.wait_log(r"refused ref=\S+ list=news@example.org reason=owner-rate")
    assert len(sink.messages) == 40
    [last] = [r for r in json.loads(cli.ok("rejections", LIST, "--json").stdout) if r["reason"] == "owner-rate"]
    assert last["reply"].startswith("452 4.7.0")


def test_list_owner_of_a_list_with_no_admin_and_an_oversized_letter_are_refused(tmp_path, people):
    cli, _, _ = make_site(tmp_path, people, {"alice": "immediate"})
    cli.ok("list", "set", LIST, "max_message_size_kb", "64")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, OWNER, plain_letter(), mail_from=STRANGER) == (
            550, "5.1.1 This list has no admin yet to receive mail.")
        cli.ok("member", "set", LIST, people["alice"].email, "--role", "admin")
        code, _ = submit(proc.port, OWNER, plain_letter(body=("x" * 70 + "\n") * 1024), mail_from=STRANGER)
        assert code == 552
        assert submit(proc.port, OWNER, plain_letter(), mail_from=STRANGER)[0] == 250
        [copy] = sink.wait_for(1)
    assert copy.rcpt_tos == (people["alice"].email,)


# -- LIST-sendkey@ -----------------------------------------------------------------------------

def key_request(sender: str = STRANGER, *extra: str) -> bytes:
    return mf.crlf("\n".join([f"From: {sender}", f"To: {SENDKEY}", "Subject: key please",
                              "Message-ID: <ask-1@example.com>", *extra, "", "Send me your key.", ""]).encode())


def test_anyone_gets_the_lists_key_signed_by_it_once_a_day_and_only_from_a_null_sender(site, tmp_path):
    cli, list_key, fingerprint = site
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, text = submit(proc.port, SENDKEY, key_request(), mail_from=STRANGER)
        assert code == 250 and "Queued as" in text
        [reply] = sink.wait_for(1)
        again = submit(proc.port, SENDKEY, key_request(), mail_from=STRANGER.upper())
        assert again == (250, "2.0.0 Received; no key is sent in reply to this message.")
        proc.wait_log(r"reason=sendkey-sender-rate")
        assert submit(proc.port, SENDKEY, key_request("other@example.net"), mail_from="other@example.net")[0] == 250
        sink.wait_for(2)
    assert [m.rcpt_tos for m in sink.messages] == [(STRANGER,), ("other@example.net",)]
    assert reply.mail_from in ("", "<>")  # RFC 3834: an automatic reply has a null sender
    message = verify_reply(reply.data, list_key, fingerprint, tmp_path)
    assert message["From"].addresses[0].addr_spec == SENDKEY and message["To"] == STRANGER
    assert message["Auto-Submitted"] == "auto-replied" and message["In-Reply-To"] == "<ask-1@example.com>"
    signed = message.get_payload(0)
    [key] = [p for p in signed.walk() if p.get_content_type() == "application/pgp-keys"]
    assert key.get_content().replace(b"\r\n", b"\n").strip() == list_key.strip()
    assert fingerprint in text_of(signed)
    log = proc.log
    assert STRANGER not in log and STRANGER.upper() not in log
    reasons = [r["reason"] for r in json.loads(cli.ok("rejections", LIST, "--json").stdout)]
    assert reasons == ["sendkey-sender-rate"]


@pytest.mark.parametrize("mail_from, extra, reason", [
    ("", (), "sendkey-null-sender"),
    (STRANGER, ("Auto-Submitted: auto-replied",), "sendkey-auto-submitted"),
    ("MAILER-DAEMON@example.com", (), "sendkey-auto-submitted"),
    ("news-request@example.org", (), "sendkey-auto-submitted"),
])
def test_no_key_goes_to_a_null_or_automatic_sender(site, mail_from, extra, reason):
    cli, _, _ = site
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, SENDKEY, key_request(STRANGER, *extra), mail_from=mail_from)[0] == 250
        proc.wait_log(rf"reason={reason}")
        assert submit(proc.port, SENDKEY, key_request("check@example.net"), mail_from="check@example.net")[0] == 250
        [only] = sink.wait_for(1)  # the worker ran; the first got nothing
    assert only.rcpt_tos == ("check@example.net",)
