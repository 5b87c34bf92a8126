"""What the relay takes: the SIZE in its EHLO answer (RFC 1870), learned and kept in the home.

    data/spool/relay.json   {"relay": "HOST:PORT" or null, "size": BYTES or null, "learned": T}

`listserv serve` learns it when it starts (a probe: connect, EHLO, QUIT) and again on every
delivery connection, and writes it here so the CLI (`digest send`, which splits digests to
fit) knows it too. The policy, for what each answer means:

    relay says "SIZE n" (n > 0)         n: the relay refuses larger messages
    relay says "SIZE" or "SIZE 0"       no limit: RFC 1870's way of saying "no fixed maximum"
                                        (Postfix with message_size_limit = 0)
    relay says nothing of SIZE          the last value learned stays: a relay that does not
                                        speak RFC 1870 may still refuse large mail, and the
    relay cannot be reached at start    last value is the best knowledge there is; with none,
                                        only the list's own max_message_size_kb applies
    no relay (copies go to the outbox)  no relay limit

A relay that refuses a copy as too large (552 5.3.4 / 5.2.3) at a size below what it
announced teaches the limit too: the refused size minus one becomes the limit, so the next
digest is split to fit rather than refused again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .durable import write_atomically


@dataclass(frozen=True)
class RelayLimit:
    relay: str | None  # "HOST:PORT" the value was learned from; None: copies go to the outbox
    size: int | None  # the most the relay takes per message, in bytes; None: no limit known
    learned: float = 0.0


NONE = RelayLimit(None, None)


def load(path: Path) -> RelayLimit:
    """The last limit written; no limit when there is none (or it cannot be read: the list's
    own max_message_size_kb, whose default sits below common relay limits, still applies)."""
    try:
        raw = json.loads(path.read_bytes())
        size = raw.get("size")
        return RelayLimit(raw.get("relay"), int(size) if size else None, float(raw.get("learned", 0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return NONE


def save(path: Path, limit: RelayLimit) -> None:
    old = load(path)
    if (old.relay, old.size) == (limit.relay, limit.size):
        return  # the common case on every delivery connection: nothing new, no write
    payload = {"relay": limit.relay, "size": limit.size, "learned": limit.learned}
    write_atomically(path, json.dumps(payload).encode())


def learned(previous: RelayLimit, relay: str, announced: int | None) -> RelayLimit:
    """The limit after the relay's EHLO answered: `announced` is SMTPClient.size (None: no
    SIZE keyword, 0: SIZE without a limit)."""
    if announced is None:
        return RelayLimit(relay, previous.size, previous.learned)
    return RelayLimit(relay, announced or None, time.time())


def refused(previous: RelayLimit, relay: str, size: int) -> RelayLimit:
    """The limit after the relay refused a copy of `size` bytes as too large."""
    if previous.size is not None and previous.size < size:
        return previous  # the limit already known explains the refusal
    return RelayLimit(relay, max(1, size - 1), time.time())
