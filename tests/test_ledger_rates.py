"""The rates listserv.ledger keeps for LIST-owner@ and LIST-sendkey@, on a real store and spool:
what a flood gets, what a second list or a new day gets, and that a refused claim leaves no job."""

from __future__ import annotations

import time

import pytest

from listserv.errors import RateLimited, Unanswered
from listserv.ledger import OWNER_PER_HOUR, claim_key_reply, claim_owner_slot
from listserv.model import Kind, MailingList
from listserv.spool import Spool
from listserv.stages.sendkey import SENDKEY_PER_DAY, KeyRequest, sender_digest
from listserv.store import Store

NEWS = MailingList("news@example.org", "News", "A" * 40)
TIPS = MailingList("tips@example.org", "Tips", "B" * 40)


@pytest.fixture
def home(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return Store(tmp_path / "events.json"), spool


def ask(address: str, ml: MailingList = NEWS) -> KeyRequest:
    return KeyRequest(address, sender_digest(b"s" * 32, ml, address))


def test_list_owner_takes_its_hourly_share_and_a_refused_one_leaves_no_job(home):
    events, spool = home
    for _ in range(OWNER_PER_HOUR):
        claim_owner_slot(events, spool, spool.accept(NEWS.address, Kind.OWNER, b"sealed"), NEWS)
    with pytest.raises(RateLimited):
        claim_owner_slot(events, spool, spool.accept(NEWS.address, Kind.OWNER, b"sealed"), NEWS)
    assert len(spool.submissions()) == OWNER_PER_HOUR
    claim_owner_slot(events, spool, spool.accept(TIPS.address, Kind.OWNER, b"sealed"), TIPS)  # its own share


def test_sendkey_answers_an_address_once_a_day_and_a_list_a_hundred_times(home):
    events, spool = home
    claim_key_reply(events, spool, spool.accept(NEWS.address, Kind.SENDKEY, b"s"), ask("a@example.com"), NEWS)
    with pytest.raises(Unanswered) as again:
        claim_key_reply(events, spool, spool.accept(NEWS.address, Kind.SENDKEY, b"s"), ask("A@example.com"), NEWS)
    assert again.value.reason == "sendkey-sender-rate"
    claim_key_reply(events, spool, spool.accept(TIPS.address, Kind.SENDKEY, b"s"), ask("a@example.com", TIPS), TIPS)
    for number in range(1, SENDKEY_PER_DAY):
        claim_key_reply(events, spool, spool.accept(NEWS.address, Kind.SENDKEY, b"s"), ask(f"p{number}@example.com"),
                        NEWS)
    with pytest.raises(Unanswered) as full:
        claim_key_reply(events, spool, spool.accept(NEWS.address, Kind.SENDKEY, b"s"), ask("late@example.com"), NEWS)
    assert full.value.reason == "sendkey-list-rate"
    assert len(spool.submissions()) == SENDKEY_PER_DAY + 1  # news@'s hundred and tips@'s one


def test_a_day_later_the_records_are_gone(home):
    events, _ = home
    with events.transaction() as tx:
        tx.rate_take(NEWS.address, "sendkey", time.time() - 2 * 24 * 3600, "old")
    with events.transaction() as tx:
        assert tx.rate_count(NEWS.address, "sendkey", time.time(), 3 * 24 * 3600) == 0  # dropped, not just skipped
