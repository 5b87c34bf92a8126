"""Bounces as warnings, end to end: the relay answers 550 for one member's address, `listserv
serve` pauses that member (no posts, digests or alerts), the admins are told in an encrypted
notice, the member's own signed x-resume restores delivery; with bounce_pause=false a
refusal is only counted, as before."""

from __future__ import annotations

import json
import re

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.members_clients import read_reply, text_of
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"
URGENT = "news+urgent@example.org"


def members(cli) -> dict[str, dict]:
    return {m["email"]: m for m in json.loads(cli.ok("member", "list", LIST, "--json").stdout)}


def to(sink: Sink, address: str, since: int = 0) -> list:
    return [m for m in sink.messages[since:] if address in m.rcpt_tos]


def test_a_mailbox_that_refuses_for_good_pauses_its_member_until_their_signed_x_resume(tmp_path, people):
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "sally": "immediate",
                                                              "bob": "immediate"})
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    alice, sally, bob = people["alice"], people["sally"], people["bob"]
    with Sink(refuse_rcpt={sally.email: "550 5.1.1 No such user"}) as sink, \
            ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(alice, list_key, body="first"))[0] == 250
        proc.wait_log(rf"bounce-paused list={LIST} member={sally.fingerprint} source=rcpt status=5\.1\.1")
        sink.wait_for(3)  # alice's and bob's copies, and the notice to bob
        [notice] = [m for m in to(sink, bob.email)
                    if "paused" in read_reply(m, bob, list_key, fingerprint)[1]["Subject"]]
        body = text_of(read_reply(notice, bob, list_key, fingerprint)[1])
        assert "Sally" in body and "5.1.1" in body and sally.fingerprint in body and sally.email not in body
        assert members(cli)[sally.email]["bounce_paused"] is True
        assert "bounce-paused" in cli.ok("member", "list", LIST).stdout
        assert sally.email not in proc.log and "No such user" not in proc.log  # fingerprints and codes only

        sink.refuse_rcpt.clear()  # the mailbox works again -- or someone else holds it now
        seen = len(sink.messages)
        assert submit(proc.port, LIST, mf.post(alice, list_key, body="second"))[0] == 250
        assert submit(proc.port, URGENT, mf.post(alice, list_key, body="alert", to=URGENT))[0] == 250
        sink.wait_for(seen + 4)  # each to alice and bob; nothing to sally, not even the alert
        assert to(sink, sally.email, seen) == [] and len(to(sink, bob.email, seen)) == 2

        seen = len(sink.messages)
        body = "\n".join([f"x-list-name: {LIST}", "x-resume", ""])
        assert submit(proc.port, REQUEST, mf.post(sally, list_key, body=body, subject="r", to=REQUEST))[0] == 250
        proc.wait_log(rf"bounce-resumed list={LIST} member={sally.fingerprint} by=member")
        sink.wait_for(seen + 1)
        [reply] = to(sink, sally.email, seen)  # the reply, to her pinned address and key
        assert "delivery was paused because your mailbox refused mail" in \
            text_of(read_reply(reply, sally, list_key, fingerprint)[1])
        assert members(cli)[sally.email]["bounce_paused"] is False

        seen = len(sink.messages)
        assert submit(proc.port, LIST, mf.post(alice, list_key, body="third"))[0] == 250
        sink.wait_for(seen + 3)
        assert len(to(sink, sally.email, seen)) == 1  # she gets the next post

        # bounce_pause off: a refusal is counted as it always was, and pauses nobody.
        cli.ok("list", "set", LIST, "bounce_pause", "false")
        before = members(cli)[sally.email]["bounces"]
        sink.refuse_rcpt[sally.email] = "550 5.1.1 No such user"
        seen = len(sink.messages)
        code, text = submit(proc.port, LIST, mf.post(alice, list_key, body="fourth"))
        assert code == 250
        qid = re.search(r"Queued as (\S+)", text).group(1)
        proc.wait_log(rf"bounce list={LIST} member={sally.fingerprint} source=rcpt qid={qid}")
        after = members(cli)[sally.email]
        assert after["bounce_paused"] is False and after["bounces"] == before + 1
        assert proc.log.count("bounce-paused") == 1

        # On again, paused again; this time an admin resumes her by signed mail.
        cli.ok("list", "set", LIST, "bounce_pause", "true")
        code, text = submit(proc.port, LIST, mf.post(alice, list_key, body="fifth"))
        assert code == 250
        qid = re.search(r"Queued as (\S+)", text).group(1)
        proc.wait_log(rf"bounce list={LIST} member={sally.fingerprint} source=rcpt qid={qid}")  # after the pause
        assert proc.log.count("bounce-paused") == 2 and members(cli)[sally.email]["bounce_paused"] is True
        body = "\n".join([f"x-list-name: {LIST}", f"x-resume-member: {sally.email}", ""])
        assert submit(proc.port, REQUEST, mf.post(bob, list_key, body=body, subject="r", to=REQUEST))[0] == 250
        proc.wait_log(rf"bounce-resumed list={LIST} member={sally.fingerprint} by={bob.fingerprint}")
    assert members(cli)[sally.email]["bounce_paused"] is False
