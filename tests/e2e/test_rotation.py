"""A member's change to a new key, end to end through one real `listserv serve` and a sink:
x-key-change signed by the current key, the code encrypted to the new key only, x-confirm,
an admin's x-approve-key, and then copies readable only with the new key. Keys from GnuPG,
Sequoia and RNP. Every refusal leaves the pin as it was.

One home and one server for the module: each test uses members of its own, and counts the
mail the sink got from where it started."""

from __future__ import annotations

import email
import re
import subprocess
from email import policy

import pytest

from listserv.config import Home
from listserv.store import Store
from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.keys import make_gpg_key, make_gpg_user, make_rnp_user, make_sq_user
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"
NOT_ACCEPTED = "5.7.1 Not accepted: this list takes only posts signed by a current member's key."
CODE = re.compile(r"x-(?:confirm|approve-key): ([A-Z2-7]{4}(?:-[A-Z2-7]{1,4})+)")


class Site:
    def __init__(self, cli, list_key, fingerprint, sink, proc, users):
        self.cli, self.list_key, self.fingerprint, self.sink, self.proc = cli, list_key, fingerprint, sink, proc
        self.users = users

    def send(self, user, lines, keys=(), expect: int = 1):
        """Submit a request and wait for the `expect` mails it causes; those mails."""
        before = len(self.sink.messages)
        raw = request_with_keys(user, self.list_key, lines, list(keys)) if keys else request(user, self.list_key, *lines)
        assert submit(self.proc.port, REQUEST, raw)[0] == 250
        return self.sink.wait_for(before + expect)[before:]

    def read(self, copy, user) -> str | None:
        """The text of `copy` as `user`'s own tool reads it; None when it cannot decrypt it."""
        try:
            inner = decrypt(user, encrypted_part(copy.data), self.list_key, self.fingerprint)
        except (subprocess.CalledProcessError, AssertionError):
            return None
        return text_of(mf_parse(inner))

    def pins(self) -> dict[str, str]:
        return {email: m["fingerprint"] for email, m in members(self.cli).items()}

    def in_keyring(self, fingerprint: str) -> bool:
        return subprocess.run(["gpg", "--homedir", str(self.cli.home / "keys"), "--list-keys", fingerprint],
                              capture_output=True, check=False).returncode == 0


def mf_parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)


def text_of(inner) -> str:
    return "\n".join(part.get_content() for part in inner.walk() if part.get_content_type() == "text/plain")


def request(user, list_key, *lines: str) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, "", "-- ", "sent from my phone"])
    return mf.post(user, list_key, body=body, subject="request", to=REQUEST)


def members(cli) -> dict[str, dict]:
    return {m["email"]: m for m in cli.json("member", "list", LIST)}


def key_file(data: bytes) -> bytes:
    head = 'Content-Type: application/pgp-keys; name="key.asc"\r\nContent-Disposition: attachment; filename="key.asc"\r\n'
    return (head + "\r\n").encode() + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def request_with_keys(user, list_key, lines: list[str], keys: list[bytes]) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, ""])
    inner = mf.protected(user, REQUEST, "request", {}, mf.text_part(body), *[key_file(k) for k in keys])
    outer = mf.outer_subject(mf.headers(user, to=REQUEST, subject="request"), "...")
    return mf.message(outer, mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner, to_self=True)))


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    base = tmp_path_factory.mktemp("rotation")
    cast = {"bob": people["bob"], "alice": make_gpg_user(base, "Alice", "alice@example.org"),
            "sally": make_sq_user(base, "Sally", "sally@example.net"),
            "rita": make_rnp_user(base, "Rita", "rita@example.net"),
            "vera": make_gpg_user(base, "Vera", "vera@example.org")}
    cli, list_key, fingerprint = make_site(base, cast, {"bob": "immediate"})
    for key in ("alice", "sally", "rita", "vera"):
        cli.ok("member", "add", LIST, cast[key].email, "--key", write_key(base, cast[key]), "--name", cast[key].name)
    cli.ok("member", "set", LIST, cast["bob"].email, "--role", "admin")
    cast["alice2"] = make_gpg_user(base / "new", "Alice", "alice@example.org")  # the same address, a new key
    cast["sally2"] = make_rnp_user(base / "new", "Sally", "sally@example.net")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        yield Site(cli, list_key, fingerprint, sink, proc, cast)


def only(copies, email):
    found = [c for c in copies if c.rcpt_tos == (email,)]
    assert found, [c.rcpt_tos for c in copies]
    return found


def test_a_rotation_with_proof_and_admin_approval_then_copies_only_the_new_key_reads(site):
    u = site.users
    alice, alice2, bob, sally = u["alice"], u["alice2"], u["bob"], u["sally"]
    reply, challenge = site.send(alice, ["x-key-change"], [alice2.public_key], expect=2)
    assert {reply.rcpt_tos, challenge.rcpt_tos} == {(alice.email,)}
    if site.read(challenge, alice2) is None:  # which is which: only the new key opens the challenge
        reply, challenge = challenge, reply
    assert "A code was sent to you encrypted to the new key" in site.read(reply, alice)
    code = CODE.search(site.read(challenge, alice2)).group(1)
    assert site.read(challenge, alice) is None  # the current key cannot read the code
    assert site.pins()[alice.email] == alice.fingerprint  # nothing pinned yet

    # The new key may do one thing before it is pinned: x-confirm. Anything else is the uniform 550.
    assert submit(site.proc.port, REQUEST, request(alice2, site.list_key, "x-status")) == (550, NOT_ACCEPTED)
    assert submit(site.proc.port, LIST, mf.post(alice2, site.list_key, body="hi")) == (550, NOT_ACCEPTED)

    confirmed, asked = site.send(alice2, [f"x-confirm: {code.lower()}"], expect=2)  # signed by the NEW key
    if confirmed.rcpt_tos != (alice.email,):
        confirmed, asked = asked, confirmed
    assert "Confirmed: you hold the key" in site.read(confirmed, alice2)  # the reply goes to the key that signed
    assert asked.rcpt_tos == (bob.email,)
    notice = site.read(asked, bob)
    approval = CODE.search(notice).group(1)
    assert alice.fingerprint in notice and alice2.fingerprint in notice and code not in notice
    assert site.pins()[alice.email] == alice.fingerprint  # still: the admins have not approved

    told = site.send(bob, [f"x-approve-key: {approval}"], expect=6)  # reply, admins, alice, sally, rita, vera
    assert sorted(c.rcpt_tos[0] for c in told) == sorted(
        [bob.email, bob.email, alice.email, sally.email, u["rita"].email, u["vera"].email])
    now = members(site.cli)[alice.email]
    assert (now["fingerprint"], now["previous_fingerprints"]) == (alice2.fingerprint, [alice.fingerprint])
    assert not site.in_keyring(alice.fingerprint) and site.in_keyring(alice2.fingerprint)
    announcement = site.read(only(told, sally.email)[0], sally)
    assert re.search(r"Alice's key changed on \d{4}-\d\d-\d\d\.", announcement)
    assert alice.email not in announcement and alice2.fingerprint not in announcement
    assert "is now" in site.read(only(told, alice.email)[0], alice2)

    before = len(site.sink.messages)
    assert submit(site.proc.port, LIST, mf.post(sally, site.list_key, body="after the change"))[0] == 250
    [copy] = [c for c in site.sink.wait_for(before + 5)[before:] if c.rcpt_tos == (alice.email,)]
    assert "after the change" in site.read(copy, alice2)
    assert site.read(copy, alice) is None  # the old key's home cannot decrypt it

    [again] = site.send(bob, [f"x-approve-key: {approval}"])
    assert "That approval code was used already." in site.read(again, bob)
    [reused] = site.send(alice2, [f"x-confirm: {code}"])
    assert "That code was used already" in site.read(reused, alice2)
    [shown] = [r for r in site.cli.json("keys", "pending", LIST) if r["email"] == alice.email]
    assert (shown["state"], shown["old"], shown["new"], shown["approved_by"]) == \
        ("approved", alice.fingerprint, alice2.fingerprint, "Bob")
    [listing] = site.send(bob, ["x-key-requests"])
    assert re.search(r"Alice <alice@example.org>  .* -> .*  approved \S+, by Bob", site.read(listing, bob))


def test_without_approval_an_sq_member_confirming_with_the_current_key_is_pinned_to_a_new_rnp_key(site):
    u = site.users
    sally, sally2, bob = u["sally"], u["sally2"], u["bob"]
    site.cli.ok("list", "set", LIST, "key_change_approval", "none")
    site.cli.ok("list", "set", LIST, "announce_key_changes", "false")
    try:
        first = site.send(sally, ["x-key-change"], [sally2.public_key], expect=2)
        [challenge] = [c for c in first if site.read(c, sally2) is not None]
        code = CODE.search(site.read(challenge, sally2)).group(1)
        told = site.send(sally, [f"x-confirm: {code}"], expect=3)  # the reply, the admins, sally: nobody else
        assert sorted(c.rcpt_tos[0] for c in told) == sorted([sally.email, sally.email, bob.email])
        assert all(site.read(c, sally2) is not None for c in told if c.rcpt_tos == (sally.email,))
        assert "(key_change_approval = none)" in " ".join(site.read(only(told, bob.email)[0], bob).split())
        assert members(site.cli)[sally.email]["fingerprint"] == sally2.fingerprint
    finally:
        site.cli.ok("list", "set", LIST, "key_change_approval", "admin")
        site.cli.ok("list", "set", LIST, "announce_key_changes", "true")


@pytest.fixture(scope="module")
def bad_keys(tmp_path_factory, unusable_keys):
    base = tmp_path_factory.mktemp("bad-keys")
    return {
        "sign-only": (unusable_keys["sign-only"], "the key has no usable encryption subkey"),
        "encrypt-only": (make_gpg_key(base, "Enc", "enc@example.org", usage="cert").public_key,
                         "the key cannot sign now"),
        "expired": (unusable_keys["expired"], "the key has expired"),
        "revoked": (unusable_keys["revoked"], "the key is revoked"),
    }


def test_every_bad_new_key_is_refused_with_its_line_and_the_pin_stays(site, bad_keys):
    u = site.users
    rita, vera, bob = u["rita"], u["vera"], u["bob"]
    pins = site.pins()
    two = "Attach exactly one certificate, your new public key; this request holds 2."
    cases = [([k for k, _ in bad_keys.values()][:2], two),
             ([bob.public_key], "is pinned to another member of this list."),
             ([site.list_key], "is a list's own key."),
             ([rita.public_key], "That is the key pinned to you already"),
             *[([key], sentence) for key, sentence in bad_keys.values()]]
    for keys, sentence in cases:
        [reply] = site.send(rita, ["x-key-change"], keys)
        text = site.read(reply, rita)
        assert sentence in text and "Nothing was done." in text, (sentence, text)
    [none] = site.send(rita, ["x-key-change"])
    assert "this request holds 0" in site.read(none, rita)
    [wrong] = site.send(vera, ["x-confirm: AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG"])
    assert "That code is wrong" in site.read(wrong, vera)
    [not_admin] = site.send(vera, ["x-approve-key: AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG"])
    assert "only the list's admins may use x-approve-key" in site.read(not_admin, vera)
    [unknown] = site.send(bob, ["x-approve-key: AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG"])
    assert "No key change of this list has that approval code." in site.read(unknown, bob)
    assert site.pins() == pins
    assert not [r for r in site.cli.json("keys", "pending", LIST) if r["email"] == rita.email]  # none recorded
    offered = subprocess.run(["gpg", "--show-keys", "--with-colons"], input=b"".join(k for k, _ in bad_keys.values()),
                             capture_output=True, check=True).stdout.decode()
    strangers = {line.split(":")[9] for line in offered.splitlines() if line.startswith("fpr:")}
    assert strangers and not any(site.in_keyring(f) for f in strangers)  # and no key was left behind


def test_a_later_change_replaces_the_earlier_and_an_expired_code_is_refused_and_its_key_leaves(site, tmp_path):
    u = site.users
    vera = u["vera"]
    one, two = make_gpg_user(tmp_path, "Vera", "vera@example.org"), make_gpg_user(tmp_path / "2", "Vera", "vera@example.org")
    first = site.send(vera, ["x-key-change"], [one.public_key], expect=2)
    code_one = CODE.search(next(t for t in (site.read(c, one) for c in first) if t)).group(1)
    second = site.send(vera, ["x-key-change"], [two.public_key], expect=2)
    code_two = CODE.search(next(t for t in (site.read(c, two) for c in second) if t)).group(1)
    assert not site.in_keyring(one.fingerprint) and site.in_keyring(two.fingerprint)
    [replaced] = site.send(vera, [f"x-confirm: {code_one}"])
    assert "its key change was replaced" in site.read(replaced, vera)
    states = {r["new"]: r["state"] for r in site.cli.json("keys", "pending", LIST) if r["email"] == vera.email}
    assert states == {one.fingerprint: "refused", two.fingerprint: "awaiting-code"}

    # Three days pass: the change's deadline, as the store keeps it, is moved into the past.
    with Store(Home(site.cli.home).database).transaction() as tx:
        [doc] = [d for d in tx.key_changes(LIST) if d["new"] == two.fingerprint]
        tx.put_key_change({**doc, "expires": doc["requested"] - 1})
    [late] = site.send(vera, [f"x-confirm: {code_two}"])
    assert "That code has expired" in site.read(late, vera)
    site.proc.wait_log(rf"key-change expired list={LIST} new={two.fingerprint}")
    assert submit(site.proc.port, REQUEST, request(two, site.list_key, f"x-confirm: {code_two}")) == \
        (550, NOT_ACCEPTED)  # the new key of an expired change is nobody's
    assert members(site.cli)[vera.email]["fingerprint"] == vera.fingerprint
    assert not site.in_keyring(two.fingerprint)  # swept out of the keyring
    states = {r["new"]: r["state"] for r in site.cli.json("keys", "pending", LIST) if r["email"] == vera.email}
    assert states[two.fingerprint] == "expired"
    table = site.cli.ok("keys", "pending", LIST).stdout
    assert "expired" in table and "approved" in table and "refused" in table


def test_an_admin_cannot_approve_their_own_change_while_another_admin_can(site, tmp_path):
    u = site.users
    vera, bob = u["vera"], u["bob"]
    site.cli.ok("member", "set", LIST, vera.email, "--role", "admin")
    try:
        new = make_gpg_user(tmp_path, "Vera", "vera@example.org")
        first = site.send(vera, ["x-key-change"], [new.public_key], expect=2)
        code = CODE.search(next(t for t in (site.read(c, new) for c in first) if t)).group(1)
        asked = site.send(new, [f"x-confirm: {code}"], expect=3)  # the reply, and a notice to each admin
        notice = site.read(only(asked, bob.email)[0], bob)
        approval = CODE.search(notice).group(1)
        [own] = site.send(vera, [f"x-approve-key: {approval}"])
        assert "You cannot approve a change of your own key; another admin must." in site.read(own, vera)
        assert members(site.cli)[vera.email]["fingerprint"] == vera.fingerprint
        site.send(bob, [f"x-approve-key: {approval}"], expect=7)  # reply; bob, vera told; vera; alice, sally, rita
        assert members(site.cli)[vera.email]["fingerprint"] == new.fingerprint
    finally:
        site.cli.ok("member", "set", LIST, vera.email, "--role", "member")
