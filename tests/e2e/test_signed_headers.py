"""Issue 9: what members see comes from the signed content, or from the list.

The submission's own (outer) headers are not covered by the signature: anyone who handles
the mail on its way can change them. A Subject taken from there would put unsigned words in
a member's mouth, and an In-Reply-To from there would move a post into another thread.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from email import policy

import pytest

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
PLANTED = "PLANTED-UNSIGNED-WORDS"
PLANTED_PARENT = "<planted-parent@example.org>"  # an id of the list's domain: compose would keep it


def read(user, copy, list_key: bytes, list_fpr: str) -> tuple[email.message.EmailMessage, str]:
    """A member's copy as their client shows it: the decrypted message, and its outer headers."""
    plain = decrypt(user, encrypted_part(copy.data), list_key, list_fpr).decode()
    return email.message_from_string(plain, policy=policy.default), copy.data.decode()


@dataclass(frozen=True)
class Delivered:
    """What members got of two posts by Alice: Mutt's without protected headers (only its
    body is signed; outer Subject and In-Reply-To planted), then Thunderbird's (headers
    signed): each copy decrypted, with its outer headers, and Bob's digest of both."""

    unsigned: tuple[email.message.EmailMessage, str]
    protected: tuple[email.message.EmailMessage, str]
    digest: email.message.EmailMessage


@pytest.fixture(scope="module")
def delivered(tmp_path_factory, people) -> Delivered:
    cli, list_key, list_fpr = make_site(tmp_path_factory.mktemp("signed-headers"), people,
                                        {"alice": "immediate", "bob": "digest"})
    alice, bob = people["alice"], people["bob"]
    unsigned = mf.post(alice, list_key, "Body Alice signed.", PLANTED, style="mutt",
                       in_reply_to=PLANTED_PARENT, references=PLANTED_PARENT)
    protected = mf.post(alice, list_key, "Body with signed headers.", "Signed subject",
                        style="pgpmime", in_reply_to="<parent@example.org>")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        for raw in (unsigned, protected):
            assert submit(proc.port, LIST, raw)[0] == 250
            proc.wait_log(r"delivered qid=\S+ sent=1 failed=0")
        copies = sink.wait_for(2)
        assert "queued" in cli.ok("digest", "send", LIST).stdout
        digest_copy = sink.wait_for(3)[2]
    first, second = (read(alice, copy, list_key, list_fpr) for copy in copies)
    return Delivered(first, second, read(bob, digest_copy, list_key, list_fpr)[0])


def test_an_unsigned_subject_never_reaches_members(delivered):
    message, outer = delivered.unsigned
    assert "Body Alice signed." in message.get_body(("plain",)).get_content()
    assert message["Subject"] == "[News] (no subject)"
    assert PLANTED not in message.as_string() and PLANTED not in outer
    text = delivered.digest.get_body(("plain",)).get_content()
    assert "(no subject)" in text
    assert PLANTED not in delivered.digest.as_string()


def test_unsigned_threading_never_reaches_members(delivered):
    message, outer = delivered.unsigned
    assert "In-Reply-To" not in message and "References" not in message
    assert "planted-parent" not in message.as_string() and "planted-parent" not in outer


def test_signed_subject_and_threading_are_kept(delivered):
    message, outer = delivered.protected
    assert message["Subject"] == "[News] Signed subject"
    assert message["In-Reply-To"] == "<parent@example.org>"
    assert "In-Reply-To: <parent@example.org>" in outer  # threads work before decryption
    assert "Signed subject" in delivered.digest.get_body(("plain",)).get_content()
