"""The key watch end to end, through a real `listserv serve` and a relay sink: the server runs
it at start, then the test drives the same watch with later `now` values against the home's
real keyring, and the server delivers what it queued.

Wes's key (GnuPG) stops in 10 days: he is warned at 14, 7 and 1 days, once each, each warning
readable with his key only. Ada, the admin, gets the summary at start and again a week on.
Eve's key expired long ago (made with --faked-system-time): the posts she misses are counted,
and she hears how many at most once a day, in one list-signed, content-free plain message.
"""

from __future__ import annotations

import email
import json
import time
from email import policy

import pytest

from listserv.config import Home
from listserv.context import Context
from listserv.model import Member, iso
from listserv.server import watch_keys
from listserv.store import Store

from tests.helpers import mail as mf
from tests.helpers.cli import Cli, write_key
from tests.helpers.keys import GPG_BATCH, make_expired_gpg_user, make_gpg_key, make_gpg_user, run
from tests.helpers.members_clients import decrypt, encrypted_part, verify_reply
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
DAY = 86400


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """news@ with Ada (admin), Wes (a key that stops in 10 days) and Eve (a pinned key that has
    expired), served once for the module; the sink's messages and the server's log after the
    whole walk, as the tests below read them."""
    base = tmp_path_factory.mktemp("keywatch")
    ada = make_gpg_user(base, "Ada", "ada@example.org")
    wes = make_gpg_key(base, "Wes", "wes@example.org", expire="10d", subkeys=[("cv25519", "10d", None)])
    eve = make_expired_gpg_user(base, "Eve", "eve@example.org")
    cli = Cli(base / "home")
    cli.ok("init")
    cli.ok("list", "create", LIST, "--name", "News")
    for user in (ada, wes):
        cli.ok("member", "add", LIST, user.email, "--key", write_key(base, user), "--name", user.name)
    cli.ok("member", "set", LIST, ada.email, "--role", "admin")
    # `member add` refuses an expired key; this is one pinned while it worked.
    run([*GPG_BATCH, "--homedir", str(cli.home / "keys"), "--import"], input=eve.public_key)
    with Store(Home(cli.home).database).transaction() as tx:
        tx.add_member(Member(LIST, eve.email, eve.fingerprint, "Eve", added=iso()))
    list_key = cli.ok("list", "key", LIST).stdout.encode()
    fingerprint = json.loads(cli.ok("list", "show", LIST, "--json").stdout)["fingerprint"]
    runs = []
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        proc.wait_log(r"keywatch warnings=1 summaries=1 missed=0 revoked=- next=")  # its own run at start
        start = time.time()
        sink.wait_for(2)  # Wes's 14-day warning, Ada's summary
        ctx = Context.open(Home(cli.home))

        def post(number: int) -> None:
            raw = mf.post(ada, list_key, body=f"Secret plan number {number}.", subject=f"Plan {number}")
            assert submit(proc.port, LIST, raw, mail_from=ada.email)[0] == 250
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.log.count(f"copies=2 unusable={eve.fingerprint}") < number:
                time.sleep(0.05)
            assert proc.log.count(f"copies=2 unusable={eve.fingerprint}") == number, proc.log

        def watch(at: float) -> None:
            before = len(sink.messages)
            report, jobs = watch_keys(ctx, at)
            runs.append((report.warnings, report.summaries, report.missed))
            sink.wait_for(before + len(jobs))

        post(1)
        post(2)
        watch(start + 60)  # Eve: 2 posts
        watch(start + 3600)  # nothing new
        post(3)
        watch(start + 7200)  # within the day: nothing
        watch(start + DAY + 120)  # Eve: 3 posts
        watch(start + 3.5 * DAY)  # Wes: 7 days
        watch(start + 4 * DAY)
        watch(start + 7 * DAY + 300)  # Ada: the weekly summary
        watch(start + 9.5 * DAY)  # Wes: 1 day
        watch(start + 9.9 * DAY)
        time.sleep(1.5)  # a POLL: nothing more is queued
        proc.stop()
    return {"cli": cli, "ada": ada, "wes": wes, "eve": eve, "list_key": list_key, "fingerprint": fingerprint,
            "messages": list(sink.messages), "log": proc.log, "runs": runs}


def to(watched, user):
    return [m for m in watched["messages"] if m.rcpt_tos == (user.email,)]


def opened(watched, copy, user) -> email.message.EmailMessage:
    inner = decrypt(user, encrypted_part(copy.data), watched["list_key"], watched["fingerprint"])
    return email.message_from_bytes(inner, policy=policy.default)


def text_of(message) -> str:
    return " ".join("\n".join(p.get_content() for p in message.walk() if p.get_content_type() == "text/plain").split())


def test_each_run_did_what_was_due_and_no_more(watched):
    assert watched["runs"] == [(0, 0, 1), (0, 0, 0), (0, 0, 0), (0, 0, 1), (1, 0, 0), (0, 0, 0), (0, 1, 0),
                               (1, 0, 0), (0, 0, 0)]


def test_a_key_ending_in_ten_days_is_warned_once_at_fourteen_seven_and_one_readable_only_by_its_member(watched):
    wes, ada = watched["wes"], watched["ada"]
    warnings = [m for m in to(watched, wes) if b"Secret plan" not in opened(watched, m, wes).as_bytes()
                and "stops working" in opened(watched, m, wes)["Subject"]]
    subjects = [opened(watched, m, wes)["Subject"] for m in warnings]
    assert subjects == ["[News] Your key for News stops working in 9 days",
                        "[News] Your key for News stops working in 6 days",
                        "[News] Your key for News stops working within a day"]
    body = text_of(opened(watched, warnings[0], wes))
    for how in (f"gpg --quick-set-expire {wes.fingerprint} 1y", f"gpg --quick-set-expire {wes.fingerprint} 1y '*'",
                f"sq key expire --cert {wes.fingerprint} --expiration 1y", "Change Expiration Date",
                "x-key-update", "news-request@example.org"):
        assert how in body, how
    for copy in warnings:
        assert b"stops working" not in copy.data  # nothing in clear
        other = run([*GPG_BATCH, "--homedir", str(ada.home), "--decrypt"], input=encrypted_part(copy.data), check=False)
        assert other.returncode != 0 and b"stops working" not in other.stdout  # Ada's key cannot open it


def test_the_admins_get_the_summary_at_start_and_again_a_week_on(watched):
    ada, wes, eve = watched["ada"], watched["wes"], watched["eve"]
    summaries = [opened(watched, m, ada) for m in to(watched, ada)]
    summaries = [s for s in summaries if "working soon" in s["Subject"]]
    assert [s["Subject"] for s in summaries] == ["[News] Keys stop working soon on News"] * 2
    text = text_of(summaries[0])
    assert f"Wes key {wes.fingerprint} stops" in text and f"Eve key {eve.fingerprint} stopped working" in text
    assert wes.email not in text and eve.email not in text  # by pseudonym
    assert f"listserv keys check {LIST}" in text


def test_an_expired_members_missed_posts_produce_one_plain_signed_notice_a_day(watched, tmp_path):
    eve = watched["eve"]
    notices = to(watched, eve)
    assert len(notices) == 2  # and never a copy of a post
    counts = []
    for index, notice in enumerate(notices):
        scratch = tmp_path / str(index)
        scratch.mkdir()
        message = verify_reply(notice.data, watched["list_key"], watched["fingerprint"], scratch)
        assert notice.mail_from in ("", "<>") and message["Auto-Submitted"] == "auto-generated"
        assert message["From"].addresses[0].addr_spec == "news-request@example.org"
        assert b"Secret plan" not in notice.data and b"Plan " not in notice.data
        assert watched["ada"].email.encode() not in notice.data and b"Wes" not in notice.data
        counts.append(text_of(message).split(" could not")[0])
    assert counts == ["2 posts to news@example.org", "3 posts to news@example.org"]
    assert "send an updated key" in text_of(message) and "x-key-update" in text_of(message)


def set_last_run(cli, at: float) -> None:
    with Store(Home(cli.home).events).transaction() as tx:
        tx.set_value("keywatch", {**tx.get_value("keywatch"), "last_run": at})


def test_the_log_names_no_member_address_and_a_restart_runs_the_watch_only_when_due(watched):
    log = watched["log"]
    for user in ("ada", "wes", "eve"):
        assert watched[user].email not in log
    cli = watched["cli"]
    ran = time.time() - 3600
    set_last_run(cli, ran)  # an hour ago: a restart does not run it again
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert proc.wait_log(r"keywatch next=(\S+)").group(1) == iso(ran + DAY)
        time.sleep(1.5)  # a POLL or so: time for a run that should not come
    assert "keywatch warnings=" not in proc.log
    set_last_run(cli, time.time() - 3 * DAY)  # down for three days: one run at start
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        proc.wait_log(r"keywatch warnings=0 summaries=\d missed=0 revoked=- next=")
        time.sleep(1.5)
    assert proc.log.count("keywatch warnings=") == 1
