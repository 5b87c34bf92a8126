"""Joining by invitation, end to end through one real `listserv serve` and a sink: an admin's
x-invite, the invitee's x-join signed by their own key (GnuPG, Sequoia, RNP) and carrying it,
the challenge encrypted to that key, x-confirm, an admin's x-approve-join, and then a post by
the new member. Every bad x-join gets the one uniform answer: the same SMTP reply as a good
one, and no mail at all.

One home and one server for the module; each test counts the sink's mail from where it started."""

from __future__ import annotations

import email
import re
import subprocess
import time
from email import policy

import pytest

from listserv.config import Home
from listserv.store import Store
from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.keys import make_gpg_user, make_rnp_user, make_sq_user
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
CODE = re.compile(r"(?:Invitation code|x-confirm|x-approve-join): ([A-Z2-7]{4}(?:-[A-Z2-7]{1,4})+)")
QUEUED = re.compile(r"Queued as \S+")
REQUEST = "news-request@example.org"
NOT_ACCEPTED = "5.7.1 Not accepted: this list takes only posts signed by a current member's key."


class Site:
    def __init__(self, cli, list_key, fingerprint, sink, proc, users):
        self.cli, self.list_key, self.fingerprint, self.sink, self.proc = cli, list_key, fingerprint, sink, proc
        self.users = users

    def send(self, user, lines, expect: int = 1):
        """Submit a request signed by `user` and wait for the `expect` mails it causes; those mails."""
        before = len(self.sink.messages)
        assert submit(self.proc.port, REQUEST, request(user, self.list_key, *lines))[0] == 250
        return self.sink.wait_for(before + expect)[before:]

    def read(self, copy, user) -> str | None:
        """The text of `copy` as `user`'s own tool reads it; None when it cannot decrypt it."""
        try:
            inner = decrypt(user, encrypted_part(copy.data), self.list_key, self.fingerprint)
        except (subprocess.CalledProcessError, AssertionError):
            return None
        parsed = email.message_from_bytes(inner, policy=policy.default)
        return "\n".join(p.get_content() for p in parsed.walk() if p.get_content_type() == "text/plain")


def request(user, list_key, *lines: str) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, ""])
    return mf.post(user, list_key, body=body, subject="request", to=REQUEST)


def key_file(data: bytes) -> bytes:
    head = 'Content-Type: application/pgp-keys; name="key.asc"\r\nContent-Disposition: attachment; filename="key.asc"\r\n'
    return (head + "\r\n").encode() + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    base = tmp_path_factory.mktemp("invites")
    cast = {"bob": people["bob"], "alice": make_gpg_user(base, "Alice", "alice@example.org"),
            "ivy": make_gpg_user(base, "Ivy", "ivy@example.net"),
            "sam": make_sq_user(base, "Sam", "sam@example.net"),
            "rae": make_rnp_user(base, "Rae", "rae@example.net"),
            "eve": make_gpg_user(base, "Eve", "eve@example.net"),
            "mute": make_gpg_user(base, "Mute", "mute@example.net", encrypt=False),
            "lee": make_gpg_user(base, "Lee", "lee@example.net"), "otto": make_gpg_user(base, "Otto", "otto@example.net"),
            "zed": make_gpg_user(base, "Zed", "zed@example.net")}
    cli, list_key, fingerprint = make_site(base, cast, {"bob": "immediate"})
    cli.ok("member", "add", LIST, cast["alice"].email, "--key", write_key(base, cast["alice"]), "--name", "Alice")
    cli.ok("member", "set", LIST, cast["bob"].email, "--role", "admin")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        yield Site(cli, list_key, fingerprint, sink, proc, cast)


def invite(site, *args) -> str:
    reply, = site.send(site.users["bob"], [f"x-invite {' '.join(args)}".strip()])
    return CODE.search(site.read(reply, site.users["bob"])).group(1)


def join(site, user, code: str, extra: str = "") -> str:
    """Submit x-join signed by `user` with their key attached; the SMTP reply, its queue id masked."""
    body = f"x-list-name: {LIST}\nx-join: {code}{extra}\n"
    inner = mf.protected(user, REQUEST, "join", {}, mf.text_part(body), key_file(user.public_key))
    outer = mf.outer_subject(mf.headers(user, to=REQUEST, subject="join"), "...")
    raw = mf.message(outer, mf.encrypted_entity(mf.sign_and_encrypt(user, site.list_key, inner)))
    status, text = submit(site.proc.port, REQUEST, raw)
    assert status == 250, (text, site.cli.json("rejections", LIST)[-1:])
    return QUEUED.sub("Queued as QID", text)


def settled(site, count: int) -> None:
    """Wait until the server has run `count` requests (the request log says so)."""
    for _ in range(600):
        if len(site.cli.json("requests", LIST)) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the requests were not run")


@pytest.mark.parametrize("who", ["ivy", "sam", "rae"])  # GnuPG, Sequoia, RNP
def test_a_full_invitation_pins_the_invitee_after_proof_and_approval(site, who):
    u = site.users
    bob, invitee = u["bob"], u[who]
    code = invite(site, f"name={invitee.name}", "mode=digest")
    before = len(site.sink.messages)
    join(site, invitee, code)
    challenge, = site.sink.wait_for(before + 1)[before:]
    assert challenge.rcpt_tos == (invitee.email,)
    text = site.read(challenge, invitee)
    assert text is not None and invitee.fingerprint in text
    assert site.read(challenge, bob) is None  # encrypted to the invitee's key only
    answer = CODE.search(text).group(1)
    assert invitee.email not in {m["email"] for m in site.cli.json("member", "list", LIST)}

    confirmed, asked = site.send(invitee, [f"x-confirm: {answer}"], expect=2)  # signed by the invitee's key
    if confirmed.rcpt_tos != (invitee.email,):
        confirmed, asked = asked, confirmed
    assert "Confirmed: you hold the key" in site.read(confirmed, invitee)
    assert asked.rcpt_tos == (bob.email,)
    notice = site.read(asked, bob)
    approval = CODE.search(notice).group(1)
    assert invitee.fingerprint in notice and answer not in notice
    assert invitee.email not in {m["email"] for m in site.cli.json("member", "list", LIST)}  # not yet

    told = site.send(bob, [f"x-approve-join: {approval}"], expect=2)  # the reply, the admins' notice
    assert any(f"{invitee.name} joined {LIST}" in (site.read(m, bob) or "") for m in told)
    pinned = {m["email"]: m for m in site.cli.json("member", "list", LIST)}[invitee.email]
    assert pinned["fingerprint"] == invitee.fingerprint and pinned["mode"] == "digest"
    assert pinned["name"] == invitee.name
    # Now a member: a post is taken like anyone's.
    before = len(site.sink.messages)
    assert submit(site.proc.port, LIST, mf.post(invitee, site.list_key, body="hello"))[0] == 250
    copies = site.sink.wait_for(before + 2)[before:]  # bob and alice take posts at once; the invitee digests
    assert {c.rcpt_tos for c in copies} == {(bob.email,), (u["alice"].email,)}


def test_every_bad_join_gets_the_same_answer_and_no_mail(site):
    u = site.users
    runs = len(site.cli.json("requests", LIST))
    used = invite(site)
    join(site, u["eve"], used)  # good: its challenge comes
    site.sink.wait_for(len(site.sink.messages) + 1)
    expired = invite(site)
    with Store(Home(site.cli.home).database).transaction() as tx:  # as if 72 hours had passed
        for doc in tx.invites(LIST):
            if doc["state"] == "invited":
                tx.put_invite({**doc, "expires": time.time() - 1})
    fresh = invite(site)
    runs += 4
    settled(site, runs)
    before = len(site.sink.messages)
    answers = {
        "wrong code": join(site, u["eve"], "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG"),
        "expired code": join(site, u["eve"], expired),
        "second x-join for the same code": join(site, u["eve"], used),
        "the key of a member": join(site, u["alice"], fresh),
        "a key that cannot encrypt": join(site, u["mute"], fresh),
    }
    settled(site, runs + len(answers))
    assert len(set(answers.values())) == 1, answers  # byte for byte the same
    assert next(iter(answers.values())).startswith("2.0.0 Queued as")
    time.sleep(1)  # a mail, if one were sent, would be on its way by now
    assert len(site.sink.messages) == before
    # The code nobody could use is still good: none of the bad tries used it up.
    join(site, u["lee"], fresh)
    site.sink.wait_for(before + 1)
    time.sleep(0.5)
    assert [m.rcpt_tos for m in site.sink.messages[before:]] == [(u["lee"].email,)]


def test_a_challenge_answered_by_another_key_is_an_outsiders_request(site):
    u = site.users
    code = invite(site)
    before = len(site.sink.messages)
    join(site, u["otto"], code)
    challenge, = site.sink.wait_for(before + 1)[before:]
    answer = CODE.search(site.read(challenge, site.users["otto"])).group(1)
    assert submit(site.proc.port, REQUEST, request(u["zed"], site.list_key, f"x-confirm: {answer}")) == \
        (550, NOT_ACCEPTED)
    # The invitee's key may send x-confirm only, nothing else.
    assert submit(site.proc.port, REQUEST, request(site.users["otto"], site.list_key, "x-status")) == \
        (550, NOT_ACCEPTED)


def test_only_an_admin_may_invite(site):
    alice = site.users["alice"]
    reply, = site.send(alice, ["x-invite name=Mallory"])
    assert "only the list's admins may use x-invite" in site.read(reply, alice)
    code = site.cli.json("invite", LIST, "--name", "Cli")["code"]
    assert CODE.search(f"Invitation code: {code}")
