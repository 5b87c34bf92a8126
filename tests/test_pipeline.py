"""The hand-over from an accepted submission to its delivery job and the digest backlog,
interrupted at each durable step the way `kill -9` would interrupt it, then run again the
way a restarted server runs it."""

from __future__ import annotations

import logging
import time

import pytest

from listserv.config import Home
from listserv.digest import Digests
from listserv.context import Context
from listserv.deliver import Failure, Outcome
from listserv.model import Kind
from listserv.pipeline import bounce, distribute, receive, settle
from listserv.spool import Outgoing, OutJob
from listserv.stages.route import Route, route

from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.keys import make_gpg_user

LIST = "news@example.org"


class Killed(BaseException):
    """The process died here: nothing after this line ran."""


def server(home: Home):
    """What a (re)started server has: the home's parts, the digest backlog among them."""
    return Context.open(home)


def accepted_post(home: Home, list_key: bytes, sender) -> None:
    receive(mf.post(sender, list_key, body="For everyone."), route(LIST, [LIST]), server(home))


def restart_and_distribute(home: Home) -> Digests:
    ctx = server(home)
    [job] = ctx.spool.submissions()
    distribute(job, ctx)
    assert ctx.spool.submissions() == []
    return ctx.digests


def die_after(monkeypatch, owner, name: str) -> None:
    original = getattr(owner, name)

    def then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise Killed(name)

    monkeypatch.setattr(owner, name, then_die)


@pytest.mark.parametrize("step", ["write", "add"])
def test_a_crash_in_the_hand_over_loses_no_digest_copy_and_doubles_none(tmp_path, people, monkeypatch, step):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate", "bob": "digest"})
    home = Home(cli.home)
    accepted_post(home, list_key, people["alice"])
    ctx = server(home)
    [job] = ctx.spool.submissions()
    with monkeypatch.context() as patch:
        die_after(patch, Outgoing if step == "write" else Digests, step)
        with pytest.raises(Killed):
            distribute(job, ctx)

    digests = restart_and_distribute(home)
    assert len(digests.backlog(LIST)) == 1  # bob's digest will hold the post, once
    outgoing = Outgoing(ctx.spool)
    [out] = outgoing.jobs()
    assert [r.email for r in outgoing.recipients(out)] == [people["alice"].email]


def test_a_crash_after_the_backlog_write_of_a_digest_only_list_doubles_nothing(tmp_path, people, monkeypatch):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "digest", "bob": "digest"})
    home = Home(cli.home)
    accepted_post(home, list_key, people["alice"])
    ctx = server(home)
    [job] = ctx.spool.submissions()
    with monkeypatch.context() as patch:
        die_after(patch, Digests, "add")
        with pytest.raises(Killed):
            distribute(job, ctx)

    digests = restart_and_distribute(home)
    assert len(digests.backlog(LIST)) == 1
    assert Outgoing(ctx.spool).jobs() == []


def test_a_post_accepted_before_its_senders_key_expired_is_still_delivered(tmp_path, tmp_path_factory, people):
    """250 means delivered: the fan-out opens the post again, and a key that expired in
    between (a key set to expire at midnight, say) is no reason to drop it."""
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate"})
    # a short base path: gpg-agent's socket path has a length limit
    brief = make_gpg_user(tmp_path_factory.mktemp("exp"), "Brief", "brief@example.org", expire="seconds=4")
    cli.ok("member", "add", LIST, brief.email, "--key", write_key(tmp_path, brief))
    accepted_post(Home(cli.home), list_key, brief)
    time.sleep(5)  # the key expires; nothing is timed
    ctx = server(Home(cli.home))
    [job] = ctx.spool.submissions()
    result = distribute(job, ctx)
    assert result.job is not None
    recipients = {r.email for r in Outgoing(ctx.spool).recipients(result.job)}
    assert people["alice"].email in recipients
    assert brief.email not in recipients  # its key can no longer encrypt


def test_a_bounce_for_a_list_deleted_meanwhile_is_noted_not_an_error(tmp_path, people):
    """Deleted between RCPT and DATA: the reporting MTA hears 250 (nothing to count), not 451."""
    cli, _, _ = make_site(tmp_path, people, {"alice": "immediate"})
    assert bounce(Route("gone@example.org", Kind.BOUNCE, "sometoken"), server(Home(cli.home))) is None


def test_the_end_of_a_job_for_a_deleted_list_leaves_its_digest_backlog_alone(tmp_path, people, caplog):
    cli, _, _ = make_site(tmp_path, people, {"alice": "immediate"})
    ctx = server(Home(cli.home))
    folder = ctx.digests.folder("gone@example.org")
    folder.mkdir(parents=True)
    (folder / "0001-abc.pgp").write_bytes(b"not sealed")
    job = OutJob("q1", "gone@example.org", Kind.DIGEST, time.time(), "r+{token}@x", 1, tmp_path,
                 None, ("0001-abc.pgp",))
    outcome = Outcome(job, 1, 0, (Failure(0, "a@example.org", "F" * 40, "data-552-5.3.4"),))
    with caplog.at_level(logging.INFO):
        assert settle(outcome, ctx) == ()
    assert [p.name for p in folder.iterdir()] == ["0001-abc.pgp"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
