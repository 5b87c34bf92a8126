"""Structural MIME checks and the exact bytes of MIME parts (pure functions, no I/O).

`parse` is the only way a submission becomes an `EmailMessage`: it first refuses what
costs too much to parse (`mimescan`: long or many headers, many parameters, deep nesting,
very many parts, long lines, all found by a linear scan before the email package runs) and
what different mail programs could read differently (bare CR or LF, ambiguous boundaries,
duplicated structural headers, a header whose decoded value smuggles a line break).
Everything later can then trust the tree it is given.

A detached OpenPGP signature covers a part's bytes exactly as transmitted, CRLF included
(RFC 3156 §5), which the email package does not keep; `body_parts` cuts them out of the raw
entity itself, by the same boundary rules the parser used, and the two must agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import errors, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser

from .errors import Malformed
from .mimescan import BOUNDARY, MAX_DEPTH, MAX_PARTS, scan, too_deep, too_many_parts  # noqa: F401

POLICY = policy.SMTP  # policy.default with CRLF line endings

# Defects after which two readers can disagree about where a part begins or ends.
_AMBIGUOUS = (
    errors.StartBoundaryNotFoundDefect,
    errors.CloseBoundaryNotFoundDefect,
    errors.MultipartInvariantViolationDefect,
    errors.NoBoundaryInMultipartDefect,
    errors.InvalidMultipartContentTransferEncodingDefect,
    errors.MissingHeaderBodySeparatorDefect,
    errors.FirstHeaderLineIsContinuationDefect,
    errors.MisplacedEnvelopeHeaderDefect,
)

# Headers that must appear at most once in an entity: a second copy is read by some
# programs and ignored by others.
_SINGLE = (
    "content-type", "content-transfer-encoding", "content-disposition", "mime-version",
    "subject", "from", "sender", "to", "cc", "reply-to", "date", "message-id",
    "in-reply-to", "references",
)

_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\0")



def parse(raw: bytes) -> EmailMessage:
    """The message in `raw` (CRLF line endings), or Malformed(reason)."""
    if not raw.strip():
        raise Malformed("empty")
    check_line_endings(raw)
    scan(raw)  # before the email package, whose work it bounds
    try:
        message = BytesParser(policy=POLICY).parsebytes(raw)
        _check_tree(message)
    except Malformed:
        raise
    except Exception:  # the email package's own failures on hostile input (RecursionError too)
        raise Malformed("unparseable") from None
    return message


def check_line_endings(raw: bytes) -> None:
    rest = raw.replace(b"\r\n", b"")
    if b"\r" in rest or b"\n" in rest:
        raise Malformed("bare-newline")


def crlf(data: bytes) -> bytes:
    """`data` with every line ending (LF, CR or CRLF) written as CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _check_tree(message: EmailMessage) -> None:
    count = 0
    for part, depth in _walk(message, 1):
        count += 1
        if depth > MAX_DEPTH:
            raise too_deep()
        if count > MAX_PARTS:
            raise too_many_parts()
        if any(isinstance(defect, _AMBIGUOUS) for defect in part.defects):
            raise Malformed("ambiguous-structure")
        _check_headers(part)


def _walk(part: EmailMessage, depth: int) -> Iterator[tuple[EmailMessage, int]]:
    # Iterative, so a hostile nesting depth costs no Python stack here.
    stack = [(part, depth)]
    while stack:
        part, depth = stack.pop()
        yield part, depth
        if part.is_multipart():
            stack.extend((child, depth + 1) for child in reversed(part.get_payload()))


def _check_headers(part: EmailMessage) -> None:
    seen: set[str] = set()
    for name, raw in part.raw_items():
        key = name.lower()
        if key in _SINGLE:
            if key in seen:
                raise Malformed("duplicate-header")
            seen.add(key)
        if _unsafe(name) or _unsafe(_decoded(raw)):
            raise Malformed("header-injection")
    # The email package decodes some words the generic decoder leaves alone (and the other
    # way round), so its reading is checked as well; its own errors mean unparseable.
    for _, value in part.items():
        params = getattr(value, "params", {})
        if _unsafe(str(value)) or any(_unsafe(str(param)) for param in params.values()):
            raise Malformed("header-injection")


def _decoded(raw: str) -> str:
    """A raw header value unfolded, with its RFC 2047 encoded words decoded."""
    unfolded = raw.replace("\r\n", "")  # bare CR and LF are refused already: these are folds
    try:
        return str(make_header(decode_header(unfolded)))
    except Exception:  # an undecodable word stays as it is
        return unfolded


def _unsafe(text: str) -> bool:
    return any(c in text for c in _FORBIDDEN_IN_HEADERS)


def auto_submitted(raw: bytes) -> bool:
    """The message's own header section marks it Auto-Submitted, other than `no` (RFC 3834 §5):
    an automatic answer to it could loop."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    value = BytesHeaderParser(policy=policy.default).parsebytes(head + b"\r\n\r\n").get("Auto-Submitted")
    return value is not None and str(value).split(";")[0].strip().lower() != "no"


def header(message: EmailMessage, name: str) -> str | None:
    """The decoded, unfolded value of header `name`, or None if absent or empty."""
    value = message.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def body_parts(entity: bytes, boundary: str) -> list[bytes]:
    """The body parts of the multipart `entity` exactly as transmitted (RFC 2046 §5.1.1).

    Each part runs from after its delimiter line to before the CRLF that precedes the next
    delimiter, which belongs to that delimiter. Preamble and epilogue are not parts.
    """
    if entity.startswith(b"\r\n"):
        body = entity[2:]
    else:
        end = entity.find(b"\r\n\r\n")
        if end < 0:
            raise Malformed("no-body")
        body = entity[end + 4:]
    if not BOUNDARY.match(boundary):
        raise Malformed("bad-boundary")
    delimiter = re.compile(
        rb"(?:\A|\r\n)--" + re.escape(boundary.encode("ascii"))
        + rb"(?P<close>--)?[ \t]*(?:\r\n|\Z)"
    )
    parts: list[bytes] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        if start is not None:
            parts.append(body[start:match.start()])
        if match.group("close"):
            return parts
        start = match.end()
    raise Malformed("no-close-delimiter")
