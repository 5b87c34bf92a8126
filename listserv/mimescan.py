"""A linear pass over a message that refuses what would cost the email package too much.

The email package's header parser is quadratic in a header's length (a 1 MB folded header
takes 8 s, 5 MB about 150 s), it splits parameters quadratically in their number, and it
builds the whole MIME tree before anyone can count its parts. `scan` runs first (from
`mime.parse`, so for the outer message and for the decrypted content alike): it reads each
entity's header block and follows multipart boundaries itself, with `bytes.find`, `count`
and slices only, and stops at the first cap exceeded. Its cost is linear in the message.

It reads the structure as the email package's feedparser does: an entity is a header block
ended by an empty line, then a body; a `multipart/*` body is cut by delimiter lines
(`--boundary`, optional `--`, optional spaces or tabs); a delimiter line of any open multipart
ends every entity inside it; the body of `message/*` is a whole message, that of
`message/delivery-status` a series of header blocks; in `multipart/digest` a part without
Content-Type is `message/rfc822`. Where the two could read a Content-Type differently
(comments, quoting, encoded words, RFC 2231 continuations near a multipart or message
type) the scan refuses rather than guesses: it must never see less structure than the
email package will, or the caps would not bound the parser's work. What it lets through
still goes through `mime._check_tree`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice

from .errors import Malformed, PartTooLarge

# Every line, header or body, CRLF not counted. RFC 5322 says 998 and SMTP enforces 1000 on
# the outer message (aiosmtpd refuses longer lines), but the decrypted content never crossed
# SMTP: HTML written 8bit on one line by some clients runs to hundreds of KiB. Nothing here
# is slow on a long body line, so the cap only bounds what any one line can hold.
MAX_LINE = 1024 * 1024
# One header field, unfolded (name, colon and value, folds removed). The longest honest
# fields are Autocrypt and Autocrypt-Gossip, which carry a whole public key (a bloated RSA
# key with third-party signatures stays under ~40 KiB of base64), and References of very
# long threads (~800 message ids). Postfix, in front of us, truncates at 100 KiB.
MAX_HEADER = 64 * 1024
# One entity's header block. The top level is the largest: up to 50 Received (Postfix's
# hop limit), DKIM and ARC sets, Autocrypt; an honest one stays under 64 KiB.
MAX_HEADER_SECTION = 128 * 1024
# All header blocks of one message together: with MAX_HEADER, what bounds the email
# package's work on unstructured fields (about 4 microseconds a byte for a 64 KiB field of
# one-letter words, less for smaller ones). An honest post with 100 parts and a few
# forwarded messages attached holds well under 128 KiB of headers.
MAX_HEADER_TOTAL = 256 * 1024
# Fields in one entity: twice the most an honest message that passed 50 relays carries
# (a Received and an ARC set per hop plus the client's own headers).
MAX_HEADERS = 500
# Parameters (the ';' that introduce them) in one Content-Type or Content-Disposition. RFC
# 2231 splits a long filename into sections: a 255-character UTF-8 name percent-encoded in
# lines of 78 is under 40 sections, given twice (name* and filename*). Splitting
# parameters is quadratic in their number in the email package.
MAX_PARAMS = 100
# Structured fields (_STRUCTURED: addresses, Content-*, Date, Message-ID) are parsed token
# by token, and slowly: ~30 microseconds a token in Content-* fields, ~150 in address lists
# (bare "a@b," ones), growing with the square of their number in one field; real address
# lists cost ~3 microseconds a byte. The four caps below hold the costliest message they let
# through to about half a second of parsing (bench/hostile.py).
# Their bytes in one message, unfolded: 100 parts with their Content-Type, -Disposition and
# -Transfer-Encoding take under 20 KiB, long filenames included.
MAX_STRUCTURED = 32 * 1024
# Their tokens in one message, the separators (_SEPARATORS) between words, addresses and
# parameters: a MIME part's fields have about 8, an attachment's 16 to 30 (each word of
# its name counts twice), so 100 attachments stay under 3,000.
MAX_TOKENS = 4096
# Of those, the tokens in address fields: a named recipient has about 10, so this is about
# 100 people, those named in attached messages included.
MAX_ADDRESS_TOKENS = 1024
# Comments and quoted pairs ('(' and '\\') in one structured field: honest fields hold a
# few at most, and the email package's work on them is quadratic in their number.
MAX_COMMENTS = 64
MAX_DEPTH = 8  # a top-level entity is depth 1; real clients stay below 5
MAX_PARTS = 100  # entities in one message, counting the top level and every container

# RFC 2046 bchars: 1 to 70 characters, the last not a space.
BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]\Z")

_PARAMETERISED = (b"content-type", b"content-disposition")  # whose parameters the package splits
_ADDRESSES = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc", b"resent-from",
              b"resent-sender", b"resent-to", b"resent-cc", b"resent-bcc")
# email.headerregistry's parsed fields (every other field is read as unstructured text).
_STRUCTURED = (*_ADDRESSES, *_PARAMETERISED, b"content-transfer-encoding", b"mime-version",
               b"date", b"orig-date", b"resent-date", b"message-id")
_SEPARATORS = b' \t,;:<>@."()[]\\'
_NOT_SEPARATORS = bytes(sorted(set(range(256)) - set(_SEPARATORS)))
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")  # the email package's header line
_FIELD_START = re.compile(rb"\r\n(?=[^ \t])")  # a line that does not continue the field before it
# A Content-Type mentioning none of these cannot be read as a container by any parser.
_CONTAINER_WORDS = re.compile(rb"multipart|message|=\?", re.IGNORECASE)
# In the media type: what could hide the ';' that ends it, or change its letters.
_UNCLEAR_TYPE = re.compile(rb'[(")\\\x00-\x08\x0a-\x1f\x7f-\xff]|=\?')
# In a multipart's parameters: comments, escapes, encoded words, RFC 2231 sections, non-ASCII.
_UNCLEAR_PARAMS = re.compile(rb'[()\\*\x00-\x08\x0a-\x1f\x7f-\xff]|=\?')
_PARAM = re.compile(rb'(?:[^;"]|"[^"]*")+')  # one parameter: up to a ';' outside quotes
_TOKEN = re.compile(rb"[0-9A-Za-z+_.-]+\Z")  # the bchars allowed in an unquoted value
_NONE = (-1, False, -1)  # no delimiter line ahead


def line_too_long() -> PartTooLarge:
    return PartTooLarge("line-too-long", "A line of the message is longer than this list accepts.")


def header_too_long() -> PartTooLarge:
    return PartTooLarge("header-too-long", "A header is longer than this list accepts.")


def section_too_large() -> PartTooLarge:
    return PartTooLarge("header-section-too-large", "The headers of a part are larger than this list accepts.")


def headers_too_large() -> PartTooLarge:
    return PartTooLarge("headers-too-large", "The headers of the message are larger than this list accepts.")


def structured_too_large() -> PartTooLarge:
    return PartTooLarge("structured-headers-too-large",
                    "The address and MIME headers of the message are larger than this list accepts.")


def too_many_tokens() -> Malformed:
    return Malformed("too-many-tokens", "The address and MIME headers of the message hold more words than this list accepts.")


def too_many_address_tokens() -> Malformed:
    return Malformed("too-many-address-tokens",
                     "The address headers of the message hold more words than this list accepts.")


def too_many_comments() -> Malformed:
    return Malformed("too-many-comments", "A header holds more comments than this list accepts.")


def too_many_headers() -> Malformed:
    return Malformed("too-many-headers", "A part of the message has more headers than this list accepts.")


def too_many_params() -> Malformed:
    return Malformed("too-many-params", "A header has more parameters than this list accepts.")


def too_deep() -> Malformed:
    return Malformed("too-deep", "The parts of the message are nested deeper than this list accepts.")


def too_many_parts() -> Malformed:
    return Malformed("too-many-parts", "The message has more parts than this list accepts.")


@dataclass(frozen=True)
class Shape:
    """What the scan found: entities, as `mime._check_tree` counts them, and the deepest."""
    parts: int
    depth: int


def scan(data: bytes) -> Shape:
    """Refuse `data` (CRLF line endings, no bare CR or LF) if it exceeds a cap, else its shape."""
    check_lines(data, MAX_LINE)
    return _Walk(data).run()


def check_lines(data: bytes | bytearray, limit: int) -> None:
    """TooLarge if a line (CRLF not counted) is longer than `limit`.

    Looks only around every (limit // 2)-th byte: any longer line contains one of them, and
    from there the line's ends lie within `limit` bytes or the line is too long anyway."""
    step, size = max(1, limit // 2), len(data)
    for at in range(0, size, step):
        if data[at] in b"\r\n":
            continue
        low = max(0, at - limit - 1)
        before = data.rfind(b"\r\n", low, at)
        if before < 0 and low > 0:
            raise line_too_long()
        start = before + 2 if before >= 0 else 0
        high = min(size, at + limit + 2)
        end = data.find(b"\r\n", at, high)
        if end < 0:
            if high < size:
                raise line_too_long()
            end = size
        if end - start > limit:
            raise line_too_long()


class _Open:
    """A multipart whose close delimiter has not been seen yet."""

    def __init__(self, delimiter: bytes, depth: int, digest: bool):
        self.needle = b"\r\n" + delimiter
        self.delimiter = delimiter
        self.depth = depth
        self.digest = digest  # its parts default to message/rfc822
        self.ahead: tuple[int, bool, int] | None = None  # next delimiter line: start, close, end


class _Walk:
    def __init__(self, data: bytes):
        self.data = data
        self.open: list[_Open] = []
        self.parts = 0
        self.deepest = 0
        self.header_bytes = 0
        self.structured = 0
        self.tokens = 0
        self.address_tokens = 0

    def run(self) -> Shape:
        at, depth, digest = 0, 1, False
        while True:  # one entity per turn; MAX_PARTS bounds the turns
            kind, at = self._entity(at, depth, digest)
            if kind.startswith("message/"):
                if kind == "message/delivery-status":
                    self._blocks(at, depth + 1)
                    at = self._region_end(at)
                else:  # the body is a whole message: its entity starts here
                    depth, digest = depth + 1, False
                    continue
            found = self._seek(at)
            if found is None:
                return Shape(self.parts, self.deepest)
            at, depth, digest = found

    # -- one entity -------------------------------------------------------------------------

    def _entity(self, at: int, depth: int, digest: bool) -> tuple[str, int]:
        """Count the entity at `at`, check its headers; its kind and where its body starts."""
        self._count(depth)
        end = self._region_end(at)
        header, body = self._header_block(at, end)
        content_type = self._fields(header)
        kind = _media_type(content_type, "message/rfc822" if digest else "text/plain")
        if kind.startswith("multipart/"):
            self._push(_boundary(content_type), depth, kind == "multipart/digest")
        return kind, body

    def _count(self, depth: int) -> None:
        """One more entity, at `depth`: refused before its headers are read if over a limit."""
        self.parts += 1
        self.deepest = max(self.deepest, depth)
        if self.parts > MAX_PARTS:
            raise too_many_parts()
        if depth > MAX_DEPTH:
            raise too_deep()

    def _header_block(self, at: int, end: int) -> tuple[bytes, int]:
        """The header lines (each with its CRLF) of the entity at `at`, and where its body starts."""
        data = self.data
        if at >= end:
            return b"", at
        if data.startswith(b"\r\n", at):
            return b"", at + 2
        blank = data.find(b"\r\n\r\n", at, min(end, at + MAX_HEADER_SECTION + 2))
        if blank >= 0:
            header, body = data[at:blank + 2], blank + 4
        elif end - at > MAX_HEADER_SECTION:
            # A more precise reason if there is one (a field folded at every byte is at most
            # three times its unfolded length, so a too long one shows in this much).
            limit = min(end, at + MAX_HEADER_SECTION + 3 * MAX_HEADER)
            blank = data.find(b"\r\n\r\n", at, limit)
            self._fields(data[at:blank + 2 if blank >= 0 else limit])
            raise section_too_large()
        else:  # headers up to the next delimiter line or the end: no body
            header, body = data[at:end], end
        self.header_bytes += len(header)
        if self.header_bytes > MAX_HEADER_TOTAL:
            raise headers_too_large()
        return header, body

    def _fields(self, header: bytes) -> bytes | None:
        """Check each field of `header`; the value of its first Content-Type, unfolded."""
        if not header:
            return None
        cuts = [match.end() for match in islice(_FIELD_START.finditer(header), MAX_HEADERS)]
        if len(cuts) == MAX_HEADERS:
            raise too_many_headers()
        content_type = None
        for start, end in zip([0, *cuts], [*cuts, len(header)]):
            value = self._field(header, start, end)
            if content_type is None:
                content_type = value
        return content_type

    def _field(self, header: bytes, start: int, end: int) -> bytes | None:
        """Check the field header[start:end]; its value, unfolded, if it is a Content-Type."""
        if not (header.startswith((b" ", b"\t", b"From "), start) or _FIELD_NAME.match(header, start)):
            # Not a header line: the email package starts the body here (and finds the part
            # defective), so from here on the two would read different headers.
            raise Malformed("ambiguous-structure")
        name, colon, _ = header[start:min(end, start + 64)].partition(b":")
        name = name.lower() if colon else b""
        if name in _PARAMETERISED and header.count(b";", start, end) > MAX_PARAMS:
            raise too_many_params()
        size = end - start - 2 * header.count(b"\r\n", start, end)
        if size > MAX_HEADER:
            raise header_too_long()
        if name in _STRUCTURED:
            if header.count(b"(", start, end) + header.count(b"\\", start, end) > MAX_COMMENTS:
                raise too_many_comments()
            tokens = len(header[start:end].translate(None, _NOT_SEPARATORS))
            self.structured += size
            self.tokens += tokens
            if name in _ADDRESSES:
                self.address_tokens += tokens
            if self.structured > MAX_STRUCTURED:
                raise structured_too_large()
            if self.address_tokens > MAX_ADDRESS_TOKENS:
                raise too_many_address_tokens()
            if self.tokens > MAX_TOKENS:
                raise too_many_tokens()
        if name == b"content-type":
            return header[start:end].partition(b":")[2].replace(b"\r\n", b"")
        return None

    def _blocks(self, at: int, depth: int) -> None:
        """message/delivery-status: header blocks separated by an empty line, each an entity."""
        end = self._region_end(at)
        while True:
            self._count(depth)
            header, after = self._header_block(at, end)
            self._fields(header)
            if after >= end:
                return
            at = after

    # -- boundaries ---------------------------------------------------------------------------

    def _push(self, boundary: str, depth: int, digest: bool) -> None:
        delimiter = b"--" + boundary.encode("ascii")
        for outer in self.open:
            # RFC 2046 §5.1.1: no boundary may be a prefix of an enclosing one (or the
            # other way round); readers then disagree about which multipart a line ends.
            if outer.delimiter.startswith(delimiter) or delimiter.startswith(outer.delimiter):
                raise Malformed("ambiguous-structure")
        self.open.append(_Open(delimiter, depth, digest))

    def _region_end(self, at: int) -> int:
        """Where the entity at `at` ends: the next delimiter line of any open multipart."""
        ahead = [self._ahead(entry, at)[0] for entry in self.open]
        return min((start for start in ahead if start >= 0), default=len(self.data))

    def _ahead(self, entry: _Open, at: int) -> tuple[int, bool, int]:
        """The first delimiter line of `entry` starting at or after `at` (cached: a search
        only ever moves forward, so each multipart's body is searched once)."""
        if entry.ahead is None or 0 <= entry.ahead[0] < at:
            entry.ahead = self._find(entry, at)
        return entry.ahead

    def _find(self, entry: _Open, at: int) -> tuple[int, bool, int]:
        data = self.data
        found = data.find(entry.needle, max(0, at - 2))
        if found < 0:
            return _NONE
        start = found + 2
        tail_start = start + len(entry.delimiter)
        line_end = data.find(b"\r\n", tail_start)
        tail = data[tail_start:line_end if line_end >= 0 else len(data)]
        close = tail.startswith(b"--")
        if (tail[2:] if close else tail).strip(b" \t"):
            # Other text after the boundary: the email package reads body text, readers that
            # match the boundary as a prefix (RFC 2046 forbids it in content) a delimiter.
            raise Malformed("ambiguous-structure")
        return start, close, line_end + 2 if line_end >= 0 else len(data)

    def _seek(self, at: int) -> tuple[int, int, bool] | None:
        """From a body at `at`, the next entity to read (start, depth, in a digest), or None
        at the end of the message; closes the multiparts whose close delimiter comes first."""
        while self.open:
            ahead = [(self._ahead(entry, at), level) for level, entry in enumerate(self.open)]
            found = [(line, level) for line, level in ahead if line[0] >= 0]
            if not found:
                raise Malformed("ambiguous-structure")  # a multipart is never closed
            (start, close, after), level = min(found)
            top = self.open[-1]
            if level != len(self.open) - 1:
                raise Malformed("ambiguous-structure")  # an outer boundary ends an open multipart
            if close:
                self.open.pop()
                at = after
                continue
            if self._ahead(top, after)[0] == after:
                # Two delimiter lines in a row: the email package drops the empty part
                # between them, other readers keep it.
                raise Malformed("ambiguous-structure")
            return after, top.depth + 1, top.digest
        return None


def _media_type(value: bytes | None, default: str) -> str:
    """The media type the email package reads from a Content-Type value (lower case), as far
    as it matters here: exact for multipart/* and message/*; in doubt, Malformed."""
    if value is None:
        return default
    if not _CONTAINER_WORDS.search(value):
        return "text/plain"  # some leaf: which one does not matter to the structure
    head = value.partition(b";")[0]
    if _UNCLEAR_TYPE.search(head):
        raise Malformed("ambiguous-structure")
    media = head.decode("ascii").strip().lower()
    return media if media.count("/") == 1 else "text/plain"  # RFC 2045 §5.2, as the package


def _boundary(value: bytes | None) -> str:
    """The boundary parameter of a multipart Content-Type, exactly as the email package
    reads it; Malformed where it is missing or could be read two ways."""
    params = (value or b"").partition(b";")[2]
    if _UNCLEAR_PARAMS.search(params) or params.count(b'"') % 2:
        raise Malformed("ambiguous-structure")
    found = []
    for match in _PARAM.finditer(params):
        name, _, raw = match.group().partition(b"=")
        if name.strip().lower() == b"boundary":  # a bare "boundary" too: the package reads ""
            found.append(raw.strip())
    if len(found) != 1 or not found[0]:
        raise Malformed("ambiguous-structure")  # none, or two: readers pick different ones
    raw = found[0]
    if raw.startswith(b'"'):
        if len(raw) < 2 or not raw.endswith(b'"') or b'"' in raw[1:-1]:
            raise Malformed("ambiguous-structure")
        raw = raw[1:-1]
    elif not _TOKEN.match(raw):  # RFC 2045 tspecials end an unquoted value early
        raise Malformed("ambiguous-structure")
    boundary = raw.decode("ascii").rstrip()  # RFC 2046: trailing spaces are not part of it
    if not BOUNDARY.match(boundary):
        raise Malformed("bad-boundary")
    return boundary
