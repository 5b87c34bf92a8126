"""Issue 5 end to end: digests for members who want fewer mails, urgent alerts that reach
everyone at once (ahead of anything queued), and welcomes."""

from __future__ import annotations

import email
import json
import threading
from datetime import datetime, timedelta, timezone
from email import policy

import pytest

from listserv.cli import App
from listserv.cli.digests import digests_for
from listserv.digest import DigestItem, Digests, render_digest
from listserv.model import MailingList, Member
from listserv.stages.compose import Post, Wrapping, compose
from listserv.templates import Templates

from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.members_clients import decrypt, encrypted_part, recipient_key_ids
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
MODES = {"alice": "immediate", "bob": "digest", "sally": "digest", "rita": "immediate"}


def outer(copy) -> email.message.EmailMessage:
    return email.message_from_bytes(copy.data, policy=policy.default)


def test_digest_members_get_one_digest_with_every_pending_post(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, MODES)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        for n, who in enumerate(("alice", "rita", "alice"), start=1):
            assert submit(proc.port, LIST, mf.post(people[who], list_key, subject=f"Topic {n}",
                                                  body=f"Body of post number {n}."))[0] == 250
            proc.wait_log(r"delivered qid=\S+ sent=2 failed=0", timeout=30)
        immediate = sink.wait_for(6)
        assert {c.rcpt_tos[0] for c in immediate} == {people["alice"].email, people["rita"].email}
        assert json.loads(cli.ok("digest", "show", LIST, "--json").stdout)["pending"] == 3

        assert "queued" in cli.ok("digest", "send", LIST).stdout
        copies = sink.wait_for(8)[6:]
        assert "none was sent" in cli.ok("digest", "send", LIST).stdout
        proc.wait_log(r"delivered qid=\S+ sent=2 failed=0")
    assert len(sink.messages) == 8, "a second send with nothing new sent something"
    assert sorted(c.rcpt_tos[0] for c in copies) == sorted([people["bob"].email, people["sally"].email])
    for copy in copies:
        user = people["bob"] if copy.rcpt_tos[0] == people["bob"].email else people["sally"]
        armored = encrypted_part(copy.data)
        assert len(recipient_key_ids(armored)) == 1
        plain = decrypt(user, armored, list_key, list_fpr).decode()
        digest = email.message_from_string(plain, policy=policy.default)
        assert digest["Subject"] == "[News] News digest, Vol 1, Issue 1"
        assert outer(copy)["Subject"] == "[...]"
        text = digest.get_body(("plain",)).get_content()
        assert text.index("Topic 1") < text.index("Topic 2") < text.index("Topic 3")
        for n in (1, 2, 3):
            assert f"Body of post number {n}." in text
        assert "Alice" in text and "Rita" in text
        assert "alice@example.org" not in plain and "rita@example.net" not in plain
        html = digest.get_body(("html",)).get_content()
        assert "Body of post number 2." in html
    # Nobody else can read a digest copy.
    with pytest.raises(Exception):
        decrypt(people["alice"], encrypted_part(copies[0].data), list_key, list_fpr)
    state = json.loads(cli.ok("digest", "show", LIST, "--json").stdout)
    assert (state["pending"], state["issue"]) == (0, 1)


def test_the_backlog_is_sealed(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, MODES)
    marker = "digest-backlog-marker-3310"
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body=marker, subject=marker))[0] == 250
        proc.wait_log(r"fanned-out")
    backlog = list((cli.home / "data" / "digest").rglob("*.pgp"))
    assert len(backlog) == 1
    for path in (cli.home / "data").rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


def test_a_scheduled_digest_fires_from_serve(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, MODES)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        sink.wait_for(2)
        cli.ok("list", "set", LIST, "digest_schedule", "every 1s")
        proc.wait_log(r"digest qid=\S+ list=news@example.org", timeout=30)
        copies = sink.wait_for(4)
    assert {c.rcpt_tos[0] for c in copies[2:]} == {people["bob"].email, people["sally"].email}


def test_an_urgent_alert_reaches_everyone_ahead_of_a_large_queued_post(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, MODES, "[delivery]\nconcurrency = 1\n")
    big = "A long report.\n" + ("x" * 70 + "\n") * 3000
    with Sink(delay=0.4) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        # A post to every member (sent as an alert to reach the digest members too) keeps the
        # slow relay busy; the urgent alert sent after it must not wait behind it.
        cli.ok("member", "set", LIST, people["bob"].email, "--mode", "immediate")
        cli.ok("member", "set", LIST, people["sally"].email, "--mode", "immediate")
        assert submit(proc.port, LIST, mf.post(people["rita"], list_key, body=big, subject="Report"))[0] == 250
        proc.wait_log(r"fanned-out")
        cli.ok("member", "set", LIST, people["bob"].email, "--mode", "digest")
        cli.ok("member", "set", LIST, people["sally"].email, "--mode", "digest")
        alert = mf.post(people["alice"], list_key, to="news+urgent@example.org",
                        subject="Leave the building", body="They are coming at noon.")
        assert submit(proc.port, "news+urgent@example.org", alert)[0] == 250
        copies = sink.wait_for(8, timeout=60)
    order = ["alert" if outer(c)["X-Priority"] == "1" else "post" for c in copies]
    assert order.count("alert") == 4
    last_alert = max(i for i, kind in enumerate(order) if kind == "alert")
    assert order[last_alert + 1:].count("post") >= 2, order  # the alert overtook the queued post
    for copy in (c for c, kind in zip(copies, order) if kind == "alert"):
        assert outer(copy)["Importance"] == "high" and outer(copy)["Priority"] == "urgent"
        who = next(k for k in MODES if people[k].email == copy.rcpt_tos[0])
        plain = decrypt(people[who], encrypted_part(copy.data), list_key, list_fpr).decode()
        inner = email.message_from_string(plain, policy=policy.default)
        assert inner["Subject"].startswith("URGENT:")
        assert "URGENT ALERT" in plain and "They are coming at noon." in plain
    assert {c.rcpt_tos[0] for c, kind in zip(copies, order) if kind == "alert"} == {
        people[k].email for k in MODES}


def test_an_alert_appears_in_the_next_digest_marked(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, MODES)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        alert = mf.post(people["alice"], list_key, to="news+urgent@example.org", subject="Fire drill")
        assert submit(proc.port, "news+urgent@example.org", alert)[0] == 250
        sink.wait_for(4)
        cli.ok("digest", "send", LIST)
        copies = sink.wait_for(6)[4:]
    plain = decrypt(people["bob"], encrypted_part(next(c for c in copies if c.rcpt_tos[0] == people["bob"].email).data),
                    list_key, list_fpr).decode()
    assert "[ALERT] URGENT: [News] Fire drill" in plain


def test_missed_schedule_times_give_one_digest_and_due_follows_the_oldest_post(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, MODES)
    cli.ok("list", "set", LIST, "digest_schedule", "daily 18:00")
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"fanned-out")
    digests = digests_for(App(cli.home))
    mailing_list = digests.store.read().require_list(LIST)
    now = datetime.now(timezone.utc)
    due = digests.outlook(mailing_list).next_due
    assert now < due <= now + timedelta(days=1) and (due.hour, due.minute) == (18, 0)
    assert not digests.due(mailing_list, now)
    three_days_later = now + timedelta(days=3)
    assert digests.due(mailing_list, three_days_later)
    assert digests.send(LIST, three_days_later) is not None
    assert not digests.due(mailing_list, three_days_later)  # one digest, not three
    assert digests.send(LIST, three_days_later) is None


def test_two_processes_never_send_the_same_digest(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, MODES)
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"fanned-out")
    results = []
    threads = [threading.Thread(target=lambda: results.append(digests_for(App(cli.home)).send(LIST)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(job is not None for job in results) == 1
    digest_jobs = [j for j in json.loads(cli.ok("queue", "--json").stdout) if j["kind"] == "digest"]
    assert len(digest_jobs) == 1


def test_welcome_is_encrypted_to_the_new_member_with_the_list_key(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, {**people, **{}}, MODES)
    cli.ok("member", "remove", LIST, people["rita"].email)
    result = cli.ok("member", "add", LIST, people["rita"].email, "--key", write_key(tmp_path, people["rita"]),
                    "--name", "Rita", "--welcome")
    assert "welcome to rita@example.net queued" in result.stdout
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}"):
        [copy] = sink.wait_for(1)
    assert copy.rcpt_tos == (people["rita"].email,)
    plain = decrypt(people["rita"], encrypted_part(copy.data), list_key, list_fpr).decode()
    welcome = email.message_from_string(plain, policy=policy.default)
    assert welcome["Subject"] == "[News] Welcome to News"
    text = welcome.get_body(("plain",)).get_content()
    assert list_fpr in text and "news+urgent@example.org" in text
    key = next(p for p in welcome.iter_attachments() if p.get_filename() == "list-key.asc")
    assert mf.key_fingerprint(key.get_content().encode() if isinstance(key.get_content(), str)
                              else key.get_content()) == list_fpr


def test_a_digest_interrupted_after_its_job_was_written_takes_no_later_post(tmp_path, people, monkeypatch):
    """kill -9 between writing the digest job and recording the issue: the restarted send
    finishes that issue with its own posts; a post that arrived meanwhile waits for the next."""
    cli, _, _ = make_site(tmp_path, people, MODES)
    digests = digests_for(App(cli.home))
    mailing_list = digests.store.read().require_list(LIST)

    def item(subject: str) -> DigestItem:
        return DigestItem("Alice", subject, 0.0, "post", b"Content-Type: text/plain\r\n\r\nText.\r\n")

    digests.add(mailing_list, "aaaaaaaaaaaa", item("First"))
    digests.add(mailing_list, "bbbbbbbbbbbb", item("Second"))

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(Digests, "_record", killed)
        with pytest.raises(Killed):
            digests.send(LIST)
    assert len(json.loads(cli.ok("queue", "--json").stdout)) == 1  # issue 1, holding two posts
    digests.add(mailing_list, "cccccccccccc", item("Third"))  # after the restart

    assert digests.send(LIST) is None  # issue 1's job exists already
    assert [p.name.split("-")[1] for p in digests.backlog(LIST)] == ["cccccccccccc.pgp"]
    outlook = digests.outlook(mailing_list)
    assert (outlook.issue, outlook.pending) == (1, 1)


def test_an_unreadable_backlog_entry_is_set_aside_and_does_not_block_the_digest(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, MODES)
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body="readable post"))[0] == 250
        proc.wait_log(r"fanned-out")
    folder = next((cli.home / "data" / "digest").iterdir())
    (folder / "00000000000000000001-garbage.pgp").write_bytes(b"not sealed at all")
    assert "queued" in cli.ok("digest", "send", LIST).stdout
    assert (folder / "00000000000000000001-garbage.bad").exists()
    assert json.loads(cli.ok("digest", "show", LIST, "--json").stdout)["pending"] == 0  # in the digest
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        copies = sink.wait_for(2)
        proc.wait_log(r"delivered qid=\S+ sent=2 failed=0 kind=digest")
    assert not list(folder.glob("*.pgp"))  # delivered: gone from the backlog
    plain = decrypt(people["bob"], encrypted_part(next(c for c in copies if c.rcpt_tos[0] == people["bob"].email).data),
                    list_key, list_fpr).decode()
    assert "readable post" in plain


def test_a_digest_entry_shows_a_post_as_an_rfc_9788_client_does(tmp_path):
    """The posts' legacy display (their From and Subject repeated for old clients) is not
    repeated in each entry, which names sender and Subject itself; the digest has its own."""
    news = MailingList(LIST, "News", "A" * 40, {"subject_prefix": "[News]"})
    alice = Member(LIST, "alice@example.org", "B" * 40, "Alice")
    now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    items = []
    for content in (b"Subject: Plans\r\n\r\nMeet at noon.\r\n",
                    b"Subject: Map\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                    b"iVBORw0KGgo=\r\n"):
        composed = compose(Post(content, "post", alice), news, Wrapping("-- \nfooter\n"), now=now,
                           message_id="<x@example.org>")
        items.append(DigestItem("Alice", composed.subject, now.timestamp(), "post", composed.inner))
    digest = email.message_from_bytes(render_digest(Templates(), news, 1, 1, items, now), policy=policy.default)
    text = digest.get_body(("plain",)).get_content()
    assert "via News" not in text and "Subject: [News]" not in text
    assert text.count("Meet at noon.") == 1 and "[News] Map" in text
    digest_composed = compose(Post(render_digest(Templates(), news, 1, 1, items, now), "digest"), news,
                              Wrapping("-- \nfooter\n"), now=now, message_id="<d@example.org>")
    inner = email.message_from_bytes(digest_composed.inner, policy=policy.default)
    shown = inner.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert shown.startswith("Subject: [News] News digest, Vol 1, Issue 1\n\nNews digest, Volume 1")


@pytest.mark.parametrize("count", [1, 2])
def test_digest_commands_count_posts_in_the_singular_and_the_plural(tmp_path, people, count):
    cli, _, _ = make_site(tmp_path, people, MODES)
    digests = digests_for(App(cli.home))
    mailing_list = digests.store.read().require_list(LIST)
    for n in range(count):
        digests.add(mailing_list, f"{n:012d}", DigestItem("Alice", f"Topic {n}", 0.0, "post",
                                                          b"Content-Type: text/plain\r\n\r\nText.\r\n"))
    posts = "1 post waits" if count == 1 else "2 posts wait"
    assert cli.ok("digest", "show", LIST).stdout.startswith(f"{posts} for the next {LIST} digest.\n")
    digest = "1 post" if count == 1 else "2 posts"
    assert cli.ok("digest", "send", LIST).stdout.startswith(f"Digest of {digest} queued as ")
