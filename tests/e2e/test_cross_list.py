"""Issue 9: a member's signed post counts on the list it was written for, once.

One home holds news@ and tips@ (and leaks@); Alice is a member of all three, Mallory of none.
Mallory gets hold of a post Alice signed for news@ and encrypts that same signed content to
another list's key. The signature is Alice's and good, so only what the signed content names,
and the home-wide replay record, can tell the lists apart. Mallory cannot even send a post
on as it is: each list's secret key is in the one keyring, but a list takes only what its own
key opened.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from listserv import openpgp, pkesk
from listserv.config import Home
from listserv.errors import Unauthorized
from listserv.context import Context
from listserv.pipeline import receive
from listserv.stages.route import route

from tests.helpers import mail as mf
from tests.helpers.cli import Cli, write_key
from tests.helpers.keys import run
from tests.helpers.members_clients import encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

NEWS, TIPS, LEAKS = "news@example.org", "tips@example.org", "leaks@example.org"
LISTS = (NEWS, TIPS, LEAKS)


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    base = tmp_path_factory.mktemp("lists")
    cli = Cli(base / "home")
    cli.ok("init")
    keys = {}
    for address in LISTS:
        cli.ok("list", "create", address, "--name", address.split("@")[0].title())
        cli.ok("member", "add", address, people["alice"].email, "--key", write_key(base, people["alice"]),
               "--name", "Alice")
        keys[address] = cli.ok("list", "key", address).stdout.encode()
    return cli, keys


@pytest.fixture(scope="module")
def server(site):
    cli, _ = site
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:  # copies wait in the spool
        yield proc


def signed(user, to: str | None, cc: str | None = None, body: str = "Signed words.") -> bytes:
    """A detached-signed entity; with `to`, its protected headers name the recipients
    (Thunderbird writes them so), without, it names nobody (Apple Mail, Mutt)."""
    text = mf.text_part(body, flowed=False)
    if to is None:
        return mf.signed_entity(user, text)
    return mf.signed_entity(user, mf.protected(user, to, "Signed subject", {"Cc": cc}, text))


def encrypted_to(sender, list_address: str, list_key: bytes, entity: bytes) -> bytes:
    """`entity` unchanged, encrypted (not signed) by `sender` to a list: the RFC 3156 §6.1 shape."""
    armored = mf.encrypt_only(sender, list_key, entity)
    return mf.message(mf.headers(sender, to=list_address), mf.encrypted_entity(armored, apple=True))


def reason(cli: Cli, address: str) -> str:
    return json.loads(cli.ok("rejections", address, "--json").stdout)[-1]["reason"]


def refused(server, cli: Cli, address: str, raw: bytes) -> str:
    code, text = submit(server.port, address, raw)
    assert (code, text.split()[0]) == (550, "5.7.1"), (code, text)
    assert text == f"5.7.1 {Unauthorized.text}"  # the one sentence: no hint of which check failed
    return reason(cli, address)


def readdressed(cli: Cli, armored: bytes, to_key: bytes) -> bytes:
    """What someone holding list A's secret key makes of a one-pass signed and encrypted post
    to A: the member's signed OpenPGP message untouched (not re-signed), its session key
    encrypted to list B's key instead."""
    out = run(["gpg", "--batch", "--homedir", str(cli.home / "keys"), "--pinentry-mode", "error",
               "--status-fd", "2", "--show-session-key", "--decrypt"], input=armored)
    [session] = re.findall(r"\[GNUPG:\] SESSION_KEY (\d+):([0-9A-Fa-f]+)", out.stderr.decode())
    assert session[0] == str(pkesk.AES256)
    [subkey] = [k for k in pkesk.read_keys(openpgp.dearmor(to_key, "PGP PUBLIC KEY BLOCK")).values() if k]
    packets = [p.raw for p in openpgp.parse(openpgp.dearmor(armored)) if p.tag != openpgp.PKESK]
    return openpgp.armor(pkesk.build(subkey, bytes.fromhex(session[1])) + b"".join(packets))


def test_a_post_signed_for_one_list_is_refused_on_another(site, server, people):
    """Alice signs for news@; Mallory encrypts the same signed entity to tips@. The outsider's
    copy is refused whether it arrives before or after Alice's own."""
    cli, keys = site
    alice, mallory = people["alice"], people["mallory"]
    entity = signed(alice, to=NEWS, body="For news only, first.")
    assert refused(server, cli, TIPS, encrypted_to(mallory, TIPS, keys[TIPS], entity)) == "wrong-list"
    assert submit(server.port, NEWS, encrypted_to(alice, NEWS, keys[NEWS], entity))[0] == 250

    entity = signed(alice, to=NEWS, body="For news only, second.")
    assert submit(server.port, NEWS, encrypted_to(alice, NEWS, keys[NEWS], entity))[0] == 250
    assert refused(server, cli, TIPS, encrypted_to(mallory, TIPS, keys[TIPS], entity)) == "wrong-list"


def test_a_one_pass_signed_and_encrypted_post_re_addressed_to_another_list_is_refused(site, server, people):
    """Thunderbird's shape: one OpenPGP message, signed and encrypted at once, with protected
    headers naming news@. Its signed message is moved to tips@ without being signed again."""
    cli, keys = site
    alice, mallory = people["alice"], people["mallory"]
    original = mf.post(alice, keys[NEWS], "Thunderbird words.", "TB", style="pgpmime", to=NEWS)
    assert submit(server.port, NEWS, original)[0] == 250
    moved = readdressed(cli, encrypted_part(original), keys[TIPS])
    raw = mf.message(mf.headers(mallory, to=TIPS), mf.encrypted_entity(moved))
    assert refused(server, cli, TIPS, raw) == "wrong-list"


def test_a_one_pass_post_that_names_no_list_is_a_replay_on_another(site, server, people):
    """Mutt's shape without protected headers: nothing signed names a list, so the record
    that news@ took this signature is what refuses it on tips@."""
    cli, keys = site
    alice, mallory = people["alice"], people["mallory"]
    original = mf.post(alice, keys[NEWS], "Mutt words.", "Mutt", style="mutt", to=NEWS)
    assert submit(server.port, NEWS, original)[0] == 250
    moved = readdressed(cli, encrypted_part(original), keys[TIPS])
    raw = mf.message(mf.headers(mallory, to=TIPS), mf.encrypted_entity(moved, mutt=True))
    assert refused(server, cli, TIPS, raw) == "replay"


def test_signed_content_that_names_no_list_is_taken_on_one_list_only(site, server, people):
    cli, keys = site
    alice, mallory = people["alice"], people["mallory"]
    entity = signed(alice, to=None, body="Apple Mail words.")
    assert submit(server.port, NEWS, encrypted_to(alice, NEWS, keys[NEWS], entity))[0] == 250
    for address in (TIPS, LEAKS):
        assert refused(server, cli, address, encrypted_to(mallory, address, keys[address], entity)) == "replay"


def test_a_cross_post_is_taken_once_on_each_list_it_names_and_nowhere_else(site, server, people):
    """To: news@, Cc: tips@: the member's MTA sends one copy per list (listserv takes one
    list per message). Each list takes its copy once; leaks@, not named, takes none."""
    cli, keys = site
    alice, mallory = people["alice"], people["mallory"]
    entity = signed(alice, to=NEWS, cc="Tips <TIPS+urgent@Example.org>", body="For both lists.")
    copies = {address: encrypted_to(alice, address, keys[address], entity) for address in LISTS}
    assert submit(server.port, NEWS, copies[NEWS])[0] == 250
    assert submit(server.port, TIPS, copies[TIPS])[0] == 250
    for address in (NEWS, TIPS):
        assert refused(server, cli, address, copies[address]) == "replay"
        again = encrypted_to(mallory, address, keys[address], entity)  # a new encryption
        assert refused(server, cli, address, again) == "replay"
    assert refused(server, cli, LEAKS, copies[LEAKS]) == "wrong-list"


def test_a_protected_list_id_of_another_list_is_refused(site, server, people):
    cli, keys = site
    alice = people["alice"]
    text = mf.text_part("Forwarded with its List-Id.", flowed=False)
    entity = mf.signed_entity(alice, b"List-Id: News <news.example.org>\r\n" + text)
    assert refused(server, cli, TIPS, encrypted_to(alice, TIPS, keys[TIPS], entity)) == "wrong-list"
    assert submit(server.port, NEWS, encrypted_to(alice, NEWS, keys[NEWS], entity))[0] == 250


def test_a_deleted_lists_record_still_guards_the_other_lists(tmp_path, people):
    """Deleting a list forgets its rejections, not which signatures it took: those would
    otherwise become fresh on every other list of the home."""
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    keys = {}
    for address in (NEWS, TIPS):
        cli.ok("list", "create", address, "--name", "L")
        cli.ok("member", "add", address, people["alice"].email, "--key", write_key(tmp_path, people["alice"]))
        keys[address] = cli.ok("list", "key", address).stdout.encode()
    entity = signed(people["alice"], to=None, body="Said on a list that is gone.")
    services = Context.open(Home(cli.home))
    receive(encrypted_to(people["alice"], NEWS, keys[NEWS], entity), route(NEWS, [NEWS, TIPS]), services)
    cli.ok("list", "delete", NEWS, "--yes")
    with pytest.raises(Unauthorized) as refusal:
        receive(encrypted_to(people["mallory"], TIPS, keys[TIPS], entity), route(TIPS, [TIPS]),
               Context.open(Home(cli.home)))
    assert refusal.value.reason == "replay"


def thunderbird(user, to: str, cc: str | None, body: str, list_key: bytes, *also: bytes) -> bytes:
    """Thunderbird's post: protected To (and Cc), one OpenPGP message signed and encrypted to
    the lists' keys and the sender's own."""
    inner = mf.protected(user, to, "Subject", {"Cc": cc}, mf.text_part(body))
    armored = mf.sign_and_encrypt(user, list_key, inner, to_self=True, also=also)
    return mf.message(mf.outer_subject(mf.headers(user, to=to), "..."), mf.encrypted_entity(armored))


def fanned_out(server, reply: tuple[int, str]) -> None:
    """Accepted, and opened again by the worker (which keeps gpg to no list's key packet)."""
    code, text = reply
    assert code == 250, (code, text)
    qid = re.search(r"Queued as (\S+)", text).group(1)
    server.wait_log(rf"fanned-out qid={qid} ")


def test_a_post_encrypted_only_to_another_lists_key_is_refused(site, server, people):
    """Signed for tips@ and sent to tips@, but encrypted to news@'s key: the home's keyring
    could open it, the list it arrived at may not take it."""
    cli, keys = site
    alice = people["alice"]
    entity = signed(alice, to=TIPS, body="For tips, encrypted to news.")
    assert refused(server, cli, TIPS, encrypted_to(alice, TIPS, keys[NEWS], entity)) == "not-encrypted-to-list"
    raw = thunderbird(alice, TIPS, None, "One pass, for tips, encrypted to news.", keys[NEWS])
    assert refused(server, cli, TIPS, raw) == "not-encrypted-to-list"
    fanned_out(server, submit(server.port, TIPS, encrypted_to(alice, TIPS, keys[TIPS], entity)))


def test_one_message_encrypted_to_two_lists_and_the_sender_is_taken_by_each_once(site, server, people):
    """Thunderbird's cross-post: one message, To: news@, Cc: tips@, encrypted to both lists'
    keys and Alice's own; her MTA sends the same bytes to each list. leaks@, whose key it is
    not encrypted to, takes none."""
    cli, keys = site
    alice = people["alice"]
    for first, second in ((NEWS, TIPS), (TIPS, NEWS)):
        raw = thunderbird(alice, first, second, f"To {first} and {second}.", keys[first], keys[second])
        fanned_out(server, submit(server.port, NEWS, raw))
        fanned_out(server, submit(server.port, TIPS, raw))
        assert refused(server, cli, NEWS, raw) == "replay"
        assert refused(server, cli, LEAKS, raw) == "not-encrypted-to-list"


def test_a_post_that_names_no_list_cannot_be_sent_on_as_it_is_to_another(site, server, people):
    """Mutt's post to news@ names no list. Mallory, on its way, sends it to tips@ first: as it
    is, and with a key packet for tips@'s key added (anyone can add one: key packets are not
    integrity-protected). Neither is taken, so Alice's own copy still reaches news@."""
    cli, keys = site
    alice, mallory = people["alice"], people["mallory"]
    original = mf.post(alice, keys[NEWS], "Mutt words, sent on.", "Mutt", style="mutt", to=NEWS)
    armored = encrypted_part(original)
    assert refused(server, cli, TIPS, original) == "not-encrypted-to-list"
    [subkey] = [k for k in pkesk.read_keys(openpgp.dearmor(keys[TIPS], "PGP PUBLIC KEY BLOCK")).values() if k]
    packets = [p.raw for p in openpgp.parse(openpgp.dearmor(armored))]
    added = openpgp.armor(packets[0] + pkesk.build(subkey, os.urandom(32)) + b"".join(packets[1:]))
    raw = mf.message(mf.headers(mallory, to=TIPS), mf.encrypted_entity(added, mutt=True))
    assert refused(server, cli, TIPS, raw) == "not-decryptable"
    fanned_out(server, submit(server.port, NEWS, original))
