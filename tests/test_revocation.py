"""Issue 9, revocations: a revocation of a pinned key is taken in at once, whichever command
brings it; every member pinned to that key stops posting and receiving, and admins are told."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from listserv.config import Home
from listserv.digest import Digests
from listserv.errors import Unauthorized
from listserv.model import MailingList, Member
from listserv.outbound import notify_admins
from listserv.pipeline import accept, distribute
from listserv.service import services_for
from listserv.spool import Outgoing
from listserv.stages.authorize import authorize
from listserv.stages.open import Opened
from listserv.stages.route import route
from listserv.templates import Templates

from . import mail_factory as mf
from .conftest import make_site, write_key
from .support import User, make_gpg_user

LIST = "news@example.org"


def fresh(tmp_path_factory, name: str) -> User:
    # A short base path: gpg-agent's socket path must fit in 108 bytes.
    return make_gpg_user(tmp_path_factory.mktemp(name[0].lower()), name, f"{name.lower()}@example.org")


def site_with_carol(tmp_path: Path, tmp_path_factory, people, carol_mode: str = "immediate"):
    """news@ with Alice, Bob (an admin) and a fresh Carol, whose key this test may revoke."""
    cli, list_key, list_fpr = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate"})
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    carol = fresh(tmp_path_factory, "Carol")
    cli.ok("member", "add", LIST, carol.email, "--key", write_key(tmp_path, carol), "--name", "Carol",
           "--mode", carol_mode)
    return cli, list_key, list_fpr, carol


def test_the_key_revoked_state_alone_stops_posts_copies_digests_and_notices(tmp_path, tmp_path_factory, people):
    """The member's state is the record: it holds even where the keyring's copy looks fine."""
    cli, list_key, _, carol = site_with_carol(tmp_path, tmp_path_factory, people)
    dave = fresh(tmp_path_factory, "Dave")
    cli.ok("member", "add", LIST, dave.email, "--key", write_key(tmp_path, dave), "--mode", "digest")
    cli.ok("member", "set", LIST, carol.email, "--role", "admin")
    home = Home(cli.home)
    services, templates = services_for(home), Templates(home.templates)
    with services.store.transaction() as tx:  # what a revocation leaves, minus the keyring
        for user in (carol, dave):
            tx.update_member(replace(tx.require_member(LIST, user.email), state="key-revoked"))
    with pytest.raises(Unauthorized) as refused:
        accept(mf.post(carol, list_key), route(LIST, [LIST]), services)
    assert refused.value.reason == "key-revoked"

    digests = Digests(services, templates, home.digests)
    accept(mf.post(people["alice"], list_key, body="For everyone."), route(LIST, [LIST]), services)
    [job] = services.spool.submissions()
    result = distribute(job, services, templates, digests.add)
    outgoing = Outgoing(services.spool)
    assert {r.email for r in outgoing.recipients(result.job)} == {people["alice"].email, people["bob"].email}
    assert result.unusable == () and result.notices == ()
    assert digests.send(LIST) is None  # Dave was its only reader
    snapshot = services.store.read()
    notice = notify_admins(services, templates, snapshot.require_list(LIST), snapshot.members(LIST),
                           "notice-bounces.txt.j2", member=snapshot.require_member(LIST, dave.email))
    assert {r.email for r in outgoing.recipients(notice)} == {people["bob"].email}


def test_authorize_refuses_a_key_revoked_member_whatever_gpg_said():
    """The member's state is the record: it holds even if the keyring never showed the revocation."""
    news = MailingList(LIST, "News", "A" * 40, {}, "2026-01-05T10:00:00Z")
    carol = Member(LIST, "carol@example.org", "C" * 40, "Carol", state="key-revoked")
    opened = Opened(b"", carol.fingerprint, 1_800_000_000, "d" * 64, True, None, None, None)
    with pytest.raises(Unauthorized) as refused:
        authorize(opened, route(LIST, [LIST]), news, {carol.fingerprint: carol}, 1_800_000_000)
    assert refused.value.reason == "key-revoked"
    active = Member(LIST, "carol@example.org", "C" * 40, "Carol")
    assert authorize(opened, route(LIST, [LIST]), news, {carol.fingerprint: active}, 1_800_000_000) == active
