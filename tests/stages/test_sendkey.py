"""listserv.stages.sendkey: who may get the list's key back (RFC 3834), and the signed reply."""

from __future__ import annotations

import email
from email import policy

import pytest

from listserv import mime
from listserv.errors import Unanswered
from listserv.keyring import Keyring
from listserv.model import MailingList
from listserv.stages.sendkey import KeyRequest, key_reply, key_request, sender_digest
from listserv.templates import Templates
from tests.helpers.keys import run

SECRET = b"k" * 32


def ask(*headers: str) -> bytes:
    return "\r\n".join(["From: x@example.com", "Message-ID: <m1@example.com>", *headers, "", "key?", ""]).encode()


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    home = tmp_path_factory.mktemp("listserv") / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    return keyring, MailingList("news@example.org", "News", fingerprint)


@pytest.mark.parametrize("sender, headers, reason", [
    ("", (), "sendkey-null-sender"),
    ("<>", (), "sendkey-null-sender"),
    ("x@example.com", ("Auto-Submitted: auto-generated",), "sendkey-auto-submitted"),
    ("x@example.com", ("Auto-Submitted: Auto-Replied; owner-email=x@example.com",), "sendkey-auto-submitted"),
    ("MAILER-DAEMON@mx.example.com", (), "sendkey-auto-submitted"),
    ("news-bounces+abc@example.org", (), "sendkey-auto-submitted"),  # the list's own address
    ("news+urgent@example.org", (), "sendkey-auto-submitted"),
    ("not an address", (), "sendkey-bad-sender"),
])
def test_no_key_goes_to_a_null_automatic_or_own_sender(news, sender, headers, reason):
    _, ml = news
    with pytest.raises(Unanswered) as unanswered:
        key_request(ask(*headers), sender, ml, SECRET)
    assert unanswered.value.reason == reason
    assert unanswered.value.smtp_reply == "250 2.0.0 Received; no key is sent in reply to this message."


def test_a_person_gets_an_answer_and_the_rate_records_hold_a_digest_not_the_address(news):
    _, ml = news
    request = key_request(ask("Auto-Submitted: no"), "<Reporter@Example.com>", ml, SECRET)
    assert request.address == "Reporter@Example.com" and request.message_id == "<m1@example.com>"
    assert request.digest == sender_digest(SECRET, ml, "reporter@example.com") and "reporter" not in request.digest
    assert sender_digest(SECRET, MailingList("tips@example.org", "T", "A" * 40), request.address) != request.digest
    assert KeyRequest.unsealed(request.sealed(), SECRET, ml) == request


def test_the_reply_is_the_lists_key_under_its_own_detached_signature(news, tmp_path):
    keyring, ml = news
    request = KeyRequest("reporter@example.com", "d", "<m1@example.com>")
    raw = key_reply(request, ml, Templates(), keyring)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout
    message = email.message_from_bytes(raw, policy=policy.default)
    assert (message["To"], message["In-Reply-To"], message["Auto-Submitted"]) == \
        ("reporter@example.com", "<m1@example.com>", "auto-replied")
    signed, signature = mime.body_parts(b"\r\n" + raw.split(b"\r\n\r\n", 1)[1], message.get_boundary())
    (tmp_path / "data").write_bytes(signed)
    (tmp_path / "sig").write_bytes(signature.split(b"\r\n\r\n", 1)[1])
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    run(["gpg", "--batch", "--homedir", str(home), "--import"], input=keyring.export(ml.fingerprint).encode())
    out = run(["gpg", "--batch", "--homedir", str(home), "--status-fd", "1", "--verify", str(tmp_path / "sig"),
               str(tmp_path / "data")])
    assert f"VALIDSIG {ml.fingerprint}" in out.stdout.decode()
    tampered = signed.replace(ml.fingerprint.encode(), b"0" * 40)
    (tmp_path / "data").write_bytes(tampered)
    assert run(["gpg", "--batch", "--homedir", str(home), "--verify", str(tmp_path / "sig"), str(tmp_path / "data")],
               check=False).returncode != 0
