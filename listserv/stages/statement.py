"""Statements: what an `x-sign-this` request asks the list to sign, and whether enough of the
group has asked for it. Pure: the store and the signing are elsewhere (listserv.statements).

A statement is the text of the request's first text part after its command lines, and every
file attached to it (but keys). Two requests ask for the same statement when their digests are
equal: the SHA-256 of the normalised text and of each attachment's name and content, so one
admin's attachments are never signed on another's word. Normalised: Unicode NFC, LF line
endings, no trailing white space on a line, no blank lines before or after, one final newline
-- what a mail client may change on the way, and nothing else. The text the list signs is the
normalised one, so everyone who asked gets the very same bytes.

    read_statement(content) -> Statement            raises UsageError when there is nothing to sign
    quorum(asked, wanted, now) -> Round              who asked within QUORUM_WINDOW, and whether it is enough
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from .. import mime
from ..errors import Malformed, UsageError
from .commands import statement_text

QUORUM_WINDOW = 48 * 3600  # the other admins' requests must come within this of the first
MAX_ATTACHMENTS = 10
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Statement:
    text: str  # normalised, as signed
    attachments: tuple[tuple[str, bytes], ...]  # (safe file name, content), in the order sent
    digest: str  # hex SHA-256 of the text and the attachments

    @property
    def short(self) -> str:
        return f"sha256:{self.digest[:16]}"


@dataclass(frozen=True)
class Round:
    asked: tuple[tuple[str, float], ...]  # (pseudonym, when) of each different asker, within the window
    enough: bool


def normalise(text: str) -> str:
    lines = [line.rstrip() for line in unicodedata.normalize("NFC", text).replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def file_name(name: str | None, index: int) -> str:
    """A name safe on any file system and in a reader's shell: letters, digits, dot, dash, underscore."""
    safe = _UNSAFE.sub("_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).strip("._")
    return safe[:80] or f"attachment-{index}"


def read_statement(content: bytes) -> Statement:
    text = normalise(statement_text(content))
    if not text:
        raise UsageError("There is no text to sign: write the statement after the command lines, "
                         "following a blank line.")
    attachments = []
    try:
        entity = mime.parse(content)
    except Malformed:
        entity = None
    for part in entity.walk() if entity is not None else ():
        if part.is_multipart() or not part.is_attachment() or part.get_content_type() == "application/pgp-keys":
            continue
        attachments.append((file_name(part.get_filename(), len(attachments) + 1), part.get_payload(decode=True) or b""))
    if len(attachments) > MAX_ATTACHMENTS:
        raise UsageError(f"A statement may carry at most {MAX_ATTACHMENTS} attachments; this one has {len(attachments)}.")
    names = [name for name, _ in attachments]
    if len(set(names)) != len(names):
        raise UsageError("Two attachments have the same file name; give each its own.")
    digest = hashlib.sha256(b"text\0" + text.encode("utf-8"))
    for name, data in attachments:
        digest.update(b"\0file\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    return Statement(text, tuple(attachments), digest.hexdigest())


def quorum(asked: tuple[tuple[str, float], ...], wanted: int, now: float) -> Round:
    """The different askers of one statement within QUORUM_WINDOW of `now` (the earliest ask of
    each), and whether there are `wanted` of them."""
    first: dict[str, float] = {}
    for name, at in asked:
        if now - at <= QUORUM_WINDOW and (name not in first or at < first[name]):
            first[name] = at
    kept = tuple(sorted(first.items(), key=lambda item: item[1]))
    return Round(kept, len(kept) >= wanted)
