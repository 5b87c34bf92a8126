"""How large a post a list takes: its own `max_message_size_kb`, and what the relay delivers.

Every refusal is 552 5.3.4 with a sentence that gives the limit, at the first point it is known:

    MAIL FROM SIZE=n   n is larger than any list here takes
    RCPT TO            n is larger than this list takes
    DATA               the submission is larger than this list takes (`post_limit`); after
                       opening, its content would make copies larger than the relay takes --
                       or, when members read digests, a digest carrying that post alone would
                       (`check_content`), so a post accepted always fits a digest part

The relay's limit is the one it announced (listserv.relaylimit), less what a relay adds; how
much fan-out adds to a post is listserv.sizing, measured for each list by composing a probe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import relaylimit, sizing
from .digest import DigestItem, digest_copy_size
from .errors import TooLarge
from .model import Kind, MailingList, Member, Roster
from .stages.compose import Post, Wrapping, compose, wrapping
from .stages.open import Opened
from .templates import Templates

PROBE_SENDER = "x" * 64  # the longest pseudonym check_pseudonym allows
PROBE_CONTENT = b"Content-Type: text/plain\r\n\r\n"
# A volume and issue as long as a digest's plausibly get: its size measured with them is
# not less than the real one (the part numbers are measured as 999 of 999).
DIGEST_PROBE = (99, 99999)


@dataclass(frozen=True)
class Limit:
    size: int  # bytes of submission
    relay: bool  # the relay's limit decides (else the list's own max_message_size_kb)

    def refusal(self, signer: str | None = None) -> TooLarge:
        shown = f"at most {self.size // 1024} KB"
        if self.relay:
            return TooLarge("too-large-for-relay", f"The message is larger than this list can deliver ({shown}).",
                            signer=signer)
        return TooLarge("too-large", f"The message is larger than this list accepts ({shown}).", signer=signer)


def copy_limit(relay_file: Path) -> int | None:
    """The most bytes a copy may have (None: no relay limit known, or no relay), from what
    listserv.relaylimit last learned."""
    return sizing.copy_limit(relaylimit.load(relay_file).size)


@functools.lru_cache(maxsize=256)
def _probe(address: str, name: str, prefix: str, footer: str, banner: str) -> sizing.Overhead:
    # An alert from the longest pseudonym: more headers and text than any post of this list.
    mailing_list = MailingList(address, name, "", {"subject_prefix": prefix})
    probe = Post(PROBE_CONTENT, Kind.ALERT, Member(address, address, "", PROBE_SENDER))
    composed = compose(probe, mailing_list, Wrapping(footer, banner),
                       now=datetime(2000, 1, 1, tzinfo=timezone.utc))
    return sizing.Overhead(len(composed.inner) - len(PROBE_CONTENT),
                           len(composed.outer_prefix) + len(composed.outer_suffix))


def overhead(mailing_list: MailingList, templates: Templates) -> sizing.Overhead:
    probe = Post(PROBE_CONTENT, Kind.ALERT, Member(mailing_list.address, mailing_list.address, "", PROBE_SENDER))
    wrapped = wrapping(templates, mailing_list, probe)
    return _probe(mailing_list.address, mailing_list.name, str(mailing_list.option("subject_prefix")),
                  wrapped.footer, wrapped.banner or "")


def check_size(raw: bytes, mailing_list: MailingList, templates: Templates, limit: int | None) -> None:
    """TooLarge when the submission is larger than the list takes, or than its copies could be."""
    allowed = post_limit(mailing_list, templates, limit)
    if len(raw) > allowed.size:
        raise allowed.refusal()


def post_limit(mailing_list: MailingList, templates: Templates, limit: int | None) -> Limit:
    """The largest submission this list takes, with `limit` the most a copy may have."""
    own = mailing_list.option("max_message_size_kb") * 1024
    relay = sizing.largest_post(limit, overhead(mailing_list, templates))
    return Limit(relay, True) if relay is not None and relay < own else Limit(own, False)


def largest_limit(lists: list[MailingList], templates: Templates, limit: int | None) -> Limit | None:
    """The largest submission any of `lists` takes (what MAIL FROM SIZE= is held against)."""
    limits = [post_limit(mailing_list, templates, limit) for mailing_list in lists]
    return max(limits, key=lambda found: found.size) if limits else None


def check_content(opened: Opened, sender: Member, kind: Kind, roster: Roster,
                  templates: Templates, limit: int | None) -> None:
    """Raise the relay's TooLarge when the opened post's copies would not fit under `limit`,
    or (when members read digests) a digest holding this post alone would not."""
    if limit is None or kind == Kind.REQUEST:  # a request is answered, never fanned out
        return
    mailing_list = roster.mailing_list
    digest_readers = any(m.mode == "digest" and m.active for m in roster.members)
    found = overhead(mailing_list, templates)
    content = len(opened.content)
    threads = len(opened.in_reply_to or "") + len(opened.references or "")  # also outside
    envelope = found.envelope + threads
    quick_post = sizing.fits(sizing.POST_GROWTH * content + found.inner + sizing.REBUILD, envelope, limit)
    quick_digest = not digest_readers or sizing.fits(
        sizing.DIGEST_GROWTH * content + found.inner + sizing.DIGEST_FRAME, found.envelope, limit)
    if quick_post and quick_digest:
        return  # small next to the limit: no need to compose it to know
    now = datetime.now(timezone.utc)
    post = Post.of(opened, sender, kind)
    composed = compose(post, mailing_list, wrapping(templates, mailing_list, post), now=now)
    # The relay's sentence: the submission may be well under the list's own limit.
    refusal = Limit(sizing.largest_post(limit, found) or 0, True).refusal(signer=opened.signer)
    if not sizing.fits(len(composed.inner), len(composed.outer_prefix) + len(composed.outer_suffix), limit):
        raise refusal
    if not quick_digest:
        item = DigestItem(sender.name, composed.subject, now.timestamp(), kind, composed.inner)
        if digest_copy_size(templates, mailing_list, [item], now, DIGEST_PROBE, html=False) > limit:
            raise refusal
