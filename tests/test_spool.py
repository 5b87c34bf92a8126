"""The spool on disk: a job is wholly there or absent, is found again after a restart in the
order it must be worked, and what it records is read back as written. Real files, no mocks."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from listserv.errors import StoreError
from listserv.model import Recipient
from listserv.stages.fanout import Fanned
from listserv.spool import (
    DEFERRED, FAILED, JOURNAL, PENDING, SENT, Outgoing, Progress, Spool, new_queue_id,
)

LIST = "news@example.org"
SEALED = b"-----BEGIN PGP MESSAGE-----\n\x00\xffsealed to the list\n-----END PGP MESSAGE-----\n"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    made = Spool(tmp_path / "data" / "spool")
    made.prepare()
    return made


def entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def recipients(count: int) -> list[Recipient]:
    return [Recipient(f"m{n}@example.net", f"token{n}", bytes([n]) * 60, n % 2, f"{n:040X}")
            for n in range(count)]


def write_job(spool: Spool, qid: str = "0123456789ab", kind: str = "post", count: int = 3, **extra):
    return Outgoing(spool).write(qid, LIST, kind,
                                 Fanned((b"shared-0", b"shared-1"), b"PREFIX\r\n", b"\r\nSUFFIX",
                                        "news-bounces+{token}@example.org", tuple(recipients(count)), ()),
                                 **extra)


# -- incoming submissions -------------------------------------------------------------------

def test_prepare_makes_the_folders_private(tmp_path: Path):
    spool = Spool(tmp_path / "data" / "spool")
    spool.prepare()
    for folder in (spool.root, spool.tmp, spool.incoming, spool.outgoing, spool.bad):
        assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    spool.prepare()  # and again, on the next start, without complaint


def test_an_accepted_submission_is_on_disk_as_sent_and_private(spool: Spool):
    job = spool.accept(LIST, "post", SEALED)
    assert (job.list, job.kind, job.as_dict()["state"]) == (LIST, "post", "accepted")
    assert abs(job.received - time.time()) < 60
    assert job.path == spool.incoming / job.qid
    assert len(job.qid) == 12 and int(job.qid, 16) >= 0
    assert entries(job.path) == ["meta.json", "submission.pgp"]
    assert spool.read_submission(job) == SEALED
    assert stat.S_IMODE(job.path.stat().st_mode) == 0o700
    for file in job.path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert entries(spool.tmp) == []  # nothing half-written left behind
    meta = json.loads((job.path / "meta.json").read_bytes())
    assert meta == {"qid": job.qid, "list": LIST, "kind": "post", "received": job.received,
                    "state": "accepted"}
    assert SEALED not in (job.path / "meta.json").read_bytes()


def test_queue_ids_are_random_not_a_count():
    ids = [new_queue_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert sorted(ids) != ids  # not handed out in order


def test_submissions_come_back_alerts_first_then_oldest_first(spool: Spool):
    first = spool.accept(LIST, "post", b"first")
    time.sleep(0.01)
    second = spool.accept(LIST, "post", b"second")
    time.sleep(0.01)
    alert = spool.accept(LIST, "alert", b"urgent")
    assert [job.qid for job in spool.submissions()] == [alert.qid, first.qid, second.qid]
    assert [spool.read_submission(job) for job in spool.submissions()] == [b"urgent", b"first", b"second"]


def test_a_folder_without_a_readable_meta_is_not_a_submission(spool: Spool):
    good = spool.accept(LIST, "post", SEALED)
    (spool.incoming / "aaaaaaaaaaaa").mkdir()  # no meta.json
    (spool.incoming / "bbbbbbbbbbbb").mkdir()
    (spool.incoming / "bbbbbbbbbbbb" / "meta.json").write_text("{not json")
    assert [job.qid for job in spool.submissions()] == [good.qid]


def test_remove_forgets_a_job_and_quarantine_keeps_it_aside_intact(spool: Spool):
    done = spool.accept(LIST, "post", b"done")
    broken = spool.accept(LIST, "post", b"broken")
    kept = spool.accept(LIST, "post", b"kept")
    spool.remove(done)
    spool.quarantine(broken)
    assert not done.path.exists() and not broken.path.exists()
    assert entries(spool.tmp) == []
    assert entries(spool.bad) == [broken.qid]
    assert (spool.bad / broken.qid / "submission.pgp").read_bytes() == b"broken"
    assert [job.qid for job in spool.submissions()] == [kept.qid]


def test_a_restart_sweeps_half_written_jobs_and_keeps_every_whole_one(spool: Spool):
    accepted = spool.accept(LIST, "post", SEALED)
    out = write_job(spool)
    spool.quarantine(spool.accept(LIST, "post", b"bad"))
    half = spool.tmp / "cafecafecafe"  # a crash between writing and renaming
    half.mkdir()
    (half / "submission.pgp").write_bytes(b"half")
    (spool.tmp / "done-feedfeedfeed").mkdir()  # a crash half-way through removing a job

    again = Spool(spool.root)
    again.prepare()
    again.sweep()  # what the server does at its start
    assert entries(again.tmp) == []
    assert [job.qid for job in again.submissions()] == [accepted.qid]
    assert again.read_submission(again.submissions()[0]) == SEALED
    assert [job.qid for job in Outgoing(again).jobs()] == [out.qid]
    assert len(entries(again.bad)) == 1


def test_a_spool_that_cannot_be_written_says_so_and_leaves_no_half_job(spool: Spool):
    spool.incoming.rmdir()
    spool.incoming.write_bytes(b"")  # not a folder: the rename into it fails
    with pytest.raises(StoreError, match="The spool cannot be written"):
        spool.accept(LIST, "post", SEALED)
    assert entries(spool.tmp) == []


# -- outgoing fan-out jobs ------------------------------------------------------------------

def test_an_outgoing_job_reads_back_as_written(spool: Spool):
    outgoing = Outgoing(spool)
    job = write_job(spool, poster="A" * 40)
    assert (job.qid, job.list, job.kind, job.batches, job.poster, job.items) == (
        "0123456789ab", LIST, "post", 2, "A" * 40, ())
    assert job.return_path == "news-bounces+{token}@example.org"
    assert job.path == spool.outgoing / "0123456789ab" and outgoing.exists(job.qid)
    assert outgoing.recipients(job) == recipients(3)
    assert outgoing.envelope(job) == (b"PREFIX\r\n", b"\r\nSUFFIX")
    assert outgoing.shared(job) == [b"shared-0", b"shared-1"]
    assert outgoing.progress(job, 3) == [Progress(PENDING, 0, 0.0, "")] * 3
    assert entries(spool.tmp) == []
    for file in job.path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert not any(b"m0@example.net" in file.read_bytes() for file in job.path.iterdir()
                   if file.name != "recipients")  # addresses only in the recipient records


def test_a_digest_part_keeps_its_items_and_names_no_poster(spool: Spool):
    job = write_job(spool, kind="digest", items=("1700000000-a.pgp", "1700000001-b.pgp"))
    [again] = Outgoing(spool).jobs()
    assert again == job
    assert (again.poster, again.items) == (None, ("1700000000-a.pgp", "1700000001-b.pgp"))


def test_jobs_come_back_alerts_first_and_a_damaged_folder_is_skipped(spool: Spool):
    post = write_job(spool, "aaaaaaaaaaaa", "post")
    time.sleep(0.01)
    digest = write_job(spool, "bbbbbbbbbbbb", "digest")
    time.sleep(0.01)
    notice = write_job(spool, "cccccccccccc", "notice")
    time.sleep(0.01)
    alert = write_job(spool, "dddddddddddd", "alert")
    (spool.outgoing / "eeeeeeeeeeee").mkdir()  # no meta.json
    (spool.outgoing / "ffffffffffff").mkdir()
    (spool.outgoing / "ffffffffffff" / "meta.json").write_text('{"qid": "ffffffffffff"}')  # fields missing
    assert [job.qid for job in Outgoing(spool).jobs()] == [alert.qid, notice.qid, post.qid, digest.qid]


def test_the_journal_replays_each_members_last_result(spool: Spool):
    outgoing = Outgoing(spool)
    job = write_job(spool, count=4)
    outgoing.record(job, 0, Progress(DEFERRED, 1, 1700000100.25, "rcpt-451"))
    outgoing.record(job, 1, Progress(SENT, 1))
    outgoing.record(job, 0, Progress(SENT, 2))
    outgoing.record(job, 3, Progress(FAILED, 1, 0.0, "rcpt-550"))
    assert outgoing.progress(job, 4) == [
        Progress(SENT, 2, 0.0, ""), Progress(SENT, 1, 0.0, ""), Progress(PENDING, 0, 0.0, ""),
        Progress(FAILED, 1, 0.0, "rcpt-550")]
    assert (job.path / JOURNAL).read_bytes().splitlines()[0] == b"0 deferred 1 1700000100.250 rcpt-451"
    # a reader for fewer members ignores the others' lines
    assert outgoing.progress(job, 1) == [Progress(SENT, 2, 0.0, "")]


def test_a_torn_last_journal_line_is_ignored_and_the_server_closes_it(spool: Spool):
    outgoing = Outgoing(spool)
    job = write_job(spool, count=2)
    outgoing.record(job, 0, Progress(SENT, 1))
    with open(job.path / JOURNAL, "ab") as journal:
        journal.write(b"1 sen")  # a crash in the middle of the line
    before = (job.path / JOURNAL).read_bytes()
    assert outgoing.progress(job, 2, repair=False) == [Progress(SENT, 1), Progress(PENDING)]
    assert (job.path / JOURNAL).read_bytes() == before  # a reader leaves the file alone
    assert outgoing.progress(job, 2) == [Progress(SENT, 1), Progress(PENDING)]
    outgoing.record(job, 1, Progress(DEFERRED, 1, 5.0, "conn-refused"))
    assert outgoing.progress(job, 2) == [Progress(SENT, 1), Progress(DEFERRED, 1, 5.0, "conn-refused")]


def test_journal_lines_and_records_written_by_older_versions_are_read(spool: Spool):
    outgoing = Outgoing(spool)
    job = write_job(spool, count=2)
    (job.path / JOURNAL).write_bytes(b"0 sent 1 0.000\n1 deferred 2 99.500\n")  # no reason field
    assert outgoing.progress(job, 2) == [Progress(SENT, 1, 0.0, ""), Progress(DEFERRED, 2, 99.5, "")]
    (job.path / "recipients").write_bytes(b"old@example.net tok 0 AAEC\n")  # no fingerprint
    assert outgoing.recipients(job) == [Recipient("old@example.net", "tok", b"\x00\x01\x02", 0, "")]


def test_a_damaged_recipient_record_is_one_plain_error(spool: Spool):
    outgoing = Outgoing(spool)
    job = write_job(spool)
    for damage in (b"a@example.net tok 0 !!notbase64!! -\n", b"a@example.net tok\n",
                   b"a@example.net tok x AAEC -\n"):
        (job.path / "recipients").write_bytes(damage)
        with pytest.raises(ValueError, match="^A recipient record is damaged.$"):
            outgoing.recipients(job)


def test_remove_forgets_a_delivery_job_and_quarantine_keeps_it(spool: Spool):
    outgoing = Outgoing(spool)
    done = write_job(spool, "aaaaaaaaaaaa")
    broken = write_job(spool, "bbbbbbbbbbbb")
    spool.remove(done)
    spool.quarantine(broken)
    assert not outgoing.exists(done.qid) and not outgoing.exists(broken.qid)
    assert outgoing.jobs() == []
    assert entries(spool.tmp) == []
    assert entries(spool.bad) == [broken.qid]
    assert (spool.bad / broken.qid / "shared.pgp.1").read_bytes() == b"shared-1"
