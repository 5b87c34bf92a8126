"""Issue 10, findings 1 and 4: nothing lost without a word.

The relay here is tests/helpers/sink.py with a message size limit, as Postfix's message_size_limit
(200 KB instead of 10,240,000 bytes): it announces SIZE, refuses MAIL FROM SIZE= above it and
a larger message at DATA with 552 5.3.4. Before this issue listserv said 250 to a post whose
copies the relay then refused, logged `delivered ... sent=0 failed=4` and told no one.
"""

from __future__ import annotations

import base64
import email
import json
import os
import re
import smtplib
import time
from email import policy

from listserv.config import Home
from listserv.context import Context
from listserv.pipeline import receive
from listserv.stages.route import route

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
MEMBERS = ("alice", "bob", "sally", "rita")
RELAY_SIZE = 200_000
FAST = "[delivery]\nretry_min = 1\nretry_max = 2\nconcurrency = 2\n"
DIGEST_MODES = {"alice": "immediate", "bob": "digest", "sally": "digest", "rita": "immediate"}


IMMEDIATE = {key: "immediate" for key in MEMBERS}


def filler(size: int) -> str:
    """`size` characters of random base64 text in 76-character lines: what an attachment
    looks like to a mail system, and nearly as incompressible as text gets."""
    text = base64.b64encode(os.urandom(size)).decode()[:size]
    lines = [text[i:i + 76] for i in range(0, len(text), 76)]
    return "\r\n".join(lines)


def limit_in(reply: str) -> int:
    """The limit the refusal gives, in bytes (it says KB of 1,024 bytes, rounded down)."""
    match = re.search(r"at most (\d+) KB", reply)
    assert match, reply
    return int(match.group(1)) * 1024


def plain_text(user, copy, list_key, list_fpr) -> str:
    plain = decrypt(user, encrypted_part(copy.data), list_key, list_fpr)
    return email.message_from_bytes(plain, policy=policy.default).get_body(("plain",)).get_content()


def by_recipient(people, copies, key):
    return [c for c in copies if c.rcpt_tos == (people[key].email,)]


def wait_until(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


# -- finding 1: a post whose copies the relay would refuse is refused at the door ----------

def test_a_post_whose_copies_exceed_the_relays_size_is_refused_at_data_with_the_limit(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST)
    post = mf.post(people["alice"], list_key, body=filler(300_000), subject="Large report")
    assert 250_000 < len(post) < 7000 * 1024  # well under the list's own max_message_size_kb
    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, reply = submit(proc.port, LIST, post)
        assert (code, reply.split()[0]) == (552, "5.3.4"), reply
        assert "The message is larger than this list can deliver (at most" in reply
        limit = limit_in(reply)
        assert 0.5 * RELAY_SIZE < limit < RELAY_SIZE  # copies are a third larger than posts
        # A post under the limit still goes (the relay is not refused everything).
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body="small"))[0] == 250
        sink.wait_for(len(MEMBERS))
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")
    assert sink.oversize == []  # nothing was ever sent that the relay refused
    assert json.loads(cli.ok("queue", "--json").stdout) == []
    [rejection] = cli.json("rejections", LIST)
    assert rejection["reason"] == "too-large-for-relay" and rejection["reply"] == "552 5.3.4"


def test_a_declared_size_over_the_limit_is_refused_at_mail_from(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST)
    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        with smtplib.SMTP("127.0.0.1", proc.port, timeout=30) as client:
            client.ehlo("client.test")
            code, text = client.mail("someone@example.net", ["SIZE=300000"])
            assert (code, text.decode().split()[0]) == (552, "5.3.4")
            assert "larger than this list can deliver" in text.decode()
            limit = limit_in(text.decode())
            client.rset()
            code, _ = client.mail("someone@example.net", [f"SIZE={limit - 1024}"])
            assert code == 250  # under the limit: on to RCPT
            client.rset()
            # A bounce (null sender) may carry a whole copy back: never held to a post's limit.
            assert client.mail("", ["SIZE=300000"])[0] == 250
            assert client.rcpt("news-bounces+abc@example.org")[0] == 250


def test_a_post_just_under_the_limit_fits_the_relay_and_one_just_over_is_refused(tmp_path, people):
    """The bound is honest: with compression off (the bound never counts on it) and a
    signed-only post (whose content is as large as the post itself), copies of a post just
    under the limit come close to the relay's limit without passing it."""
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST)
    cli.ok("list", "set", LIST, "require_encryption", "false")
    (cli.home / "keys" / "gpg.conf").write_text("compress-algo none\n")

    def signed_post(size: int, marker: str) -> bytes:
        body = filler(size)
        post = mf.post(people["alice"], None, body=f"{marker}\r\n{body}", style="signed")
        body = filler(size + (size - len(post)))  # the signature and headers are the rest
        post = mf.post(people["alice"], None, body=f"{marker}\r\n{body}", style="signed")
        assert abs(len(post) - size) < 200, (len(post), size)
        return post

    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, reply = submit(proc.port, LIST, signed_post(RELAY_SIZE, "too large"))
        assert code == 552
        limit = limit_in(reply)
        assert submit(proc.port, LIST, signed_post(limit - 600, "just under"))[0] == 250
        copies = sink.wait_for(len(MEMBERS))
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")
        code, reply = submit(proc.port, LIST, signed_post(limit + 1024 + 600, "just over"))
        assert (code, reply.split()[0]) == (552, "5.3.4")
    assert sink.oversize == []
    for copy in copies:
        assert 0.75 * RELAY_SIZE < len(copy.data) <= RELAY_SIZE, len(copy.data)


def test_a_post_that_decompresses_into_too_much_is_measured_as_it_will_go(tmp_path, people):
    """A client that compresses can put far more content in a small post: the content is
    what fan-out encrypts, so that is what is held to the relay's limit."""
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST)
    (cli.home / "keys" / "gpg.conf").write_text("compress-algo none\n")  # as an operator may set
    text = "The same line, over and over, compresses to almost nothing.\r\n" * 6000  # 374 KB
    post = mf.post(people["alice"], list_key, body=text)  # gpg compresses it
    assert len(post) < 50_000
    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, reply = submit(proc.port, LIST, post)
    assert (code, reply.split()[0]) == (552, "5.3.4") and "can deliver" in reply
    assert sink.messages == [] and sink.oversize == []


def test_the_limit_is_kept_in_the_home_and_an_outbox_has_none(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST)
    post = mf.post(people["alice"], list_key, body=filler(300_000))
    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        proc.wait_log(rf"relay-limit size={RELAY_SIZE}")
    # The relay cannot be reached at the next start: the limit learned last stays.
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        proc.wait_log(rf"relay-limit unreachable reason=connect-\w+; keeping size={RELAY_SIZE}")
        assert submit(proc.port, LIST, post)[0] == 552
    learned = json.loads((cli.home / "data" / "spool" / "relay.json").read_text())
    assert learned["size"] == RELAY_SIZE
    with ServeProcess(cli.home) as proc:  # the outbox takes anything
        proc.wait_log(r"relay-limit size=none source=outbox")
        assert submit(proc.port, LIST, post)[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=4 failed=0")


def test_a_relay_that_refuses_by_size_without_saying_so_teaches_its_limit(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, IMMEDIATE, FAST)
    post = mf.post(people["alice"], list_key, body=filler(300_000))
    with Sink(size=RELAY_SIZE, announce=False) as sink, \
            ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, post)[0] == 250  # nothing known yet to refuse it by
        proc.wait_log(r"undelivered qid=\S+ failed=4 kind=post reasons=data-552-5\.3\.4x4")
        refused = min(sink.oversize)
        proc.wait_log(rf"relay-limit size={refused - 1} source=relay")
        code, reply = submit(proc.port, LIST, post)  # the same post again: refused at the door
    assert (code, reply.split()[0]) == (552, "5.3.4") and "can deliver" in reply
    assert len(sink.oversize) == len(MEMBERS)  # the second post cost the relay nothing


# -- finding 1: when no copy can be delivered, someone hears of it --------------------------

def test_when_every_copy_fails_admins_and_the_poster_are_told_and_no_line_says_delivered(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE, FAST)
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    refusals = ["554 5.7.1 Refused by policy"] * len(MEMBERS)  # every copy of the post, at DATA
    with Sink(replies=refusals) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body="lost?"))[0] == 250
        qid = proc.wait_log(r"undelivered qid=(\S+) failed=4 kind=post reasons=data-554-5\.7\.1x4").group(1)
        notices = sink.wait_for(2)
        proc.wait_log(r"delivered qid=\S+ sent=1 failed=0 kind=notice")
    assert not re.search(rf"\bdelivered qid={qid}", proc.log)
    assert "alice@example.org" not in proc.log and "lost?" not in proc.log
    [admin] = by_recipient(people, notices, "bob")
    text = plain_text(people["bob"], admin, list_key, list_fpr)
    assert f"by Alice (key {people['alice'].fingerprint})" in text
    assert f"queue id {qid}" in text and "reached none of its 4 recipients" in text
    assert "4 x the relay refused the copy at DATA (554-5.7.1)" in text
    [note] = by_recipient(people, notices, "alice")  # to the poster's pinned key
    text = plain_text(people["alice"], note, list_key, list_fpr)
    assert "reached none of the list's members" in text and qid in text
    assert email.message_from_bytes(note.data, policy=policy.default)["Subject"] == "[...]"


# -- finding 1: digests fit the relay, and a digest nobody got is not marked sent ---------------

def test_a_digest_over_the_limit_goes_out_in_parts_each_under_it(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, DIGEST_MODES, FAST)
    bodies = [f"Report {n}.\r\n" + filler(60_000) for n in (1, 2, 3)]
    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        for n, body in enumerate(bodies, start=1):
            assert submit(proc.port, LIST, mf.post(people["alice"], list_key, subject=f"Report {n}",
                                                  body=body))[0] == 250
        sink.wait_for(6)  # the immediate copies
        assert "queued" in cli.ok("digest", "send", LIST).stdout  # the CLI knows the relay's limit
        copies = sink.wait_for(12)[6:]
        wait_until(lambda: not list((cli.home / "data" / "digest" / LIST).glob("*.pgp")),
                   "the delivered digest's posts leave the backlog")
    assert sink.oversize == []
    for reader in ("bob", "sally"):
        parts = by_recipient(people, copies, reader)
        assert len(parts) == 3
        seen = []
        for copy in parts:
            assert len(copy.data) <= RELAY_SIZE
            plain = decrypt(people[reader], encrypted_part(copy.data), list_key, list_fpr)
            digest = email.message_from_bytes(plain, policy=policy.default)
            assert re.fullmatch(r"\[News\] News digest, Vol 1, Issue 1, part [123] of 3", digest["Subject"])
            text = digest.get_body(("plain",)).get_content()
            seen += [n for n in (1, 2, 3) if f"Report {n}." in text]
        assert sorted(seen) == [1, 2, 3]  # each post in exactly one part
    state = json.loads(cli.ok("digest", "show", LIST, "--json").stdout)
    assert (state["pending"], state["issue"]) == (0, 1)


def test_a_digest_whose_copies_failed_is_not_marked_sent_and_goes_out_with_the_next(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, DIGEST_MODES, FAST)
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "admin")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["rita"], list_key, body="Keep this one."))[0] == 250
        sink.wait_for(2)
        sink.replies = ["554 5.7.1 Not now"] * 2  # both readers' copies of the digest
        cli.ok("digest", "send", LIST)
        proc.wait_log(r"undelivered qid=\S+ failed=2 kind=digest")
        [notice] = sink.wait_for(3)[2:]
        wait_until(lambda: json.loads(cli.ok("digest", "show", LIST, "--json").stdout)["pending"] == 1,
                   "the digest's post is waiting again")
        assert "queued" in cli.ok("digest", "send", LIST).stdout  # the post is still waiting
        copies = sink.wait_for(5)[3:]
        proc.wait_log(r"delivered qid=\S+ sent=2 failed=0 kind=digest")
    assert notice.rcpt_tos == (people["alice"].email,)
    text = plain_text(people["alice"], notice, list_key, list_fpr)
    assert "reached none of its" in text and "wait for the next digest" in text
    assert sorted(c.rcpt_tos[0] for c in copies) == sorted([people["bob"].email, people["sally"].email])
    for copy in copies:
        reader = "bob" if copy.rcpt_tos[0] == people["bob"].email else "sally"
        assert "Keep this one." in plain_text(people[reader], copy, list_key, list_fpr)


def test_a_post_too_large_for_a_digest_after_the_limit_shrank_is_set_aside_and_told(tmp_path, people):
    """The door made sure each post fits a digest part of its own. If the relay's limit then
    shrinks, splitting cannot help that post: once refused as too large it is set aside
    (still sealed), and the admins and the poster hear of it; nothing loops."""
    cli, list_key, list_fpr = make_site(tmp_path, people, DIGEST_MODES, FAST)
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "admin")
    with Sink(size=RELAY_SIZE) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["rita"], list_key, body=filler(80_000)))[0] == 250
        sink.wait_for(2)
        sink.size = 60_000  # the operator lowered message_size_limit; the next connection says so
        cli.ok("digest", "send", LIST)
        proc.wait_log(r"undelivered qid=\S+ failed=2 kind=digest reasons=mail-552x2")
        proc.wait_log(r"set-aside digest item=\S+ list=news@example.org reason=too-large")
        notices = sink.wait_for(4)[2:]
        proc.wait_log(r"relay-limit size=60000 source=relay")
    folder = cli.home / "data" / "digest" / LIST
    assert list(folder.glob("*.pgp")) == [] and len(list(folder.glob("*.undeliverable"))) == 1
    assert json.loads(cli.ok("digest", "show", LIST, "--json").stdout)["pending"] == 0
    [admin] = by_recipient(people, notices, "alice")
    assert "The post by Rita it carried is too large for the relay on its own" in \
        plain_text(people["alice"], admin, list_key, list_fpr)
    [poster] = by_recipient(people, notices, "rita")
    assert "could not go out with the digest" in plain_text(people["rita"], poster, list_key, list_fpr)


# -- finding 4: a member refused at RCPT is a bounce ------------------------------------------

def test_a_member_refused_at_rcpt_counts_a_bounce_and_admins_hear_at_the_threshold(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE, FAST)
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    cli.ok("list", "set", LIST, "bounce_pause", "false")  # counted only (the pause: tests/e2e/test_bounce_pause.py)
    rita = people["rita"]
    with Sink(refuse_rcpt={rita.email: "550 5.1.1 <rita@example.net>: Recipient address rejected"}) as sink, \
            ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body="one"))[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=3 failed=1")

        def bounces() -> dict[str, int]:
            return {m["email"]: m["bounces"] for m in cli.json("member", "list", LIST)}

        wait_until(lambda: bounces()[rita.email] == 1, "Rita's refusal at RCPT is counted")
        assert bounces()[people["bob"].email] == 0
        proc.wait_log(rf"bounce list={LIST} member={rita.fingerprint} source=rcpt")
        for body in ("two", "three"):
            assert submit(proc.port, LIST, mf.post(people["alice"], list_key, body=body))[0] == 250
        received = sink.wait_for(3 * 3 + 1)
        notices = [c for c in by_recipient(people, received, "bob")
                   if "have bounced" in plain_text(people["bob"], c, list_key, list_fpr)]
        assert len(notices) == 1
    text = plain_text(people["bob"], notices[0], list_key, list_fpr)
    assert rita.fingerprint in text and "3 times" in text
    assert bounces()[rita.email] == 3
    assert re.search(rf"failed qid=\S+ copy=\d+ member={rita.fingerprint} reason=rcpt-550-5\.1\.1", proc.log)
    assert rita.email not in proc.log
    # No notice of "copies not delivered" besides: a refused address is a bounce, told at 3.
    assert all("were delivered. These members" not in plain_text(people["bob"], c, list_key, list_fpr)
               for c in by_recipient(people, sink.messages, "bob"))


def test_a_relay_refusing_every_recipient_is_the_relay_not_the_members(tmp_path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE, FAST)
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    refuse = {people[k].email: "554 5.7.1 Relay access denied" for k in MEMBERS}
    with Sink(refuse_rcpt=refuse) as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"undelivered qid=\S+ failed=4 kind=post reasons=rcpt-554-5\.7\.1x4")
        proc.wait_log(r"undelivered qid=\S+ failed=1 kind=notice")  # the notices, refused too
    bounces = {m["email"]: m["bounces"] for m in cli.json("member", "list", LIST)}
    # Sally and Rita only got the post: the relay refused all of its recipients, which is no
    # bounce. (A notice has one recipient: its refusal counts, as nothing tells it apart.)
    assert bounces[people["sally"].email] == bounces[people["rita"].email] == 0
    assert sink.messages == []


def test_a_post_accepted_then_set_aside_at_fan_out_is_told_to_the_admins(tmp_path, people):
    """Accepted (250) and spooled, then its sender was removed before the worker reached it:
    the post is quarantined -- and the admins hear of it, where there was only a log line."""
    cli, list_key, list_fpr = make_site(tmp_path, people, IMMEDIATE, FAST)
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    home = Home(cli.home)
    accepted = receive(mf.post(people["alice"], list_key, body="hello"), route(LIST, [LIST]),
                      Context.open(home))  # what the listener does before its 250
    cli.ok("member", "remove", LIST, people["alice"].email)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        proc.wait_log(rf"quarantined qid={accepted.job.qid} reason=unknown-key")  # her key left with her
        [notice] = sink.wait_for(1)
        proc.wait_log(r"delivered qid=\S+ sent=1 failed=0 kind=notice")
    [admin] = by_recipient(people, [notice], "bob")
    text = plain_text(people["bob"], admin, list_key, list_fpr)
    assert f"(queue id {accepted.job.qid})" in text and "nobody" in text
    assert "removed from the list after the post arrived" in text
    assert (cli.home / "data" / "spool" / "bad" / accepted.job.qid).exists()
