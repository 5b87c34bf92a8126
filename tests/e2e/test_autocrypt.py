"""Issue 15, point 4, end to end: every kind of mail a real `listserv serve` sends -- a welcome,
a post's copies, an urgent alert, a request's reply, mail to LIST-owner@ told to the admins, a
digest, the LIST-sendkey@ reply -- carries the list key in an Autocrypt header a client takes
(its addr is the From, its key data the list key with that one user id, under 10 KiB) and an
OpenPGP header with the key's fingerprint; none carries Autocrypt-Gossip, outside or inside."""

from __future__ import annotations

import base64
import email
import re
import subprocess
from email import policy
from pathlib import Path

from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.members_clients import decrypt, encrypted_part, verify_reply
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
STRANGER = "reporter@example.com"
# Every header field the list may write outside: nothing else (no member count, no gossip).
OUTER_FIELDS = {"from", "to", "subject", "date", "message-id", "in-reply-to", "references", "list-id",
                "list-post", "list-help", "list-owner", "list-unsubscribe", "precedence", "auto-submitted",
                "importance", "priority", "x-priority", "mime-version", "content-type", "autocrypt", "openpgp"}


def raw_field(data: bytes, name: str) -> bytes:
    """The field `name` as sent: its first line and every folded line after it."""
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    [found] = re.findall(rb"(?im)^" + name.encode() + rb":.*\r\n(?:[ \t].*\r\n)*", head)
    return found


def parsed_autocrypt(value: str) -> list[tuple[str, str]]:
    """Autocrypt Level 1: attributes split at ';', each NAME=VALUE; keydata's whitespace dropped."""
    items = [item.strip() for item in re.sub(r"\s*\r?\n[ \t]+", " ", value).split(";")]
    return [(name.strip(), data.strip()) for name, _, data in (item.partition("=") for item in items)]


def imported(keydata: bytes, scratch: Path) -> tuple[list[str], list[str], list[str]]:
    """What a fresh GnuPG home takes in from `keydata`: fingerprints, user ids, subkey usages."""
    scratch.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(scratch), "--import"], input=keydata, check=True,
                   capture_output=True)
    listed = subprocess.run(["gpg", "--batch", "--homedir", str(scratch), "--with-colons", "--list-keys"],
                            check=True, capture_output=True).stdout.decode()
    records = [line.split(":") for line in listed.splitlines()]
    fingerprints = [r[9] for r, before in zip(records[1:], records) if r[0] == "fpr" and before[0] == "pub"]
    return fingerprints, [r[9] for r in records if r[0] == "uid"], [r[11] for r in records if r[0] == "sub"]


def check_key_headers(copy, fingerprint: str, scratch: Path) -> email.message.EmailMessage:
    outer = email.message_from_bytes(copy.data, policy=policy.default)
    sender = outer["From"].addresses[0].addr_spec
    assert {name.lower() for name in outer.keys()} <= OUTER_FIELDS, sorted(outer.keys())
    assert b"autocrypt-gossip" not in copy.data.lower()
    field = raw_field(copy.data, "Autocrypt")
    assert len(field) < 10 * 1024
    [value] = outer.get_all("Autocrypt")
    found = parsed_autocrypt(str(value))
    assert [name for name, _ in found] == ["addr", "prefer-encrypt", "_list-recommendation", "keydata"]
    attributes = dict(found)
    assert attributes["addr"] == sender  # else a client ignores the header
    assert (attributes["prefer-encrypt"], attributes["_list-recommendation"]) == ("mutual", "mandatory")
    keydata = base64.b64decode(re.sub(r"\s", "", attributes["keydata"]), validate=True)
    fingerprints, uids, usages = imported(keydata, scratch)
    assert fingerprints == [fingerprint]
    assert len(uids) == 1 and email.utils.parseaddr(uids[0])[1] == sender
    assert usages == ["e"]  # the encryption subkey, bound
    assert outer["OpenPGP"] == f"id={fingerprint}; preference=signencrypt"
    return outer


def inner_of(copy, user, list_key: bytes, fingerprint: str) -> bytes:
    inner = decrypt(user, encrypted_part(copy.data), list_key, fingerprint)
    assert b"autocrypt-gossip" not in inner.lower()
    parsed = email.message_from_bytes(inner, policy=policy.default)
    assert all("Autocrypt-Gossip" not in part for part in parsed.walk())
    return inner


def request(user, list_key: bytes, *lines: str) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, ""])
    return mf.post(user, list_key, body=body, subject="request", to="news-request@example.org")


def stranger_mail(to: str, subject: str) -> bytes:
    return mf.crlf(f"From: A Reporter <{STRANGER}>\nTo: {to}\nSubject: {subject}\n"
                   f"Message-ID: <{subject.replace(' ', '-')}@example.com>\n"
                   f"Content-Type: text/plain; charset=utf-8\n\nHello.\n".encode())


def test_every_kind_of_mail_the_list_sends_carries_its_key_for_its_from_address_and_no_gossip(tmp_path, people):
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "bob": "digest"})
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    rita = people["rita"]
    cli.ok("member", "add", LIST, rita.email, "--key", write_key(tmp_path, rita), "--name", rita.name, "--welcome")
    users = {people[name].email: people[name] for name in ("alice", "bob", "rita")}
    kinds: list[tuple[str, str, object]] = []  # (kind, the From expected, the message)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        def expect(kind: str, sender: str, total: int) -> None:
            kinds.extend((kind, sender, copy) for copy in sink.wait_for(total)[len(kinds):total])

        expect("welcome", LIST, 1)
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, subject="Plans"))[0] == 250
        expect("post", LIST, 3)
        alert = mf.post(people["alice"], list_key, to="news+urgent@example.org", subject="Now")
        assert submit(proc.port, "news+urgent@example.org", alert)[0] == 250
        expect("alert", LIST, 6)
        assert submit(proc.port, "news-request@example.org", request(people["alice"], list_key, "x-status"))[0] == 250
        expect("request reply", "news-request@example.org", 7)
        assert submit(proc.port, "news-owner@example.org", stranger_mail("news-owner@example.org", "a tip"),
                      mail_from=STRANGER)[0] == 250
        expect("owner notice", "news-owner@example.org", 8)
        assert "queued" in cli.ok("digest", "send", LIST).stdout
        expect("digest", LIST, 9)
        assert submit(proc.port, "news-sendkey@example.org", stranger_mail("news-sendkey@example.org", "key please"),
                      mail_from=STRANGER)[0] == 250
        expect("sendkey reply", "news-sendkey@example.org", 10)
        proc.wait_log(r"delivered qid=\S+ sent=1 failed=0")
    assert len(sink.messages) == 10
    for index, (kind, sender, copy) in enumerate(kinds):
        outer = check_key_headers(copy, fingerprint, tmp_path / f"fresh-{index}")
        assert outer["From"].addresses[0].addr_spec == sender, kind
        if kind == "sendkey reply":
            assert outer.get_content_type() == "multipart/signed" and copy.mail_from in ("", "<>")
            (tmp_path / "verify").mkdir()  # the headers added on top leave the list's signature good
            verify_reply(copy.data, list_key, fingerprint, tmp_path / "verify")
            continue
        inner = inner_of(copy, users[copy.rcpt_tos[0]], list_key, fingerprint)
        if kind == "digest":
            assert b"Plans" in inner
        if kind == "alert":
            assert outer["X-Priority"] == "1"
    assert [kind for kind, _, _ in kinds].count("post") == 2 and {c.rcpt_tos[0] for k, _, c in kinds if k == "digest"} \
        == {people["bob"].email}
