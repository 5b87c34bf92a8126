"""The key watch's I/O on a real home and keyring: a pinned key found revoked goes through the
revocation path, `missed_notice` off sends nothing, and a member whose key works again starts
from zero. The outgoing jobs are read from the spool (tests/e2e/test_keywatch.py delivers them)."""

from __future__ import annotations

import time

from listserv.config import Home
from listserv.context import Context
from listserv.keywatch import MISSED, last_run
from listserv.model import Kind
from listserv.server import watch_keys
from listserv.store import Store

from tests.helpers.cli import write_key
from tests.helpers.keys import GPG_BATCH, make_gpg_user, revoked, run

LIST = "news@example.org"


def test_a_pinned_key_found_revoked_suspends_its_member_and_tells_the_admins(cli, news, people, tmp_path):
    ada = people["alice"]
    rev = make_gpg_user(tmp_path, "Rev", "rev@example.org")
    for user in (ada, rev):
        cli.ok("member", "add", news, user.email, "--key", write_key(tmp_path, user), "--name", user.name)
    cli.ok("member", "set", news, ada.email, "--role", "admin")
    # The revocation reached the keyring by some other way than a command (gpg run by hand).
    run([*GPG_BATCH, "--homedir", str(cli.home / "keys"), "--import"], input=revoked(rev))
    ctx = Context.open(Home(cli.home))
    report, jobs = watch_keys(ctx, time.time())
    assert [r.fingerprint for r in report.revocations] == [rev.fingerprint] and report.warnings == 0
    [member] = [m for m in ctx.store.read().members(news) if m.email == rev.email]
    assert not member.active  # suspended: no posting, no copies
    [told] = jobs  # the admins' notice of the revocation, encrypted to Ada alone
    assert told.kind == Kind.NOTICE and [r.email for r in ctx.outgoing.recipients(told)] == [ada.email]
    assert last_run(ctx.events) is not None
    again, jobs = watch_keys(ctx, time.time() + 2 * 86400)
    assert again.revocations == () and jobs == ()  # told once; a suspended member is not watched


def test_missed_notice_off_sends_nothing_and_a_working_key_starts_from_zero(cli, news, people, tmp_path):
    ada = people["alice"]
    cli.ok("member", "add", news, ada.email, "--key", write_key(tmp_path, ada), "--name", "Ada")
    cli.ok("list", "set", news, "missed_notice", "false")
    events = Store(Home(cli.home).events)
    with events.transaction() as tx:  # as the fan-out counts a post Ada missed
        tx.set_value(MISSED, {news: {ada.fingerprint: {"count": 4, "since": time.time()}}})
    ctx = Context.open(Home(cli.home))
    report, jobs = watch_keys(ctx, time.time())
    assert (report.missed, jobs) == (0, ())
    # Ada's key works: the count is dropped, so a later expiry counts from zero.
    assert events.read().get_value(MISSED) == {}
