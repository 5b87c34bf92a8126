"""End to end: a member whose client reads no protected headers (Mutt, Thunderbird for the
From) still sees who wrote a post and its Subject, and nothing of it is outside the encryption."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
MEMBERS = {"alice": "immediate", "bob": "immediate", "sally": "immediate", "rita": "immediate"}


def as_a_legacy_client_reads_it(plain: bytes) -> str:
    """What a client that ignores protected headers shows first: the first text/plain part."""
    inner = email.message_from_bytes(plain, policy=policy.default)
    part = next(p for p in inner.walk() if p.get_content_type() == "text/plain")
    return part.get_content().replace("\r\n", "\n")


def test_every_members_decrypted_copy_shows_the_pseudonym_and_subject_at_the_top(tmp_path: Path, people):
    cli, list_key, list_fpr = make_site(tmp_path, people, MEMBERS)
    raw = mf.post(people["alice"], list_key, subject="Re: [News] Meeting", body="It moved to Thursday.")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, raw)[0] == 250
        copies = sink.wait_for(len(MEMBERS))
    for copy in copies:
        who = next(k for k in MEMBERS if people[k].email == copy.rcpt_tos[0])
        outer = email.message_from_bytes(copy.data, policy=policy.default)
        assert (outer["Subject"], str(outer["From"])) == ("[...]", "News <news@example.org>")
        head = copy.data.split(b"-----BEGIN PGP MESSAGE-----")[0]
        assert b"Alice" not in head and b"Meeting" not in head
        plain = decrypt(people[who], encrypted_part(copy.data), list_key, list_fpr)  # gpg, sq or rnp
        shown = as_a_legacy_client_reads_it(plain)
        assert shown.startswith("From: Alice via News <news@example.org>\n"
                                "Subject: [News] Re: Meeting\n\nIt moved to Thursday."), (who, shown)
        assert email.message_from_bytes(plain, policy=policy.default)["Subject"] == "[News] Re: Meeting"
