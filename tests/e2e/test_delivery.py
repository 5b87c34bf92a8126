"""Issue 4 end to end: each member gets one copy only they can read, signed by the list,
carrying nothing of the sender's identity, delivered durably with retries."""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import time
from email import policy

import pytest

from listserv.config import Home
from listserv.model import Member, iso
from listserv.store import Store

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.keys import make_expired_gpg_user
from tests.helpers.members_clients import decrypt, encrypted_part, recipient_key_ids
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit
from tests.helpers.tls import relay_certificate

LIST = "news@example.org"
MEMBERS = ("alice", "bob", "sally", "rita")


IMMEDIATE = {key: "immediate" for key in MEMBERS}


FAST_RETRY = "[delivery]\nretry_min = 1\nretry_max = 2\nconcurrency = 2\n"


def test_each_member_gets_one_copy_only_they_can_read(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE)
    alice = people["alice"]
    raw = mf.post(alice, list_key, body="The meeting moved to Thursday.", subject="Meeting")
    assert b"User-Agent" not in raw
    raw = raw.replace(b"MIME-Version: 1.0", b"MIME-Version: 1.0\r\nUser-Agent: Thunderbird/115\r\n"
                      b"Received: from laptop ([192.0.2.44]) by mx.example.org", 1)
    submitter_id = email.message_from_bytes(raw, policy=policy.default)["Message-ID"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, _ = submit(proc.port, LIST, raw)
        assert code == 250
        copies = sink.wait_for(len(MEMBERS))
    by_member = {c.rcpt_tos: c for c in copies}
    assert sorted(by_member) == sorted((people[k].email,) for k in MEMBERS)
    key_ids = {}
    for key in MEMBERS:
        user = people[key]
        copy = by_member[(user.email,)]
        assert copy.mail_from.startswith("news-bounces+") and copy.mail_from.endswith("@example.org")
        outer = email.message_from_bytes(copy.data, policy=policy.default)
        assert outer["Subject"] == "[...]"
        assert outer["List-Id"] == "News <news.example.org>"
        armored = encrypted_part(copy.data)
        key_ids[key] = recipient_key_ids(armored)
        assert len(key_ids[key]) == 1, "a copy names exactly one recipient"
        plain = decrypt(user, armored, list_key, list_fpr)
        assert b"The meeting moved to Thursday." in plain
        inner = email.message_from_bytes(plain, policy=policy.default)
        assert inner["Subject"] == "[News] Meeting"
        assert inner["From"].addresses[0].display_name == "Alice via News"
        assert inner["From"].addresses[0].addr_spec == LIST
        for leak in (b"alice@example.org", b"Thunderbird", b"192.0.2.44", b"laptop",
                     submitter_id.strip("<>").encode()):
            assert leak not in plain and leak not in copy.data, leak
    assert len({ids[0] for ids in key_ids.values()}) == len(MEMBERS)
    # Another member's key cannot open alice's copy.
    with pytest.raises(Exception):
        decrypt(people["bob"], encrypted_part(by_member[(alice.email,)].data), list_key, list_fpr)


def test_a_451_is_retried_and_then_delivered(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST_RETRY)
    with Sink(replies=["451 4.3.0 Greylisted, come back later"]) as sink, \
            ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"deferred qid=\S+ copy=\d+ attempts=1 reason=data-451-4\.3\.0")
        copies = sink.wait_for(len(MEMBERS))
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")
    assert sink.refused == 1
    assert len({c.rcpt_tos for c in copies}) == len(MEMBERS)
    assert json.loads(cli.ok("queue", "--json").stdout) == []


def test_a_550_fails_that_member_only(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST_RETRY)
    refuse = {people["rita"].email: "550 5.1.1 No such user"}
    with Sink(refuse_rcpt=refuse) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=3 failed=1")
    assert sorted(c.rcpt_tos[0] for c in sink.messages) == sorted(
        people[k].email for k in MEMBERS if k != "rita")


def test_with_no_relay_copies_go_to_the_outbox(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE)
    with ServeProcess(cli.home) as proc:
        assert submit(proc.port, LIST, mf.post(people["sally"], list_key, body="outbox test"))[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=4")
    files = list((cli.home / "data" / "outbox" / "new").iterdir())
    assert len(files) == len(MEMBERS)
    for path in files:
        data = path.read_bytes()
        recipient = email.message_from_bytes(data, policy=policy.default)["Delivered-To"]
        user = next(people[k] for k in MEMBERS if people[k].email == recipient)
        assert b"outbox test" in decrypt(user, encrypted_part(data), list_key, list_fpr)


def test_sigkill_during_fan_out_loses_nothing_and_doubles_nothing(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, "[delivery]\nconcurrency = 1\nretry_min = 1\n")
    proc = None

    def kill_at_third(taken: int) -> bool:
        if taken == 2 and proc is not None and proc.proc.poll() is None:
            os.kill(proc.proc.pid, signal.SIGKILL)
            return True
        return False

    with Sink(on_data=kill_at_third) as sink:
        proc = ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}").start()
        assert submit(proc.port, LIST, mf.post(people["rita"], list_key))[0] == 250
        proc.proc.wait(60)
        assert proc.stop() == -signal.SIGKILL  # stop() only reaps a dead process
        assert len(sink.messages) == 2
        sink.on_data = None
        with ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as again:
            sink.wait_for(len(MEMBERS))
            again.wait_log(r"delivered qid=\S+ sent=4 failed=0")
            time.sleep(0.5)
    recipients = sorted(c.rcpt_tos[0] for c in sink.messages)
    assert recipients == sorted(people[k].email for k in MEMBERS)  # each exactly once


def test_bounces_are_counted_per_member(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        copies = sink.wait_for(len(MEMBERS))
        bob_copy = next(c for c in copies if c.rcpt_tos == (people["bob"].email,))
        bounce = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: " + bob_copy.mail_from.encode() +
                  b"\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nMailbox full.\r\n")
        code, _ = submit(proc.port, bob_copy.mail_from, bounce, mail_from="")
        assert code == 250
    members = {m["email"]: m for m in json.loads(cli.ok("member", "list", LIST, "--json").stdout)}
    assert members[people["bob"].email]["bounces"] == 1
    assert members[people["alice"].email]["bounces"] == 0


def test_queue_shows_deferred_copies_and_queue_retry_sends_them_now(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, "[delivery]\nconcurrency = 1\n")  # retry after 300 s
    with Sink(replies=["451 4.3.0 Try later"]) as sink, \
            ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"deferred qid=")
        sink.wait_for(len(MEMBERS) - 1)
        # The relay has the third copy a moment before the journal records it: wait for that.
        deadline = time.monotonic() + 15
        while True:
            [job] = json.loads(cli.ok("queue", "--json").stdout)
            if job["copies"]["sent"] == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert job["copies"] == {"pending": 0, "sent": 3, "deferred": 1, "failed": 0}
        assert "deferred=1" in cli.ok("queue").stdout
        cli.ok("queue", "retry")
        sink.wait_for(len(MEMBERS), timeout=15)
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")
    assert json.loads(cli.ok("queue", "--json").stdout) == []


def test_queue_retry_while_a_deferred_copy_is_being_sent_sends_it_once(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, "[delivery]\nconcurrency = 2\n")  # retry after 300 s
    flag = cli.home / "data" / "spool" / "retry-now"

    def second_retry_while_sending(taken: int) -> bool:
        if taken == len(MEMBERS) - 1:  # the deferred copy, retried: an operator retries again
            flag.touch()
            time.sleep(2.5)  # the relay is slow to answer; the server sees the flag meanwhile
        return False

    with Sink(replies=["451 4.3.0 Try later"], on_data=second_retry_while_sending) as sink, \
            ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"deferred qid=")
        sink.wait_for(len(MEMBERS) - 1)
        cli.ok("queue", "retry")
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")
        time.sleep(1.5)
    assert not flag.exists()  # the second retry was seen while the copy was on its way
    assert sorted(c.rcpt_tos[0] for c in sink.messages) == sorted(people[k].email for k in MEMBERS)


def test_a_damaged_delivery_job_goes_to_bad_and_serve_delivers_the_rest(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE)
    damaged = cli.home / "data" / "spool" / "outgoing" / "badbadbadbad"
    damaged.mkdir(parents=True)
    meta = {"qid": "badbadbadbad", "list": LIST, "kind": "post", "created": time.time(),
            "return_path": "news-bounces+{token}@example.org", "batches": 1}
    (damaged / "meta.json").write_text(json.dumps(meta))
    for name in ("shared.pgp.0", "prefix", "suffix", "journal"):
        (damaged / name).write_bytes(b"")
    (damaged / "recipients").write_bytes(b"what a disk error left\n")
    with ServeProcess(cli.home) as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")
        proc.wait_log(r"unreadable qid=badbadbadbad ValueError")
    assert len(list((cli.home / "data" / "outbox" / "new").iterdir())) == len(MEMBERS)
    assert (cli.home / "data" / "spool" / "bad" / "badbadbadbad" / "recipients").exists()


def test_a_disk_error_while_fanning_out_defers_the_post_instead_of_dropping_it(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate", "bob": "digest"})
    blocker = cli.home / "data" / "digest"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")  # the backlog folder cannot be made: an OSError mid-distribute
    with ServeProcess(cli.home) as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"deferred qid=\S+ stage=distribute NotADirectoryError")
    blocker.unlink()
    with ServeProcess(cli.home) as again:
        again.wait_log(r"delivered qid=\S+ sent=1 failed=0")
    assert len(list((cli.home / "data" / "digest" / LIST).glob("*.pgp"))) == 1  # bob's digest
    assert len(list((cli.home / "data" / "outbox" / "new").iterdir())) == 1  # alice's copy


def test_queue_shows_a_damaged_delivery_job_instead_of_failing(cli):
    job = cli.home / "data" / "spool" / "outgoing" / "abcdef123456"
    job.mkdir(parents=True)
    (job / "meta.json").write_text(json.dumps({"qid": "abcdef123456", "list": LIST, "kind": "post",
                                               "created": time.time(), "return_path": "x", "batches": 1}))
    (job / "recipients").write_bytes(b"not a record\n")
    (job / "journal").write_bytes(b"")
    [row] = json.loads(cli.ok("queue", "--json").stdout)
    assert (row["qid"], row["state"]) == ("abcdef123456", "damaged")
    assert "damaged" in cli.ok("queue").stdout


def test_a_member_whose_key_became_unusable_gets_no_copy_and_admins_get_a_notice(
        tmp_path, tmp_path_factory, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE)
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    # A short path: gpg-agent's socket path must fit in 108 bytes.
    carol = make_expired_gpg_user(tmp_path_factory.mktemp("c"), "Carol", "carol@example.org")
    # Carol's key expired after she joined (`member add` refuses an expired key): pinned as it was.
    # (A key revoked in the keyring is the key watch's: its member is suspended, tests/test_keywatch.py.)
    subprocess.run(["gpg", "--batch", "--homedir", str(cli.home / "keys"), "--import"],
                   input=carol.public_key, capture_output=True, check=True)
    with Store(Home(cli.home).database).transaction() as tx:
        tx.add_member(Member(LIST, carol.email, carol.fingerprint, "Carol", added=iso()))
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        proc.wait_log(r"keywatch warnings=0 summaries=1 ")  # the key watch's summary to Bob comes first
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body="after the expiry"))[0] == 250
        copies = sink.wait_for(len(MEMBERS) + 2)
        proc.wait_log(rf"unusable={carol.fingerprint}")
    assert carol.email not in {c.rcpt_tos[0] for c in copies}
    to_bob = [email.message_from_bytes(decrypt(people["bob"], encrypted_part(c.data), list_key, list_fpr),
                                       policy=policy.default) for c in copies if c.rcpt_tos[0] == people["bob"].email]
    texts = [m.get_body(("plain",)).get_content() for m in to_bob]
    [text] = [t for t in texts if "after the expiry" not in t and "no copy" in t]
    assert carol.fingerprint in text
    assert all(email.message_from_bytes(c.data, policy=policy.default)["Subject"] == "[...]" for c in copies)


def test_admins_hear_when_a_members_copies_keep_bouncing(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE)
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        copies = sink.wait_for(len(MEMBERS))
        rita_copy = next(c for c in copies if c.rcpt_tos == (people["rita"].email,))
        for _ in range(3):
            bounce = (b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered\r\n\r\nGone.\r\n")
            assert submit(proc.port, rita_copy.mail_from, bounce, mail_from="")[0] == 250
        [notice] = sink.wait_for(len(MEMBERS) + 1)[len(MEMBERS):]
    assert notice.rcpt_tos == (people["bob"].email,)
    plain = decrypt(people["bob"], encrypted_part(notice.data), list_key, list_fpr)
    text = email.message_from_bytes(plain, policy=policy.default).get_body(("plain",)).get_content()
    assert people["rita"].fingerprint in text and "3 times" in text


def test_copies_go_over_starttls_when_the_settings_ask_for_it(tmp_path, people):
    cert_file, context = relay_certificate(tmp_path)
    settings = f'[delivery]\nstarttls = "always"\ntls_ca_file = "{cert_file}"\n'
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE, settings)
    with Sink(tls_context=context) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body="sent over TLS"))[0] == 250
        copies = sink.wait_for(len(MEMBERS))
    alice_copy = next(c for c in copies if c.rcpt_tos == (people["alice"].email,))
    assert b"sent over TLS" in decrypt(people["alice"], encrypted_part(alice_copy.data), list_key, list_fpr)
