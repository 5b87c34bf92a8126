"""The store survives kill -9 at any moment and serialises writers from several processes."""

from __future__ import annotations

import json
import random
import signal
import stat
import subprocess
import sys
import time

import pytest

from listserv.errors import Conflict, StoreError
from listserv.model import MailingList, Member
from listserv.store import Store

from tests.helpers.cli import Cli

# Writes one value per transaction and prints its number once the transaction has returned:
# a printed number is a change "reported done". Each value carries padding so the database
# grows and a write takes long enough to be interrupted half-way.
WRITER = """
import sys
from pathlib import Path
from listserv.store import Store

store = Store(Path(sys.argv[1]))
i = int(sys.argv[2])
pad = "x" * 400
while True:
    with store.transaction() as tx:
        tx.set_value(f"k{i:06d}", {"i": i, "pad": pad})
        tx.set_value("last", i)
    print(i, flush=True)
    i += 1
"""

INCREMENTER = """
import sys, time
from pathlib import Path
from listserv.store import Store

store = Store(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    with store.transaction() as tx:
        seen = tx.get_value("n", 0)
        time.sleep(0.001)  # widen the window in which an unlocked writer would lose an update
        tx.set_value("n", seen + 1)
"""


def written(store: Store) -> dict[int, dict]:
    snapshot = store.read()
    return {
        int(doc["key"][1:]): doc["value"]
        for doc in snapshot._db.table("values").all()
        if doc["key"].startswith("k")
    }


def test_sigkill_at_random_moments_never_loses_a_reported_change(tmp_path):
    path = tmp_path / "listserv.json"
    store = Store(path)
    rng = random.Random(2)
    reported: set[int] = set()
    kills, deadline = 0, time.monotonic() + 20
    while kills < 30 and time.monotonic() < deadline:
        start = store.read().get_value("last", -1) + 1
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = writer.stdout.readline()  # let it start writing, then kill it at a random moment
        assert first, writer.stderr.read().decode()
        time.sleep(rng.uniform(0, 0.15))
        writer.send_signal(signal.SIGKILL)
        rest, _ = writer.communicate()
        assert writer.returncode == -signal.SIGKILL
        kills += 1
        lines = (first + rest).decode().split("\n")[:-1]  # only whole lines were reported
        reported.update(int(line) for line in lines)

        present = written(store)  # loads: a StoreError here is a corrupt database
        assert reported <= set(present), sorted(reported - set(present))[:5]
        for i in reported:
            assert present[i] == {"i": i, "pad": "x" * 400}
        # All or nothing: transactions landed in order, with no gap and no half of one.
        last = store.read().get_value("last")
        assert sorted(present) == list(range(last + 1))
    assert kills >= 10, f"only {kills} kills in the time allowed"
    assert len(reported) > kills  # it did get work done between kills

    # Temporary files of killed writers are cleared by the next transaction.
    with store.transaction() as tx:
        tx.set_value("after", True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["listserv.json", "listserv.json.lock"]


def test_two_processes_writing_at_once_lose_no_update(tmp_path):
    path = tmp_path / "listserv.json"
    writers = [
        subprocess.Popen([sys.executable, "-c", INCREMENTER, str(path), "150"], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err.decode()
    assert Store(path).read().get_value("n") == 300


def test_a_failed_transaction_writes_nothing(tmp_path):
    store = Store(tmp_path / "listserv.json")
    with store.transaction() as tx:
        tx.add_list(MailingList("news@example.org", "News", "A" * 40))
    before = store.path.read_bytes()
    with pytest.raises(Conflict):
        with store.transaction() as tx:
            tx.add_member(Member("news@example.org", "a@example.org", "B" * 40, "A"))
            tx.add_list(MailingList("news@example.org", "News", "C" * 40))  # refused: exists
    assert store.path.read_bytes() == before
    assert store.read().members("news@example.org") == []


def test_database_is_private_and_a_missing_one_is_empty(tmp_path):
    store = Store(tmp_path / "listserv.json")
    assert store.read().lists() == []
    with store.transaction() as tx:
        assert tx.lists() == []  # reading alone writes nothing
    assert not store.path.exists()
    with store.transaction() as tx:
        tx.set_value("x", 1)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_changes_outside_a_transaction_are_never_written(tmp_path):
    store = Store(tmp_path / "listserv.json")
    snapshot = store.read()
    with pytest.raises(StoreError):  # snapshots are shared between readers: changing one is a bug
        snapshot.set_value("x", 1)
    assert not store.path.exists()


@pytest.mark.parametrize("content, problem", [
    (b"", "is not valid JSON"),
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe\x00", "is not valid JSON"),
    (b"[]", "is not a listserv database"),
])
def test_a_corrupt_database_is_a_clear_error(cli: Cli, content, problem):
    database = cli.home / "data" / "listserv.json"
    database.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        Store(database).read()
    assert caught.value.exit_code == 74
    result = cli("lists")
    assert result.exit_code == 74
    assert result.stderr == f"listserv: The database {database} {problem}.\n"
    assert "Traceback" not in result.output



def test_seen_signatures_are_looked_up_across_lists_and_expire_each_by_its_own_date(tmp_path):
    store = Store(tmp_path / "events.json")
    with store.transaction() as tx:
        tx.record_signature("d1", "news@example.org", expires=1_000)
        tx.record_signature("d1", "tips@example.org", expires=3_000)
        tx.record_signature("d2", "news@example.org", expires=1_000)
    with store.transaction() as tx:
        assert tx.lists_that_took("d1", 500, keep_seconds=10) == {"news@example.org", "tips@example.org"}
        assert tx.lists_that_took("d1", 2_000, keep_seconds=10) == {"tips@example.org"}
        assert tx.lists_that_took("d3", 2_000, keep_seconds=10) == frozenset()
    assert b"d2" not in store.path.read_bytes()  # expired records are dropped, not just ignored


def test_per_list_records_of_an_older_version_stay_in_force_home_wide(tmp_path):
    """Before records were home-wide they were kept per list, with the time they were seen
    ("seen") and no expiry. They mean what a new record means, "this list took it", and
    expire `keep_seconds` after they were seen."""
    path = tmp_path / "events.json"
    path.write_text(json.dumps({"signatures": {
        "1": {"list": "news@example.org", "digest": "recent", "seen": 9_000},
        "2": {"list": "news@example.org", "digest": "old", "seen": 1_000},
    }}))
    with Store(path).transaction() as tx:
        assert tx.lists_that_took("recent", 10_000, keep_seconds=5_000) == {"news@example.org"}
        assert tx.lists_that_took("old", 10_000, keep_seconds=5_000) == frozenset()
    assert b'"old"' not in path.read_bytes()


def test_a_member_an_older_version_stored_as_key_revoked_is_suspended(tmp_path):
    """The standing was called "key-revoked" before issue 13 named it "suspended"; a member
    stored so is read as suspended, and stored so again on the next change."""
    path = tmp_path / "lists.json"
    path.write_text(json.dumps({"members": {"1": {
        "list": "news@example.org", "email": "carol@example.org", "fingerprint": "C" * 40,
        "name": "Carol", "state": "key-revoked"}}}))
    store = Store(path)
    [carol] = store.read().members("news@example.org")
    assert carol.state == "suspended" and not carol.active
    with store.transaction() as tx:
        tx.update_member(carol)
    assert '"key-revoked"' not in path.read_text()


def test_members_imported_while_new_member_probation_is_on_start_on_probation(tmp_path):
    store = Store(tmp_path / "lists.json")
    with store.transaction() as tx:
        tx.add_list(MailingList("news@example.org", "News", "F" * 40, options={"new_member_probation": True}))
        tx.add_members("news@example.org", [Member("news@example.org", "a@example.org", "A" * 40, "A")])
    assert [m.probation for m in store.read().members("news@example.org")] == [True]
