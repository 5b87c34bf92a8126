"""What is on disk when a call returns is still there after a power cut: every file written
was fsynced, and so was every directory that gained an entry (mkdir, rename). "Accepted
means never lost" rests on this; a crash cannot be staged in a test, so the system calls
are checked instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from listserv.config import Home
from listserv.deliver import MaildirTransport
from listserv.digest import DigestItem
from listserv.context import Context
from listserv.spool import Spool

from tests.helpers.cli import make_site


class Syscalls:
    """Records mkdir, rename and fsync in order, by path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.events: list[tuple[str, Path]] = []
        real_fsync, real_mkdir, real_rename, real_replace = os.fsync, os.mkdir, os.rename, os.replace

        def fsync(fd):
            self.events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
            return real_fsync(fd)

        def mkdir(path, *args, **kwargs):
            real_mkdir(path, *args, **kwargs)
            self.events.append(("entry", Path(path).absolute()))

        def rename(src, dst, *args, **kwargs):
            real_rename(src, dst, *args, **kwargs)
            self.events.append(("entry", Path(dst).absolute()))

        def replace(src, dst, *args, **kwargs):
            real_replace(src, dst, *args, **kwargs)
            self.events.append(("entry", Path(dst).absolute()))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(os, "replace", replace)

    def unsynced_entries(self, under: Path) -> list[Path]:
        """New directory entries below `under` whose directory was not fsynced afterwards,
        skipping entries in tmp/ folders (scratch space a restart sweeps)."""
        missing = []
        for i, (kind, path) in enumerate(self.events):
            if kind != "entry" or not path.is_relative_to(under) or path.parent.name == "tmp":
                continue
            if ("fsync", path.parent) not in self.events[i + 1:]:
                missing.append(path)
        return missing


def test_a_copy_in_the_outbox_is_durable_before_it_counts_as_sent(tmp_path, monkeypatch):
    outbox = MaildirTransport(tmp_path / "outbox")
    calls = Syscalls(monkeypatch)
    outbox._write("news-bounces+t@example.org", "alice@example.org", b"Subject: [...]\r\n\r\nx\r\n")
    [copy] = (tmp_path / "outbox" / "new").iterdir()
    assert ("fsync", tmp_path / "outbox" / "tmp" / copy.name) in calls.events
    assert calls.unsynced_entries(tmp_path) == []


def test_the_outbox_folders_are_durable(tmp_path, monkeypatch):
    calls = Syscalls(monkeypatch)
    MaildirTransport(tmp_path / "outbox")
    assert calls.unsynced_entries(tmp_path) == []


def test_a_fresh_spool_and_its_first_submission_are_durable(tmp_path, monkeypatch):
    calls = Syscalls(monkeypatch)
    spool = Spool(tmp_path / "data" / "spool")
    spool.prepare()
    spool.accept("news@example.org", "post", b"sealed")
    assert calls.unsynced_entries(tmp_path) == []


def test_the_first_post_in_a_digest_backlog_is_durable(tmp_path, people, monkeypatch):
    cli, _, _ = make_site(tmp_path, people, {"alice": "digest"})
    home = Home(cli.home)
    ctx = Context.open(home)
    digests = ctx.digests
    mailing_list = ctx.store.read().require_list("news@example.org")
    calls = Syscalls(monkeypatch)
    digests.add(mailing_list, "0123456789ab", DigestItem("Alice", "Hello", 0.0, "post", b"text"))
    assert len(digests.backlog(mailing_list.address)) == 1
    assert calls.unsynced_entries(home.data) == []
