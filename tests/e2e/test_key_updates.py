"""Issue 13, the member's own key over its life, through a real `serve` and SMTP: renewed with
x-key-update (also once it has expired), renewed quietly by a post that carries it, revoked
with x-key-revoke (the member is suspended at once), re-pinned by an admin with x-set-member.
Each refusal leaves the pin as it was. Keys from GnuPG and Sequoia; replies read with the
member's own tool."""

from __future__ import annotations

import base64
import json
import time

import pytest

from listserv.errors import Unauthorized

from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.keys import fingerprints, make_gpg_key, make_gpg_user, make_sq_user, run
from tests.helpers.members_clients import decrypt, encrypted_part, read_reply, text_of
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"
NOT_ACCEPTED = f"5.7.1 {Unauthorized.text}"
EXPIRES_IN = 12  # seconds Dan's key is usable once made: enough to pin it, then it expires


def soon_expiring(base, name: str, email: str):
    """A GnuPG key made (by a faked clock) a day ago and valid for a day and EXPIRES_IN seconds."""
    made = int(time.time()) - 86400 + EXPIRES_IN
    return make_gpg_key(base, name, email, expire="1d", at=f"{made}!", subkeys=[("cv25519", "1d", f"{made}!")])


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    base = tmp_path_factory.mktemp("keys")
    dan = soon_expiring(base, "Dan", "dan@example.org")
    users = {**people, "dan": dan, "carol": make_gpg_user(base, "Carol", "carol@example.org"),
             "erin": make_gpg_user(base, "Erin", "erin@example.org"),
             "sue": make_sq_user(base, "Sue", "sue@example.net")}
    cli, list_key, fingerprint = make_site(base, users, {"alice": "immediate", "dan": "immediate",
                                                         "carol": "immediate", "erin": "immediate",
                                                         "sue": "immediate"})
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "admin")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        yield cli, list_key, fingerprint, users, base, sink, proc


def members(cli) -> dict[str, dict]:
    return {m["email"]: m for m in json.loads(cli.ok("member", "list", LIST, "--json").stdout)}


def keyring_listing(cli, fingerprint: str, command: str = "--list-keys") -> str:
    return run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons", command, fingerprint]).stdout.decode()


def request(user, list_key, lines: list[str], keys: tuple[bytes, ...] = ()) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, ""])
    inner = mf.protected(user, REQUEST, "request", {}, mf.text_part(body), *keys)
    outer = mf.outer_subject(mf.headers(user, to=REQUEST, subject="request"), "...")
    return mf.message(outer, mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner, to_self=True)))


def attached(data: bytes) -> bytes:
    head = b'Content-Type: application/pgp-keys; name="key.asc"\r\nContent-Disposition: attachment; filename="key.asc"\r\n\r\n'
    return head + mf.crlf(data)


def ask(site, user, lines: list[str], keys: tuple[bytes, ...] = ()) -> str:
    """A request from `user`; the text of the one reply, read with their own tool."""
    cli, list_key, fingerprint, _, _, sink, proc = site
    before = len(sink.messages)
    code, text = submit(proc.port, REQUEST, request(user, list_key, lines, keys))
    assert code == 250, text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        replies = [m for m in list(sink.messages)[before:]
                   if m.rcpt_tos == (user.email,) and f"From: News <{REQUEST}>".encode() in m.data]
        if replies:
            return text_of(read_reply(replies[0], user, list_key, fingerprint)[1])
        time.sleep(0.1)
    raise AssertionError(f"no reply reached {user.email}")


def post_reaches(site, sender, reader, body: str) -> bool:
    """Whether `reader` gets a copy of `sender`'s post that their own tool can read; False
    when the fan-out found their key unusable (and so made them no copy)."""
    cli, list_key, fingerprint, users, _, sink, proc = site
    before = len(sink.messages)
    code, text = submit(proc.port, LIST, mf.post(sender, list_key, body=body))
    assert code == 250, text
    qid = text.split()[-1]
    unusable = proc.wait_log(rf"fanned-out qid={qid} copies=\d+ unusable=(\S*)").group(1).split(",")
    if reader.fingerprint in unusable:
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for copy in list(sink.messages)[before:]:
            if copy.rcpt_tos == (reader.email,) and b"BEGIN PGP MESSAGE" in copy.data:
                text = decrypt(reader, encrypted_part(copy.data), list_key, fingerprint).decode(errors="replace")
                if body in text:
                    return True
        time.sleep(0.1)
    raise AssertionError(f"no copy of the post reached {reader.email}")


def mf_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_an_expired_key_renewed_with_x_key_update_receives_again(site):
    cli, list_key, fingerprint, users, _, sink, proc = site
    alice, dan = users["alice"], users["dan"]
    deadline = time.monotonic() + 3 * EXPIRES_IN
    while ":e:" not in next(line for line in keyring_listing(cli, dan.fingerprint).splitlines() if line.startswith("pub")):
        assert time.monotonic() < deadline, "Dan's key did not expire"
        time.sleep(0.5)  # Dan's key expires a few seconds after it was pinned
    assert not post_reaches(site, alice, dan, "Dan misses this one.")
    dan.gpg("--quick-set-expire", dan.fingerprint, "1y")
    # '*' skips subkeys that have expired already: an expired one is named (docs/keys.md says so).
    [subkey] = fingerprints(dan.gpg("--with-colons", "--list-keys", dan.fingerprint).stdout)[1:]
    dan.gpg("--quick-set-expire", dan.fingerprint, "1y", subkey)
    renewed = dan.gpg("--armor", "--export", dan.fingerprint).stdout
    # Signed by the renewed key, judged by the list's expired copy: refused, unless it carries the renewal.
    code, text = submit(proc.port, REQUEST, request(dan, list_key, ["x-status"]))
    assert (code, text) == (550, NOT_ACCEPTED)
    reply = ask(site, dan, ["x-key-update"], (attached(renewed),))
    assert "is updated: usable until" in reply
    assert members(cli)[dan.email]["key_expires"] > mf_now()
    assert post_reaches(site, alice, dan, "Dan reads this one.")


def test_update_refusals_leave_the_pin_as_it_was(site, tmp_path):
    cli, _, _, users, _, _, _ = site
    erin, mallory = users["erin"], users["mallory"]
    before = (members(cli)[erin.email], keyring_listing(cli, erin.fingerprint, "--list-sigs"))
    other = ask(site, erin, ["x-key-update"], (attached(mallory.public_key),))
    assert f"is not your pinned key" in other and "x-key-change" in other and "Nothing was done." in other
    same = ask(site, erin, ["x-key-update"], (attached(erin.public_key),))
    assert "is unchanged: the attached copy holds nothing newer than the list's." in same
    none = ask(site, erin, ["x-key-update"])
    assert "Attach your updated public key" in none
    # Past the attachment cap (512 KiB) the key is not read at all: no flood reaches gpg.
    flooded = ask(site, erin, ["x-key-update"], (attached(erin.public_key + b"\n" * (520 * 1024)),))
    assert "Attach your updated public key" in flooded
    expired = make_gpg_key(tmp_path, "Erin", "erin2@example.org", expire="1d", at="20200101T000000",
                           subkeys=[("cv25519", "1d", "20200101T000000")])
    assert "is not your pinned key" in ask(site, erin, ["x-key-update"], (attached(expired.public_key),))
    assert (members(cli)[erin.email], keyring_listing(cli, erin.fingerprint, "--list-sigs")) == before


def test_a_new_user_id_from_sequoia_is_taken_and_third_party_signatures_are_not(site, tmp_path):
    cli, _, _, users, _, _, _ = site
    sue, mallory = users["sue"], users["mallory"]
    run(["sq", "key", "userid", "add", "--userid", "Sue <sue@example.com>", "--output",
         str(tmp_path / "sue.pgp"), str(sue.secret_file)])
    (tmp_path / "sue.pgp").replace(sue.secret_file)
    cert = run(["sq", "key", "extract-cert", str(sue.secret_file)]).stdout
    # Mallory certifies Sue's key: a third party's signature, which the list must not keep.
    mallory.gpg("--import", input=cert)
    mallory.gpg("--yes", "--quick-sign-key", sue.fingerprint)
    signed = mallory.gpg("--armor", "--export", sue.fingerprint).stdout
    reply = ask(site, sue, ["x-key-update"], (attached(signed),))
    assert "is updated" in reply
    listing = keyring_listing(cli, sue.fingerprint, "--list-sigs")
    assert "sue@example.com" in listing and mallory.fingerprint[-16:] not in listing


def test_a_post_carrying_the_renewed_key_in_its_protected_autocrypt_header_renews_it(site):
    cli, list_key, _, users, _, _, proc = site
    carol = users["carol"]
    assert members(cli)[carol.email]["key_expires"] is None
    carol.gpg("--quick-set-expire", carol.fingerprint, "2y", "*")
    binary = carol.gpg("--export", carol.fingerprint).stdout
    autocrypt = f"addr={carol.email}; prefer-encrypt=mutual; keydata=" + base64.b64encode(binary).decode()
    inner = mf.protected(carol, LIST, "news", {"Autocrypt": autocrypt}, mf.text_part("My key lives longer now."))
    raw = mf.message(mf.outer_subject(mf.headers(carol), "..."),
                     mf.encrypted_entity(mf.sign_and_encrypt(carol, list_key, inner, to_self=True)))
    assert submit(proc.port, LIST, raw)[0] == 250
    proc.wait_log(rf"key-update fingerprint={carol.fingerprint} taken=yes")
    assert members(cli)[carol.email]["key_expires"] > mf_now()


def test_x_key_revoke_suspends_at_once_and_an_admin_re_pins_a_new_key(site, tmp_path):
    cli, list_key, fingerprint, users, base, sink, proc = site
    alice, erin, mallory = users["alice"], users["erin"], users["mallory"]
    certificate = lambda user: (user.home / "openpgp-revocs.d" / f"{user.fingerprint}.rev").read_bytes() \
        .replace(b":-----BEGIN", b"-----BEGIN")
    # Someone else's revocation: refused, nothing changes.
    other = ask(site, erin, ["x-key-revoke"], (attached(certificate(mallory)),))
    assert "holds no revocation of your key" in other and members(cli)[erin.email]["state"] == "active"
    before = len(sink.messages)
    assert submit(proc.port, REQUEST, request(erin, list_key, ["x-key-revoke"], (attached(certificate(erin)),)))[0] == 250
    [told] = sink.wait_for(before + 1)[before:]
    assert told.rcpt_tos == (alice.email,)  # the admin hears; no reply is encrypted to a revoked key
    assert "revoked" in text_of(read_reply(told, alice, list_key, fingerprint)[1])
    assert members(cli)[erin.email]["state"] == "suspended"
    assert submit(proc.port, LIST, mf.post(erin, list_key, body="still me?")) == (550, NOT_ACCEPTED)
    assert submit(proc.port, REQUEST, request(erin, list_key, ["x-status"])) == (550, NOT_ACCEPTED)
    # The admin checks with Erin out of band, then pins the new key she sent.
    new = make_gpg_user(tmp_path, "Erin", "erin@example.org")
    line = f"x-set-member: {erin.email} key={new.fingerprint}"
    reply = ask(site, alice, [line], (attached(new.public_key),))
    assert f"{'Erin'} <{erin.email}>: mode immediate, role member, key" in reply
    assert (members(cli)[erin.email]["state"], members(cli)[erin.email]["fingerprint"]) == ("active", new.fingerprint)
    again = ask(site, alice, [f"x-set-member: {erin.email} key={erin.fingerprint}"], (attached(erin.public_key),))
    assert "Nothing was done." in again and members(cli)[erin.email]["fingerprint"] == new.fingerprint
    assert post_reaches(site, alice, new, "Welcome back, Erin.")
