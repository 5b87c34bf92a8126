"""listserv.stages.forward: what the admins read of mail to LIST-owner@, and what they are told
of its sender -- with a real list keyring and real senders' keys."""

from __future__ import annotations

import email
from email import policy

import pytest

from listserv.errors import Malformed, UnknownRecipient
from listserv.keyring import Keyring
from listserv.model import Member
from listserv.stages.forward import check_letter, read_letter
from tests.helpers import mail as mf
from tests.helpers.keys import make_gpg_user

OWNER = "news-owner@example.org"


@pytest.fixture(scope="module")
def news(tmp_path_factory, people):
    home = tmp_path_factory.mktemp("listserv") / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    keyring.generate_list_key("tips@example.org", "Tips")  # another list of the same home
    keyring.import_keys(people["alice"].public_key)
    alice = people["alice"]
    members = {alice.fingerprint: Member("news@example.org", alice.email, alice.fingerprint, "Alice")}
    return Ring(keyring, fingerprint), keyring.export(fingerprint).encode(), members


class Ring:
    """The home's keyring and the list whose LIST-owner@ the mail reached."""

    def __init__(self, keyring: Keyring, fingerprint: str):
        self.keyring, self.fingerprint = keyring, fingerprint

    def export_other(self) -> bytes:
        [other] = [k.fingerprint for k in self.keyring.listed(secret=True) if k.fingerprint != self.fingerprint]
        return self.keyring.export(other).encode()


def parsed(letter) -> email.message.EmailMessage:
    return email.message_from_bytes(letter.message, policy=policy.default)


def test_plain_mail_is_from_outside_with_its_own_headers_and_none_of_its_path(news):
    keyring, _, members = news
    raw = mf.crlf(b"From: Someone <someone@example.com>\nReceived: from [203.0.113.9]\nX-Mailer: Foo\n"
                  b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nTo: news-owner@example.org\n"
                  b"Content-Type: text/plain; charset=utf-8\n\nHello admins.\n")
    letter = read_letter(raw, keyring.keyring, keyring.fingerprint, members)
    assert (letter.origin, letter.signer, letter.encrypted) == ("outside", None, False)
    message = parsed(letter)
    assert message["Subject"] == "Grüße" and message["From"].addresses[0].addr_spec == "someone@example.com"
    assert message["Received"] is None and message["X-Mailer"] is None
    assert message.get_content().strip() == "Hello admins."


def test_a_members_signed_and_encrypted_letter_names_them_and_is_read_in_clear(news, people):
    keyring, list_key, members = news
    raw = mf.post(people["alice"], list_key, body="From a member.", subject="Inside", to=OWNER)
    letter = read_letter(raw, keyring.keyring, keyring.fingerprint, members)
    assert (letter.origin, letter.signer.name, letter.encrypted) == ("member", "Alice", True)
    assert parsed(letter)["Subject"] == "Inside"  # the protected Subject, not the outer "..."
    assert b"From a member." in letter.message


def test_a_signature_by_a_key_that_is_no_members_vouches_for_nothing(news, people):
    keyring, list_key, members = news
    keyring.keyring.import_keys(people["mallory"].public_key)
    raw = mf.post(people["mallory"], list_key, body="Trust me, I am Alice.", subject="Hi", to=OWNER)
    letter = read_letter(raw, keyring.keyring, keyring.fingerprint, members)
    assert (letter.origin, letter.signer) == ("outside", None)
    assert b"Trust me" in letter.message


def test_encrypted_to_the_list_but_unsigned_is_opened_and_to_another_key_stays_sealed(news, people, tmp_path):
    keyring, list_key, members = news
    source = make_gpg_user(tmp_path, "Source", "source@example.net")
    content = mf.crlf(b"Content-Type: text/plain\n\nSecret tip.\n")
    raw = mf.message(["From: source@example.net", f"To: {OWNER}", "Subject: ..."],
                     mf.encrypted_entity(mf.encrypt_only(source, list_key, content)))
    letter = read_letter(raw, keyring.keyring, keyring.fingerprint, members)
    assert (letter.origin, letter.encrypted) == ("outside", True) and b"Secret tip." in letter.message
    elsewhere = mf.message(["From: source@example.net", f"To: {OWNER}", "Subject: ..."],
                           mf.encrypted_entity(mf.encrypt_only(source, source.public_key, content)))
    sealed = read_letter(elsewhere, keyring.keyring, keyring.fingerprint, members)
    assert sealed.origin == "sealed" and b"Secret tip." not in sealed.message
    assert b"-----BEGIN PGP MESSAGE-----" in sealed.message


def test_a_list_without_admins_or_mail_that_is_no_mime_is_refused_before_the_250():
    admin = (Member("news@example.org", "a@example.org", "A" * 40, "A", role="admin"),)
    with pytest.raises(UnknownRecipient) as refused:
        check_letter(b"Subject: x\r\n\r\nx\r\n", ())
    assert refused.value.smtp_reply == "550 5.1.1 This list has no admin yet to receive mail."
    with pytest.raises(Malformed):
        check_letter(b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n", admin)
    check_letter(b"Subject: x\r\n\r\nx\r\n", admin)


def test_mail_encrypted_to_another_list_of_the_home_stays_sealed_for_these_admins(news, people, tmp_path):
    """Every list's key is in one keyring: the admins of news@ must not read, by having it sent
    to news-owner@, what someone encrypted to tips@ -- not even when it also names news@'s key."""
    keyring, list_key, members = news
    source = make_gpg_user(tmp_path, "Source", "source@example.net")
    content = mf.crlf(b"Content-Type: text/plain\n\nFor tips only.\n")
    raw = mf.message(["From: source@example.net", f"To: {OWNER}", "Subject: ..."],
                     mf.encrypted_entity(mf.encrypt_only(source, keyring.export_other(), content)))
    letter = read_letter(raw, keyring.keyring, keyring.fingerprint, members)
    assert letter.origin == "sealed" and b"For tips only." not in letter.message
    signed = mf.post(people["alice"], keyring.export_other(), body="A post for tips.", subject="x", to=OWNER)
    letter = read_letter(signed, keyring.keyring, keyring.fingerprint, members)
    assert letter.origin == "sealed" and b"A post for tips." not in letter.message


def test_an_armored_message_pasted_into_the_body_is_opened(news, tmp_path):
    keyring, list_key, members = news
    source = make_gpg_user(tmp_path, "Source", "source@example.net")
    armored = mf.encrypt_only(source, list_key, b"Pasted from gpg -ea.\n")
    raw = mf.crlf(b"From: source@example.net\nSubject: tip\nContent-Type: text/plain\n\n" + armored)
    letter = read_letter(raw, keyring.keyring, keyring.fingerprint, members)
    assert (letter.origin, letter.encrypted) == ("outside", True)
    assert parsed(letter).get_content().strip() == "Pasted from gpg -ea."
