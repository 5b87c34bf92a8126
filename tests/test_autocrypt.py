"""The list key's Autocrypt and OpenPGP headers: the header builder (listserv.autocrypt), the
minimised key (Keyring.minimal_key, real gpg) and the outbox that puts them on every job once."""

from __future__ import annotations

import base64
import email
import re
from email import policy
from pathlib import Path

import pytest

from listserv import autocrypt
from listserv.config import Home
from listserv.context import Context
from listserv.errors import KeyProblem
from listserv.keyring import Keyring
from listserv.model import MailingList, Member
from listserv.notices import notice

from tests.helpers.keys import run

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"


def attributes(value: str) -> list[tuple[str, str]]:
    """An Autocrypt header's attributes in order, as a client splits them (Level 1, 2.1)."""
    unfolded = re.sub(r"\r?\n[ \t]", " ", value)
    return [(name.strip(), data.strip()) for name, _, data in (item.partition("=") for item in unfolded.split(";"))]


def test_the_autocrypt_header_names_the_address_prefers_mutual_and_ends_with_the_key():
    keydata = bytes(range(256)) * 3
    field = autocrypt.autocrypt("news@example.org", keydata)
    assert field.startswith("Autocrypt: ")
    assert all(len(line) < 78 for line in field.split("\r\n"))
    assert all(line.startswith(" ") for line in field.split("\r\n")[1:])  # folded, RFC 5322
    found = attributes(field.removeprefix("Autocrypt: "))
    assert [name for name, _ in found] == ["addr", "prefer-encrypt", "_list-recommendation", "keydata"]
    assert dict(found)["addr"] == "news@example.org" and dict(found)["prefer-encrypt"] == "mutual"
    assert dict(found)["_list-recommendation"] == "mandatory"
    # Every attribute a client does not know is non-critical: it starts with an underscore.
    assert {name for name, _ in found if not name.startswith("_")} <= {"addr", "prefer-encrypt", "keydata"}
    assert base64.b64decode(re.sub(r"\s", "", dict(found)["keydata"])) == keydata


def test_openpgp_header_names_the_full_fingerprint():
    assert autocrypt.openpgp(FPR) == f"OpenPGP: id={FPR}; preference=signencrypt"


@pytest.mark.parametrize("size, kept", [(7000, True), (7700, False), (20000, False)])
def test_an_autocrypt_header_of_10_kib_or_more_is_left_out_and_the_openpgp_header_stays(size, kept):
    headers = autocrypt.key_headers("news@example.org", FPR, b"\x99" * size).decode()
    assert headers.endswith(autocrypt.openpgp(FPR) + "\r\n")
    assert headers.startswith("Autocrypt: addr=news@example.org;") is kept
    if kept:
        assert len(headers) - len(autocrypt.openpgp(FPR)) - 2 < autocrypt.MAX_HEADER


def test_no_key_data_no_autocrypt_header():
    assert autocrypt.key_headers("news-sendkey@example.org", FPR, None) == (autocrypt.openpgp(FPR) + "\r\n").encode()


def test_headers_go_at_the_end_of_the_header_and_replace_any_of_the_same_name():
    message = (b"From: News <news@example.org>\r\nAutocrypt: addr=old@example.org; keydata=\r\n AAAA\r\n"
               b"Content-Type: multipart/encrypted;\r\n boundary=\"x\"\r\n\r\nAutocrypt: body text\r\n")
    headers = autocrypt.key_headers("news@example.org", FPR, b"key")
    out = autocrypt.with_headers(message, headers)
    head, body = out.split(b"\r\n\r\n", 1)
    assert body == b"Autocrypt: body text\r\n"  # the body is not touched
    assert head.endswith(headers.rstrip(b"\r\n"))
    parsed = email.message_from_bytes(out, policy=policy.default)
    assert len(parsed.get_all("Autocrypt")) == 1 and "old@" not in str(parsed["Autocrypt"])
    assert parsed.get_content_type() == "multipart/encrypted" and parsed.get_boundary() == "x"
    assert autocrypt.with_headers(out, headers) == out  # twice is once


def test_sender_is_the_from_address():
    assert autocrypt.sender(b"To: a@b.c\r\nFrom: =?utf-8?q?N=C3=BC?= <News-Request@Example.org>\r\n\r\nx") \
        == "news-request@example.org"
    with pytest.raises(ValueError):
        autocrypt.sender(b"From: a@b.c")  # no end of header


# -- the key, minimised by gpg ------------------------------------------------------------------

class CountingKeyring(Keyring):
    def __init__(self, home: Path):
        super().__init__(home)
        self.runs: list[str] = []

    def _run(self, what, args, stdin=b"", **kwargs):
        self.runs.append(what)
        return super()._run(what, args, stdin, **kwargs)


@pytest.fixture(scope="module")
def list_key(tmp_path_factory) -> tuple[CountingKeyring, MailingList]:
    home = tmp_path_factory.mktemp("autocrypt-keys")
    home.chmod(0o700)
    keyring = CountingKeyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    mailing_list = MailingList("news@example.org", "News", fingerprint)
    keyring.add_user_ids({fingerprint: mailing_list.key_user_ids})
    yield keyring, mailing_list
    keyring.stop_agent()


def shown(data: bytes, scratch: Path) -> list[list[str]]:
    """The key `data` as a fresh GnuPG home takes it in: its colon listing."""
    scratch.mkdir(mode=0o700)
    run(["gpg", "--batch", "--homedir", str(scratch), "--import"], input=data)
    listed = run(["gpg", "--batch", "--homedir", str(scratch), "--with-colons", "--list-keys"]).stdout.decode()
    return [line.split(":") for line in listed.splitlines()]


@pytest.mark.parametrize("address", ["news@example.org", "news-request@example.org", "news-owner@example.org",
                                     "news-sendkey@example.org"])
def test_the_minimal_key_holds_the_one_user_id_of_the_address_and_the_encryption_subkey(list_key, address, tmp_path):
    keyring, mailing_list = list_key
    records = shown(keyring.minimal_key(mailing_list.fingerprint, address), tmp_path / "fresh")
    assert [r[9] for r in records if r[0] == "fpr"][0] == mailing_list.fingerprint
    assert [r[9] for r in records if r[0] == "uid"] == [f"News <{address}>"]
    assert [r[11] for r in records if r[0] == "sub"] == ["e"]
    assert len(keyring.minimal_key(mailing_list.fingerprint, address.upper())) < 1024  # an ed25519 key: small


def test_the_minimal_key_is_made_once_until_the_keyring_changes(list_key, people):
    keyring, mailing_list = list_key
    first = keyring.minimal_key(mailing_list.fingerprint, "news@example.org")
    keyring.runs.clear()
    for _ in range(100):  # as many copies, digests and notices as you like: no gpg run
        assert keyring.minimal_key(mailing_list.fingerprint, "news@example.org") == first
    assert keyring.runs == []
    keyring.import_keys(people["alice"].public_key)  # the keyring changed: asked again, once
    keyring.runs.clear()
    keyring.minimal_key(mailing_list.fingerprint, "news@example.org")
    keyring.minimal_key(mailing_list.fingerprint, "news@example.org")
    assert keyring.runs == ["export the list's key", "read the list's key"]


@pytest.mark.parametrize("address, fragment", [
    ("news-bounces@example.org", "has no user id"),
    ("news@example.org && uid =~ x", "cannot name a user id"),
    ("news@example.org||x", "cannot name a user id"),
])
def test_an_address_the_key_has_no_user_id_for_gets_no_key(list_key, address, fragment):
    keyring, mailing_list = list_key
    with pytest.raises(KeyProblem, match=re.escape(fragment)):
        keyring.minimal_key(mailing_list.fingerprint, address)


def test_a_revoked_user_id_gets_no_key_and_an_unknown_key_none_either(tmp_path):
    home = tmp_path / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    keyring.add_user_ids({fingerprint: MailingList("news@example.org", "News", fingerprint).key_user_ids})
    run(["gpg", "--homedir", str(home), "--batch", "--quick-revoke-uid", fingerprint, "News <news-owner@example.org>"])
    with pytest.raises(KeyProblem, match="has no user id for news-owner@example.org"):
        keyring.minimal_key(fingerprint, "news-owner@example.org")
    with pytest.raises(KeyProblem, match="not in the keyring"):
        keyring.minimal_key("A" * 40, "news@example.org")
    keyring.stop_agent()


# -- the outbox: once per job, on every kind ------------------------------------------------------

def test_a_notice_to_many_carries_the_headers_once_in_its_shared_envelope_with_one_export(cli, news, people):
    ctx = Context.open(Home(cli.home), keyring=CountingKeyring(Home(cli.home).keys))
    mailing_list = ctx.store.read().require_list(news)
    users = [people[name] for name in ("alice", "bob", "sally")]
    for user in users:
        ctx.keyring.import_keys(user.public_key)
    recipients = tuple(Member(news, user.email, user.fingerprint, user.name) for user in users)
    ctx.keyring.runs.clear()
    told = notice(ctx.templates, mailing_list, recipients, "notice-bounces.txt.j2", speaker=mailing_list.owner_address,
                  member=recipients[0])
    [job] = ctx.outbox.notices([told])
    assert ctx.keyring.runs.count("export the list's key") == 1  # not one per member
    prefix, _ = ctx.outgoing.envelope(job)
    head = email.message_from_bytes(prefix.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=policy.default)
    [value] = head.get_all("Autocrypt")
    assert dict(attributes(str(value)))["addr"] == mailing_list.owner_address == head["From"].addresses[0].addr_spec
    assert head["OpenPGP"] == f"id={mailing_list.fingerprint}; preference=signencrypt"
    assert b"Autocrypt-Gossip" not in prefix
    ctx.keyring.stop_agent()


def test_a_from_the_key_has_no_user_id_for_gets_the_openpgp_header_only(cli, news):
    home = Home(cli.home)
    ctx = Context.open(home)
    mailing_list = ctx.store.read().require_list(news)
    run(["gpg", "--homedir", str(home.keys), "--batch", "--quick-revoke-uid", mailing_list.fingerprint,
         "News <news-owner@example.org>"])
    for sender in ("news-owner@example.org", "someone@example.net"):  # a revoked user id; not the list's
        out = ctx.outbox.with_key_headers(mailing_list, f"From: News <{sender}>\r\nTo: x@example.net\r\n\r\nbody".encode())
        assert out == f"From: News <{sender}>\r\nTo: x@example.net\r\n".encode() \
            + autocrypt.openpgp(mailing_list.fingerprint).encode() + b"\r\n\r\nbody"
    assert b"Autocrypt: addr=news@example.org;" in ctx.outbox.with_key_headers(mailing_list, b"From: news@example.org\r\n\r\n")
    ctx.keyring.stop_agent()
