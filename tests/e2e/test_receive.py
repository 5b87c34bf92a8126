"""Issue 3 end to end: `listserv serve` on loopback accepts only fresh posts signed by a member's
pinned key, refuses everything else with the documented reply, and never loses a 250."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import forge
from tests.helpers import mail as mf
from tests.helpers.cli import Cli, write_key
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

LIST = "news@example.org"
UNAUTHORIZED = "5.7.1"


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    """A home with news@example.org and members made by GnuPG, Sequoia and RNP."""
    base = tmp_path_factory.mktemp("site")
    cli = Cli(base / "home")
    cli.ok("init")
    cli.ok("list", "create", LIST, "--name", "News")
    for key in ("alice", "sally", "rita"):
        user = people[key]
        cli.ok("member", "add", LIST, user.email, "--key", write_key(base, user), "--name", user.name)
    cli.ok("member", "add", LIST, people["bob"].email, "--key", write_key(base, people["bob"]),
           "--name", "Bob", "--role", "admin")
    list_key = cli.ok("list", "key", LIST).stdout.encode()
    return cli, list_key


@pytest.fixture(scope="module")
def server(site):
    cli, _ = site
    # --relay to a closed port: accepted posts wait in the spool, so tests can look at it.
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        yield proc


def spooled(home: Path) -> set[str]:
    spool = home / "data" / "spool"
    return set(p.name for sub in ("incoming", "outgoing") if (spool / sub).exists()
                  for p in (spool / sub).iterdir())


def last_rejection(cli: Cli) -> dict:
    return json.loads(cli.ok("rejections", LIST, "--json").stdout)[-1]


@pytest.mark.parametrize("who,style", [
    ("alice", "pgpmime"), ("alice", "mutt"), ("alice", "inline"), ("alice", "encrypted-signed-mime"),
    ("sally", "pgpmime"), ("rita", "pgpmime"), ("rita", "inline"),
])
def test_a_members_post_is_accepted_and_spooled(site, server, people, who, style):
    cli, list_key = site
    before = spooled(cli.home)
    code, text = submit(server.port, LIST, mf.post(people[who], list_key, style=style, subject=f"{who} {style}"))
    assert code == 250, text
    qid = text.split()[-1]
    assert qid in spooled(cli.home) and qid not in before
    line = server.wait_log(rf"accepted qid={qid} ")
    assert people[who].fingerprint in line.string
    queue = json.loads(cli.ok("queue", "--json").stdout)
    assert qid in {row["qid"] for row in queue}


def test_spool_holds_no_plaintext(site, server, people):
    cli, list_key = site
    secret = "the-plaintext-marker-7781"
    code, text = submit(server.port, LIST, mf.post(people["alice"], list_key, body=secret, subject=secret))
    assert code == 250
    qid = text.split()[-1]
    server.wait_log(rf"qid={qid}")
    for path in (cli.home / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data, path
            # Member addresses live in the member database and in each delivery job's
            # recipient records; nowhere else (not the sender's From, not the submission).
            if path.name not in ("listserv.json", "recipients"):
                assert b"alice@example.org" not in data, path


def refused(site, server, raw: bytes, rcpt: str = LIST) -> tuple[int, str]:
    cli, _ = site
    before = spooled(cli.home)
    code, text = submit(server.port, rcpt, raw)
    after = spooled(cli.home)
    if after != before:
        Path("/tmp/serverlog.txt").write_text(server.log)
    assert after == before, "a refused message left something in the spool"
    assert "Traceback" not in text
    return code, text


def test_non_member_is_refused(site, server, people):
    cli, list_key = site
    code, text = refused(site, server, mf.post(people["mallory"], list_key))
    assert (code, text.split()[0]) == (550, UNAUTHORIZED)
    # Mallory's key is in no member's pin, so not in the keyring either: gpg cannot even
    # check the signature.
    assert last_rejection(cli)["reason"] == "unknown-key"


def test_member_signature_with_a_forged_from_is_judged_by_key_only(site, server, people):
    """Mallory claims to be Alice in From: the pinned fingerprint decides."""
    cli, list_key = site
    raw = mf.post(people["mallory"], list_key).replace(b"From: Mallory <mallory@example.com>",
                                                       b"From: Alice <alice@example.org>")
    code, text = refused(site, server, raw)
    assert code == 550 and last_rejection(cli)["reason"] == "unknown-key"


def test_unsigned_post_is_refused(site, server, people):
    cli, list_key = site
    armored = mf.encrypt_only(people["alice"], list_key, mf.text_part("no signature here"))
    raw = mf.message(mf.headers(people["alice"]), mf.encrypted_entity(armored))
    code, text = refused(site, server, raw)
    assert (code, text.split()[0]) == (550, UNAUTHORIZED)
    assert last_rejection(cli)["reason"] == "no-signature"


def test_all_crypto_refusals_read_the_same(site, server, people):
    """No oracle: an outsider cannot tell a bad key from a bad signature from garbage."""
    _, list_key = site
    replies = set()
    for raw in (mf.post(people["mallory"], list_key),
                mf.message(mf.headers(people["alice"]),
                           mf.encrypted_entity(mf.encrypt_only(people["alice"], list_key, b"x\r\n"))),
                mf.message(mf.headers(people["alice"]), mf.encrypted_entity(b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----\r\n"))):
        replies.add(refused(site, server, raw))
    assert len(replies) == 1 and next(iter(replies))[0] == 550


def test_replayed_post_is_refused(site, server, people):
    cli, list_key = site
    raw = mf.post(people["sally"], list_key, subject="once only")
    assert submit(server.port, LIST, raw)[0] == 250
    code, text = refused(site, server, raw)
    assert (code, text.split()[0]) == (550, UNAUTHORIZED)
    assert last_rejection(cli)["reason"] == "replay"


def test_stale_signature_is_refused(site, server, people):
    """A signature older than the list's max_signature_age (here shortened to 1 s) is refused."""
    cli, list_key = site
    raw = mf.post(people["alice"], list_key, subject="old news")
    cli.ok("list", "set", LIST, "max_signature_age", "1s")
    try:
        time.sleep(2.2)  # let the signature age past the window; nothing is timed
        code, _ = refused(site, server, raw)
    finally:
        cli.ok("list", "set", LIST, "max_signature_age", "7d")
    assert code == 550
    assert last_rejection(cli)["reason"] == "stale-signature"


def test_signed_only_post_is_refused_while_encryption_is_required(site, server, people):
    cli, _ = site
    code, _ = refused(site, server, mf.post(people["alice"], None, style="signed"))
    assert code == 550 and last_rejection(cli)["reason"] == "not-encrypted"


def test_unknown_recipient_is_refused_at_rcpt(site, server, people):
    _, list_key = site
    code, text = refused(site, server, mf.post(people["alice"], list_key), rcpt="nobody@example.org")
    assert (code, text.split()[0]) == (550, "5.1.1")


def test_oversize_is_refused(site, server, people):
    cli, list_key = site
    cli.ok("list", "set", LIST, "max_message_size_kb", "8")
    try:
        code, text = refused(site, server, mf.post(people["alice"], list_key, body=base64.b64encode(os.urandom(20000)).decode()))
    finally:
        cli.ok("list", "set", LIST, "max_message_size_kb", "7000")
    assert (code, text.split()[0]) == (552, "5.3.4")
    assert "larger than this list accepts (at most 8 KB)" in text


def test_bare_line_feed_is_malformed(site, server, people):
    _, list_key = site
    raw = mf.post(people["alice"], list_key).replace(b"\r\nTo:", b"\nTo:", 1)
    code, text = refused(site, server, raw)
    assert (code, text.split()[0]) == (554, "5.6.0")


def test_encoded_newline_in_subject_is_malformed(site, server, people):
    _, list_key = site
    raw = mf.post(people["alice"], list_key, style="mutt").replace(
        b"Subject: Hello", b"Subject: =?utf-8?q?Hello=0D=0ABcc=3A_x=40evil=2Eexample?=", 1)
    code, text = refused(site, server, raw)
    assert (code, text.split()[0]) == (554, "5.6.0")


def test_urgent_alert_from_a_member_when_only_admins_may(site, server, people):
    cli, list_key = site
    cli.ok("list", "set", LIST, "alert_senders", "admins")
    try:
        code, _ = refused(site, server, mf.post(people["alice"], list_key, to="news+urgent@example.org"),
                          rcpt="news+urgent@example.org")
        assert code == 550 and last_rejection(cli)["reason"] == "alert-not-allowed"
        code, text = submit(server.port, "news+urgent@example.org",
                            mf.post(people["bob"], list_key, to="news+urgent@example.org"))
        assert code == 250, text
        assert json.loads(cli.ok("queue", "--json").stdout)[0]["kind"] == "alert"  # alerts first
    finally:
        cli.ok("list", "set", LIST, "alert_senders", "members")


def test_log_names_no_subject_body_or_address(site, server, people):
    _, list_key = site
    marker = "log-privacy-marker-5521"
    submit(server.port, LIST, mf.post(people["rita"], list_key, body=marker, subject=marker))
    submit(server.port, LIST, mf.post(people["mallory"], list_key, body=marker, subject=marker))
    server.wait_log("reason=unknown-key")
    for forbidden in (marker, "rita@example.net", "mallory@example.com", "127.0.0.1:"):
        hits = [line for line in server.lines if forbidden in line and "listening on" not in line]
        assert not hits, hits


def test_a_250_survives_sigkill(tmp_path, people):
    """Kill -9 right after the 250: the restarted server still holds the submission."""
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("list", "create", LIST, "--name", "News")
    cli.ok("member", "add", LIST, people["alice"].email, "--key", write_key(tmp_path, people["alice"]))
    list_key = cli.ok("list", "key", LIST).stdout.encode()
    proc = ServeProcess(cli.home, "--relay", "127.0.0.1:9").start()
    code, text = submit(proc.port, LIST, mf.post(people["alice"], list_key))
    proc.kill()
    assert code == 250
    qid = text.split()[-1]
    assert qid in spooled(cli.home)
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as again:
        again.wait_log(rf"qid={qid}")
        assert qid in spooled(cli.home)


def test_posts_from_every_client_style_open(site, server, people):
    """Signed-only posts are accepted once the list allows them, and sealed in the spool."""
    cli, _ = site
    cli.ok("list", "set", LIST, "require_encryption", "false")
    try:
        for style in ("signed", "clearsign", "inline-signed"):
            code, text = submit(server.port, LIST, mf.post(people["alice"], None, style=style,
                                                          body=f"plain {style}"))
            assert code == 250, (style, text)
    finally:
        cli.ok("list", "set", LIST, "require_encryption", "true")



def test_a_451_leaves_nothing_queued_so_the_clients_retry_is_delivered_once(tmp_path, people):
    """A problem after the submission reached the spool (here: the events database cannot be
    read) is a 451: the client tries again later, so the first try must not be delivered too."""
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("list", "create", LIST, "--name", "News")
    cli.ok("member", "add", LIST, people["alice"].email, "--key", write_key(tmp_path, people["alice"]))
    list_key = cli.ok("list", "key", LIST).stdout.encode()
    events = cli.home / "data" / "events.json"
    raw = mf.post(people["alice"], list_key)
    with ServeProcess(cli.home) as proc:
        events.unlink(missing_ok=True)
        events.mkdir()
        code, _ = submit(proc.port, LIST, raw)
        assert code == 451
        assert spooled(cli.home) == set()
        events.rmdir()
        assert submit(proc.port, LIST, raw)[0] == 250  # the client's retry
        proc.wait_log(r"delivered qid=\S+ sent=1 failed=0")
    with ServeProcess(cli.home) as again:  # nothing left over for a restart to deliver
        again.wait_log(r"listening on .* \(resuming 0 submissions, 0 delivery jobs\)")
    assert len(list((cli.home / "data" / "outbox" / "new").iterdir())) == 1


def test_an_internal_error_at_rcpt_is_a_plain_451_without_details(tmp_path, people):
    """A damaged database makes RCPT fail inside listserv: the client hears a temporary
    failure (its MTA retries, no bounce) and nothing of the error itself."""
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    cli.ok("list", "create", LIST, "--name", "News")
    database = cli.home / "data" / "listserv.json"
    data = json.loads(database.read_text())
    for doc in data["lists"].values():
        del doc["fingerprint"]  # as a damaged or foreign database might hold it
    database.write_text(json.dumps(data))
    with ServeProcess(cli.home) as proc:
        code, text = submit(proc.port, LIST, b"Subject: x\r\n\r\nx\r\n")
        assert (code, text) == (451, "4.3.0 A temporary problem on this server; please try again later.")
        proc.wait_log(r"error stage=rcpt unexpected")


def test_a_second_serve_on_the_same_home_refuses_to_start(tmp_path, people):
    """Two servers on one home would both deliver every copy, and the second would sweep the
    first one's half-written spool entries at start."""
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    with ServeProcess(cli.home) as first:
        second = subprocess.run(
            [sys.executable, "-m", "listserv", "--home", str(cli.home), "serve", "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=30)
        assert first.proc.poll() is None
    assert second.returncode == 69
    assert "another listserv serve is running" in second.stderr.lower()


def test_the_original_forgery_is_refused_over_smtp(site, server, people):
    """Issue 9: an outsider with no key, no encryption: armor header lines that spell out a
    decryption and Alice's good signature (U+0085 between them). It was delivered to every
    member as "Alice via News"; now it is refused like any unsigned post."""
    cli, _ = site
    raw = forge.original_forgery(people["alice"], cli.json("list", "show", LIST)["fingerprint"])
    code, text = refused(site, server, raw)
    assert (code, text.split()[0]) == (550, UNAUTHORIZED)
    assert last_rejection(cli)["signer"] is None
    assert "Traceback" not in server.log
