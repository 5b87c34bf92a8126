"""The delivery workers on their own: a job on disk, a transport that misbehaves."""

from __future__ import annotations

import asyncio
import logging
import threading

from listserv import deliver as deliver_module
from listserv.deliver import Deliverer, Outcome, RetryPolicy, Transport
from listserv.errors import DeliveryFailed
from listserv.model import Recipient
from listserv.spool import Outgoing, OutJob, Spool
from listserv.stages.fanout import Fanned

EMAILS = ("alice@example.org", "bob@example.org", "carol@example.net")


def job_on_disk(tmp_path) -> tuple[Outgoing, OutJob]:
    """A fan-out job as distribute() writes it (the packets need not decrypt for this)."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    outgoing = Outgoing(spool)
    recipients = [Recipient(email, f"token{i}", bytes([0xC1, 0x01, i]), 0) for i, email in enumerate(EMAILS)]
    job = outgoing.write("0123456789ab", "news@example.org", "post",
                         Fanned((b"\xd2\x03abc",), b"Subject: [...]\r\n\r\n", b"\r\n",
                                "news-bounces+{token}@example.org", tuple(recipients), ()))
    return outgoing, job


class Recording(Transport):
    """Takes every copy, except that its first send fails with `first` (a bug, say)."""

    def __init__(self, first: Exception):
        self.first: Exception | None = first
        self.sent: list[str] = []

    async def send(self, connection, sender, recipient, message):
        if self.first is not None:
            error, self.first = self.first, None
            raise error
        self.sent.append(recipient)


async def deliver(deliverer: Deliverer, job: OutJob, transport: Recording, copies: int) -> None:
    stop = asyncio.Event()
    workers = asyncio.ensure_future(deliverer.run(stop))
    deliverer.load(job)
    try:
        for _ in range(500):
            if len(transport.sent) >= copies and not deliverer.active or workers.done():
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(workers, 5)


def test_a_worker_carries_on_after_an_unexpected_error(tmp_path, caplog):
    outgoing, job = job_on_disk(tmp_path)
    transport = Recording(RuntimeError("a bug in the transport"))
    deliverer = Deliverer(outgoing, transport, concurrency=1, retry=RetryPolicy(0.05, 0.1, 3600))
    with caplog.at_level(logging.INFO, logger="listserv.deliver"):
        asyncio.run(deliver(deliverer, job, transport, len(EMAILS)))
    assert sorted(transport.sent) == sorted(EMAILS)  # the copy that hit the error too, once
    assert not job.path.exists()  # the job finished
    assert f"error qid={job.qid} copy=0 RuntimeError" in caplog.text
    assert "a bug in the transport" not in caplog.text


def test_loading_a_job_that_was_delivered_meanwhile_does_nothing(tmp_path):
    outgoing, job = job_on_disk(tmp_path)
    outgoing.spool.remove(job)  # delivered and removed while a caller held on to `job`

    async def load() -> None:
        deliverer = Deliverer(outgoing, Recording(RuntimeError("unused")), concurrency=1)
        deliverer.load(job)
        assert deliverer.active == {}

    asyncio.run(load())


def test_a_damaged_job_goes_to_bad_and_the_others_are_delivered(tmp_path, caplog):
    outgoing, job = job_on_disk(tmp_path)
    damaged = outgoing.write("badbadbadbad", "news@example.org", "alert",
                             Fanned((b"\xd2\x03abc",), b"", b"", "news-bounces+{token}@example.org",
                                    (Recipient("dave@example.org", "t", b"\xc1", 0),), ()))
    (damaged.path / "recipients").write_bytes(b"a line a disk error left\n")
    transport = Recording(ValueError("unused"))
    transport.first = None
    deliverer = Deliverer(outgoing, transport, concurrency=1)

    async def both() -> None:
        deliverer.load(damaged)
        await deliver(deliverer, job, transport, len(EMAILS))

    with caplog.at_level(logging.INFO, logger="listserv.deliver"):
        asyncio.run(both())
    assert sorted(transport.sent) == sorted(EMAILS)
    assert (outgoing.spool.bad / damaged.qid / "recipients").exists()
    assert outgoing.jobs() == []
    assert f"unreadable qid={damaged.qid} ValueError" in caplog.text


def test_the_armor_checksum_of_a_post_is_computed_off_the_event_loop(tmp_path, monkeypatch):
    """SharedArmor's CRC over the shared packet takes ~10 ms per MB: on the loop's thread a
    large post would stall every SMTP session and delivery while a job is taken up."""
    outgoing, job = job_on_disk(tmp_path)
    threads = []

    class Watched(deliver_module.SharedArmor):
        def __init__(self, *args, **kwargs):
            threads.append(threading.get_ident())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(deliver_module, "SharedArmor", Watched)
    transport = Recording(RuntimeError("unused"))
    transport.first = None
    deliverer = Deliverer(outgoing, transport, concurrency=2)
    asyncio.run(deliver(deliverer, job, transport, len(EMAILS)))
    assert sorted(transport.sent) == sorted(EMAILS)
    assert threads and threading.main_thread().ident not in threads  # asyncio.run's loop thread


class Refusing(Transport):
    """A relay that refuses every copy for good, at RCPT for one address, at DATA for the rest."""

    def __init__(self):
        self.sent: list[str] = []

    async def send(self, connection, sender, recipient, message):
        self.sent.append(recipient)  # tried, at least
        raise DeliveryFailed("rcpt-550-5.1.1" if recipient == EMAILS[0] else "data-552-5.3.4")


def test_a_job_that_delivered_nothing_is_undelivered_and_its_outcome_is_settled(tmp_path, caplog):
    outgoing, job = job_on_disk(tmp_path)
    outcomes: list[Outcome] = []

    async def settled(outcome: Outcome) -> None:
        assert job.path.exists()  # settled before the job leaves the spool
        outcomes.append(outcome)

    transport = Refusing()
    deliverer = Deliverer(outgoing, transport, concurrency=1, on_final=settled)
    with caplog.at_level(logging.INFO, logger="listserv.deliver"):
        asyncio.run(deliver(deliverer, job, transport, len(EMAILS)))
    [outcome] = outcomes
    assert (outcome.copies, outcome.sent) == (3, 0)
    assert [(f.email, f.reason) for f in outcome.failures] == [
        (EMAILS[0], "rcpt-550-5.1.1"), (EMAILS[1], "data-552-5.3.4"), (EMAILS[2], "data-552-5.3.4")]
    assert not job.path.exists()
    assert f"undelivered qid={job.qid} failed=3 kind=post reasons=data-552-5.3.4x2,rcpt-550-5.1.1x1" in caplog.text
    assert f"delivered qid={job.qid}" not in caplog.text.replace("undelivered", "")
    assert "example.org" not in caplog.text and "example.net" not in caplog.text


def test_a_failed_settle_keeps_the_job_to_settle_again(tmp_path, caplog):
    outgoing, job = job_on_disk(tmp_path)

    async def broken(outcome: Outcome) -> None:
        raise OSError("the disk is full")

    transport = Recording(RuntimeError("unused"))
    transport.first = None
    deliverer = Deliverer(outgoing, transport, concurrency=1, retry=RetryPolicy(0.05, 0.1, 3600), on_final=broken)
    with caplog.at_level(logging.INFO, logger="listserv.deliver"):
        asyncio.run(deliver(deliverer, job, transport, len(EMAILS)))
    assert job.path.exists()  # taken up again (the server's poller) and settled then
    assert f"error qid={job.qid} stage=settle OSError" in caplog.text
    assert [p.state for p in outgoing.progress(job, len(EMAILS))] == ["sent"] * 3
