"""A resend's outside copies (listserv.resend) through a crash: `kill -9` after each durable
write of the hand-over, then the run a restarted server makes -- each contact's copy is queued
exactly once, and the members' copies too."""

from __future__ import annotations

from collections import Counter

import pytest

from listserv.config import Home
from listserv.context import Context
from listserv.deliver import Failure, Outcome
from listserv.model import Kind
from listserv.pipeline import distribute, receive, settle
from listserv.spool import Outgoing
from listserv.stages.route import route
from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.keys import make_gpg_user

LIST = "news@example.org"


class Killed(BaseException):
    """The process died here: nothing after this line ran."""


@pytest.mark.parametrize("writes", [1, 2, 3])
def test_a_crash_after_any_write_neither_loses_nor_doubles_an_outside_copy(tmp_path, people, monkeypatch, writes):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate"})
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "spokesperson")
    for name in ("desk", "night"):
        contact = make_gpg_user(tmp_path / name, name.title(), f"{name}@paper.example")
        cli.ok("contact", "add", LIST, contact.email, "--key", write_key(tmp_path, contact))
    body = f"x-list-name: {LIST}\nx-resend: desk@paper.example night@paper.example\n\nOur statement."
    home = Home(cli.home)
    receive(mf.post(people["alice"], list_key, body=body), route(LIST, [LIST]), Context.open(home))
    ctx = Context.open(home)
    [job] = ctx.spool.submissions()
    original, calls = Outgoing.write, []

    def write_then_die(self, *args, **kwargs):
        written = original(self, *args, **kwargs)
        calls.append(written)
        if len(calls) == writes:
            raise Killed()
        return written

    with monkeypatch.context() as patch:
        patch.setattr(Outgoing, "write", write_then_die)
        with pytest.raises(Killed):
            distribute(job, ctx)

    ctx = Context.open(home)  # the restarted server
    [job] = ctx.spool.submissions()
    distribute(job, ctx)
    assert ctx.spool.submissions() == []
    outgoing = Outgoing(ctx.spool)
    copies = Counter(r.email for out in outgoing.jobs() for r in outgoing.recipients(out))
    assert copies == {"desk@paper.example": 1, "night@paper.example": 1,
                      people["alice"].email: 1, people["bob"].email: 1}
    assert {out.return_path for out in outgoing.jobs() if out.qid != job.qid} == {"news-owner@example.org"}


def test_a_contacts_copy_the_relay_refuses_is_told_to_the_admins_and_counts_no_bounce(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate"})
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "spokesperson")
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    cli.ok("contact", "add", LIST, "plain@paper.example")
    cli.ok("list", "set", LIST, "resend_unencrypted", "true")
    body = f"x-list-name: {LIST}\nx-resend: plain@paper.example\n\nOur statement."
    home = Home(cli.home)
    receive(mf.post(people["alice"], list_key, body=body), route(LIST, [LIST]), Context.open(home))
    ctx = Context.open(home)
    [job] = ctx.spool.submissions()
    resent = distribute(job, ctx).notices
    [copy] = [out for out in resent if out.kind == Kind.RESEND]
    assert copy.return_path == "news-owner@example.org"
    outcome = Outcome(copy, 1, 0, (Failure(0, "plain@paper.example", "", "rcpt-550-5.1.1"),))
    [told] = settle(outcome, ctx)
    assert [r.email for r in Outgoing(ctx.spool).recipients(told)] == [people["bob"].email]
    assert {m["email"]: m["bounces"] for m in cli.json("member", "list", LIST)} == {
        people["alice"].email: 0, people["bob"].email: 0}
