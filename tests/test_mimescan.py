"""The linear scan in front of the email package (listserv/mimescan.py): each cap at its
boundary, the structure it must read as the email package does, and properties of random and
mutated input. No gpg here: `mime.parse` is a pure function of the bytes."""

from __future__ import annotations

import email.parser
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listserv import mime, mimescan
from listserv.errors import Malformed, Refusal, TooLarge
from listserv.mimescan import (
    MAX_ADDRESS_TOKENS, MAX_COMMENTS, MAX_DEPTH, MAX_HEADER, MAX_HEADER_SECTION, MAX_HEADER_TOTAL, MAX_HEADERS,
    MAX_LINE, MAX_PARAMS, MAX_PARTS, MAX_STRUCTURED, MAX_TOKENS, scan,
)

from tests.helpers import mail as mf

PROPERTIES = settings(max_examples=400, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def refusal(raw: bytes) -> Refusal:
    with pytest.raises(Refusal) as caught:
        mime.parse(raw)
    return caught.value


def _fold(value: bytes) -> bytes:
    # Each fold replaces a space: unfolded (CRLF removed) it is the same value.
    return value.replace(b" ", b"\r\n ")


def pad_field(name: str, length: int) -> bytes:
    """An unstructured field of exactly `length` bytes unfolded, folded every 64 bytes."""
    value = bytearray(b"x" * (length - len(name) - 2))
    for i in range(63, len(value), 64):
        value[i:i + 1] = b" "
    return name.encode() + b": " + _fold(bytes(value))


def unfolded(line: bytes) -> int:
    return len(line.replace(b"\r\n", b""))


# -- each cap: exactly at it passes, one over is refused -----------------------------------------

def test_line_length_cap():
    at_cap = b"Subject: x\r\n\r\n" + b"a" * MAX_LINE + b"\r\nend\r\n"
    scan(at_cap)
    mime.parse(at_cap)
    over = at_cap.replace(b"\r\n\r\na", b"\r\n\r\naa", 1)
    refused = refusal(over)
    assert isinstance(refused, TooLarge) and refused.reason == "line-too-long"
    assert refused.smtp_reply == "552 5.3.4 A line of the message is longer than this list accepts."
    assert refusal(over[:over.index(b"\r\nend")]).reason == "line-too-long"  # the last line, unterminated


def test_a_header_field_is_measured_unfolded():
    at_cap = pad_field("X-Long", MAX_HEADER)
    assert unfolded(at_cap) == MAX_HEADER and at_cap.count(b"\r\n") > 1000
    mime.parse(b"Subject: x\r\n" + at_cap + b"\r\n\r\nbody\r\n")
    over = pad_field("X-Long", MAX_HEADER + 1)
    refused = refusal(b"Subject: x\r\n" + over + b"\r\n\r\nbody\r\n")
    assert (refused.reason, refused.code, refused.status) == ("header-too-long", 552, "5.3.4")
    assert str(refused) == "A header is longer than this list accepts."


def section(size: int, name: str = "X-Pad") -> bytes:
    """Header lines (each with its CRLF, none folded) of exactly `size` bytes."""
    lines, left, n = [], size, 0
    while left:
        length = min(left, 40_000)
        if left - length < 20 and left != length:
            length = left - 20
        label = f"{name}-{n}: ".encode()
        lines.append(label + b"x" * (length - len(label) - 2) + b"\r\n")
        left -= length
        n += 1
    assert sum(map(len, lines)) == size
    return b"".join(lines)


def test_header_section_cap():
    mime.parse(section(MAX_HEADER_SECTION) + b"\r\nbody\r\n")
    refused = refusal(section(MAX_HEADER_SECTION + 1) + b"\r\nbody\r\n")
    assert (refused.reason, refused.code) == ("header-section-too-large", 552)


def test_header_total_cap():
    def message(extra: int) -> bytes:
        top, inner = b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: text/plain\r\n"
        rest = MAX_HEADER_TOTAL - len(top) - 2 * len(inner) + extra  # over three header blocks
        sizes = [rest // 3, rest // 3, rest - 2 * (rest // 3)]
        parts = [inner + section(size, f"X-P{n}") + b"\r\nbody\r\n" for n, size in enumerate(sizes[1:])]
        return top + section(sizes[0]) + b"\r\n" + b"".join(b"--b\r\n" + p for p in parts) + b"--b--\r\n"
    assert scan(message(0)).parts == 3
    mime.parse(message(0))
    refused = refusal(message(1))
    assert (refused.reason, refused.code) == ("headers-too-large", 552)


def fields(count: int) -> bytes:
    return b"".join(b"X-N%d: %d\r\n" % (n, n) for n in range(count))


def test_header_count_cap():
    assert mime.parse(fields(MAX_HEADERS) + b"\r\nbody\r\n")["X-N499"] == "499"
    refused = refusal(fields(MAX_HEADERS + 1) + b"\r\nbody\r\n")
    assert (refused.reason, refused.code, refused.status) == ("too-many-headers", 554, "5.6.0")


@pytest.mark.parametrize("name", ["Content-Type", "Content-Disposition"])
def test_parameter_cap(name):
    def header(params: int) -> bytes:
        value = b"text/plain" if name == "Content-Type" else b"attachment"
        return name.encode() + b": " + value + b"".join(b";\r\n p%d=%d" % (n, n) for n in range(params))
    mime.parse(header(MAX_PARAMS) + b"\r\n\r\nbody\r\n")
    refused = refusal(header(MAX_PARAMS + 1) + b"\r\n\r\nbody\r\n")
    assert (refused.reason, refused.code) == ("too-many-params", 554)
    assert str(refused) == "A header has more parameters than this list accepts."


def test_structured_bytes_cap():
    # Long atoms: few tokens, many bytes (a Resent-To may repeat, so one message holds many).
    def message(total: int) -> bytes:
        lines, left = [], total
        while left:
            size = min(left, 8000)
            lines.append(b"Resent-To: " + b"a" * (size - 11))
            left -= size
        return b"\r\n".join(lines) + b"\r\n\r\nbody\r\n"
    mime.parse(message(MAX_STRUCTURED))
    refused = refusal(message(MAX_STRUCTURED + 1))
    assert (refused.reason, refused.code) == ("structured-headers-too-large", 552)


def test_structured_token_cap():
    # "Content-Type: " holds two tokens (':' and ' '); each '.' one more.
    def message(tokens: int) -> bytes:
        return b"Content-Type: text/plain" + b"." * (tokens - 2) + b"\r\n\r\nbody\r\n"
    mime.parse(message(MAX_TOKENS))
    refused = refusal(message(MAX_TOKENS + 1))
    assert (refused.reason, refused.code) == ("too-many-tokens", 554)
    mime.parse(b"X-Not-Structured: " + b"a," * MAX_TOKENS + b"\r\n\r\nbody\r\n")


def test_address_token_cap():
    def message(tokens: int) -> bytes:
        return b"Resent-To: " + b"a," * (tokens - 2) + b"a\r\n\r\nbody\r\n"
    mime.parse(message(MAX_ADDRESS_TOKENS))
    refused = refusal(message(MAX_ADDRESS_TOKENS + 1))
    assert (refused.reason, refused.code) == ("too-many-address-tokens", 554)


def test_comment_cap():
    def message(comments: int) -> bytes:
        return b"To: a@example.org " + b"(c)" * comments + b"\r\n\r\nbody\r\n"
    mime.parse(message(MAX_COMMENTS))
    assert refusal(message(MAX_COMMENTS + 1)).reason == "too-many-comments"


def nested(depth: int) -> bytes:
    entity = mf.text_part("deep inside")
    for _ in range(depth - 1):
        entity = mf.multipart("multipart/mixed", [entity])
    return entity


def test_depth_cap_counts_multiparts_and_enclosed_messages():
    assert scan(nested(MAX_DEPTH)).depth == MAX_DEPTH
    assert refusal(nested(MAX_DEPTH + 1)).reason == "too-deep"
    messages = b"Content-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH - 1) + b"Subject: x\r\n\r\nbody\r\n"
    assert scan(messages).depth == MAX_DEPTH
    mime.parse(messages)
    refused = refusal(b"Content-Type: message/rfc822\r\n\r\n" + messages)
    assert (refused.reason, refused.code) == ("too-deep", 554)


def test_part_cap_stops_before_the_email_package_builds_the_tree():
    many = [mf.text_part(f"part {i}") for i in range(MAX_PARTS - 1)]
    assert scan(mf.multipart("multipart/mixed", many)).parts == MAX_PARTS
    refused = refusal(mf.multipart("multipart/mixed", many + [mf.text_part("one more")]))
    assert (refused.reason, str(refused)) == ("too-many-parts", "The message has more parts than this list accepts.")


# -- the hostile messages of issue 9 never reach the email package --------------------------------

def five_mb_folded_header() -> bytes:
    return b"Subject: x\r\nX-Fill: " + b"\r\n a" * (5 * 1024 * 1024 // 4) + b"\r\n\r\nbody\r\n"


def many_params(count: int = 8000) -> bytes:
    return b"Content-Type: text/plain" + b"".join(b";\r\n p%d=%d" % (n, n) for n in range(count)) + b"\r\n\r\nbody\r\n"


def many_parts(count: int = 20_000) -> bytes:
    return mf.multipart("multipart/mixed", [b"Content-Type: text/plain\r\n\r\nx"] * count)


HOSTILE = {
    "five-mb-folded-header": (five_mb_folded_header, "header-too-long"),
    "8000-params": (many_params, "too-many-params"),
    "20000-parts": (many_parts, "too-many-parts"),
    "5000-addresses": (lambda: b"To: " + b",\r\n ".join([b"a@b"] * 5000) + b"\r\n\r\nx\r\n",
                       "too-many-address-tokens"),
}


@pytest.fixture
def parser_calls(monkeypatch):
    """Every message the email package is asked to parse (a spy: the real parser still runs)."""
    calls: list[bytes] = []
    real = email.parser.BytesParser.parsebytes

    def spy(self, text, headersonly=False):
        calls.append(text)
        return real(self, text, headersonly)
    monkeypatch.setattr(email.parser.BytesParser, "parsebytes", spy)
    return calls


@pytest.mark.parametrize("name", HOSTILE)
def test_the_email_package_never_sees_a_message_the_scan_refuses(parser_calls, name):
    make, reason = HOSTILE[name]
    assert refusal(make()).reason == reason
    assert parser_calls == []
    mime.parse(b"Subject: honest\r\n\r\nbody\r\n")
    assert len(parser_calls) == 1  # the spy does see what the scan lets through


# -- reading structure as the email package does ------------------------------------------------

def package_count(raw: bytes) -> int:
    return sum(1 for _ in mime._walk(email.parser.BytesParser(policy=mime.POLICY).parsebytes(raw), 1))


@pytest.mark.parametrize("raw", [
    # multipart/digest: a part without Content-Type is a whole message
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in\r\n\r\nx\r\n--d\r\n"
    b"Content-Type: text/plain\r\n\r\ny\r\n--d--\r\n",
    # message/delivery-status: each header block is an entity
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n--r\r\n"
    b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: a\r\n"
    b"Action: failed\r\n\r\nFinal-Recipient: b\r\n--r--\r\n",
    # a multipart inside an attached message inside a multipart
    b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\na\r\n--i\r\n\r\nb\r\n--i--\r\n"
    b"--o--\r\n",
    # the preamble, the epilogue and trailing spaces after a delimiter
    b'Content-Type: multipart/mixed;\r\n\tboundary="Apple-Mail=_1 2"\r\n\r\npre\r\n--Apple-Mail=_1 2  \r\n\r\n'
    b"x\r\n--Apple-Mail=_1 2--\t\r\nepilogue\r\n",
])
def test_the_scan_counts_what_the_email_package_builds(raw):
    assert scan(raw).parts == package_count(raw)
    mime.parse(raw)


@pytest.mark.parametrize("raw", [
    # an outer boundary that is a prefix of an inner one (RFC 2046 §5.1.1)
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=bb\r\n"
    b"\r\n--bb\r\n\r\nx\r\n--bb--\r\n--b--\r\n",
    # a line that starts with the boundary but is no delimiter
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--bx\r\n--b--\r\n",
    # two delimiter lines in a row: the email package drops the empty part, others keep it
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--\r\n",
    # an encoded word where the media type is, and a comment hiding its end
    b"Content-Type: =?us-ascii?q?multipart?=/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: text/plain (; multipart/mixed); boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    # a boundary given twice, in RFC 2231 sections, or with a tspecial outside quotes
    b"Content-Type: multipart/mixed; boundary=a; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
    b'Content-Type: multipart/mixed; boundary*0="b"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n',
    b"Content-Type: multipart/mixed; boundary=a=b\r\n\r\n--a\r\n\r\nx\r\n--a--\r\n",
    # a line in the header block that is no header: the email package starts the body there
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\nnot a header\r\nContent-Type: text/plain\r\n"
    b"\r\nx\r\n--d--\r\n",
    # an outer delimiter inside an unclosed inner multipart, and a multipart never closed
    b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n"
    b"\r\n--i\r\n\r\nx\r\n--o--\r\n",
    b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\r\nx\r\n",
])
def test_what_two_readers_could_split_differently_is_malformed(raw):
    with pytest.raises(Malformed) as caught:
        mime.parse(raw)
    assert caught.value.reason == "ambiguous-structure"
    assert caught.value.smtp_reply == "554 5.6.0 The message is not well-formed MIME and was not accepted."


def test_a_boundary_outside_rfc_2046_is_malformed():
    raw = b'Content-Type: multipart/mixed; boundary="a#b"\r\n\r\n--a#b\r\n\r\nx\r\n--a#b--\r\n'
    assert refusal(raw).reason == "bad-boundary"


# -- properties ---------------------------------------------------------------------------------

_BOUNDARIES = st.sampled_from(["b1", "b2", "x-y", "Apple-Mail=_1", "----=_Part_0", "b", "b--", "=?q?", "a b"])
_HEADERS = st.lists(st.sampled_from([
    b"X-A: 1", b"Subject: =?utf-8?q?hi?=", b"Content-Disposition: attachment; filename=\"a;b.txt\"",
    b"X-F: a\r\n b", b"Content-Transfer-Encoding: base64", b"From x", b"not a header", b"To: a@b, c@d",
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: message/rfc822", b"Resent-To: (c) a@b",
]), max_size=3)
_BODIES = st.sampled_from([b"", b"text", b"text\r\nmore", b"--b1", b"--b1 x", b"--b2--", b"\r\n",
                           b"X: y\r\n\r\nZ: w", b"aGVsbG8=\r\n"])


def _leaf():
    kinds = st.sampled_from([None, b"text/plain", b"message/delivery-status", b"application/pgp-encrypted"])
    return st.tuples(_HEADERS, kinds, _BODIES).map(
        lambda t: b"".join(h + b"\r\n" for h in t[0])
        + (b"Content-Type: " + t[1] + b"\r\n" if t[1] else b"") + b"\r\n" + t[2])


def _container(children):
    multipart = st.tuples(
        st.sampled_from([b"mixed", b"digest", b"signed", b"encrypted"]), _BOUNDARIES,
        st.lists(children, max_size=4), st.sampled_from([b"", b"preamble\r\n"]),
        st.sampled_from([b"", b"epilogue\r\n"]), st.booleans(),
    ).map(lambda t: b"Content-Type: multipart/" + t[0] + b'; boundary="' + t[1].encode() + b'"\r\n\r\n'
          + t[3] + b"".join(b"--" + t[1].encode() + b"\r\n" + c + b"\r\n" for c in t[2])
          + (b"--" + t[1].encode() + b"--\r\n" if t[5] else b"") + t[4])
    return st.one_of(multipart, children.map(lambda c: b"Content-Type: message/rfc822\r\n\r\n" + c))


TREES = st.recursive(_leaf(), _container, max_leaves=12)
PIECES = st.sampled_from([b"\r\n", b"--", b"b1", b"\r\n--b1\r\n", b"\r\n\r\n", b";", b'"', b" ", b"\n",
                          b"Content-Type: multipart/mixed; boundary=b1\r\n", b"(", b"\\", b"=?", b"\xff"])


@st.composite
def messages(draw) -> bytes:
    """A random MIME tree (valid, nearly valid or not), then maybe a few insertions and cuts."""
    raw = draw(TREES)
    for op, at, piece in draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4000), PIECES), max_size=4)):
        at = min(at, len(raw))
        raw = (raw[:at] + piece + raw[at:], raw[:at] + raw[at + len(piece):], raw[:at])[op]
    return raw


@PROPERTIES
@given(messages())
def test_parse_raises_nothing_but_refusals(raw):
    try:
        mime.parse(raw)
    except Refusal:
        pass


@PROPERTIES
@given(messages())
def test_the_email_package_never_builds_more_than_the_scan_counted(raw):
    """What the caps bound is what the scan saw: it must never see less structure than the
    email package then builds (and, for what `parse` accepts, exactly as much)."""
    try:
        mime.check_line_endings(raw)
        shape = scan(raw)
    except Refusal:
        return
    count = package_count(raw)
    assert count <= shape.parts
    try:
        mime.parse(raw)
    except Refusal:
        return
    assert count == shape.parts


_CT_PIECES = st.sampled_from([
    b"multipart", b"MultiPart", b"message", b"/", b"mixed", b"rfc822", b"digest", b"delivery-status",
    b";", b" ", b"\t", b"boundary", b"BOUNDARY", b"=", b'"', b"(", b")", b"\\", b"=?us-ascii?q?multipart?=",
    b"=?", b"?=", b"*", b"0", b"b1", b"'", b"\x1c", b"\xc2\x85", b"x", b"text", b"plain", b"\r\n ",
])


@PROPERTIES
@given(st.lists(_CT_PIECES, max_size=14).map(b"".join))
def test_a_content_type_is_read_as_the_email_package_reads_it(value):
    """Container or not, and the boundary: the scan agrees with the email package or refuses."""
    unfolded_value = value.replace(b"\r\n", b"")
    try:
        ours = mimescan._media_type(unfolded_value, "text/plain")
        boundary = mimescan._boundary(unfolded_value) if ours.startswith("multipart/") else None
        theirs = email.parser.BytesParser(policy=mime.POLICY).parsebytes(
            b"Content-Type: " + value + b"\r\n\r\n", headersonly=True)
        kind, their_boundary = theirs.get_content_type(), theirs.get_boundary()
    except Malformed:
        return  # the scan refuses: safe whatever the package would have read
    except Exception:
        return  # the package itself fails on it: `parse` refuses it as unparseable
    containers = ("multipart", "message")
    assert (kind.split("/")[0] in containers) == (ours.split("/")[0] in containers)
    if kind.split("/")[0] in containers:
        assert kind == ours
    if ours.startswith("multipart/") and their_boundary is not None:
        assert boundary == their_boundary


def _longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))


@PROPERTIES
@given(st.lists(st.sampled_from([b"a", b"bb", b"\r\n", b"cccc"]), max_size=60).map(b"".join),
       st.integers(1, 12))
def test_the_sampled_line_check_finds_every_long_line(data, limit):
    try:
        mimescan.check_lines(data, limit)
    except TooLarge:
        assert _longest_line(data) > limit
    else:
        assert _longest_line(data) <= limit


def test_mutations_of_real_client_messages_raise_only_refusals():
    rng = random.Random(9)
    samples = [mf.multipart("multipart/mixed", [mf.text_part("hi"), mf.text_part("é", disposition="inline")]),
               mf.encrypted_entity(b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----"),
               nested(4), many_parts(30)]
    for sample in samples:
        for _ in range(300):
            at = rng.randrange(len(sample))
            garbled = sample[:at] + bytes([rng.randrange(256)]) + sample[at + 1:]
            if rng.random() < 0.3:
                garbled = garbled[:rng.randrange(len(garbled))]
            try:
                mime.parse(garbled)
            except Refusal:
                pass


def test_the_receiving_doc_states_every_cap_as_the_code_has_it():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "receiving.md").read_text()

    def shown(value: int) -> str:
        for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
            if value >= size and value % size == 0 and value not in (MAX_TOKENS, MAX_ADDRESS_TOKENS):
                return f"{value // size} {unit}"
        return f"{value:,}"
    refusals = {
        "MAX_LINE": mimescan.line_too_long, "MAX_HEADER": mimescan.header_too_long,
        "MAX_HEADER_SECTION": mimescan.section_too_large, "MAX_HEADER_TOTAL": mimescan.headers_too_large,
        "MAX_STRUCTURED": mimescan.structured_too_large, "MAX_HEADERS": mimescan.too_many_headers,
        "MAX_PARAMS": mimescan.too_many_params, "MAX_TOKENS": mimescan.too_many_tokens,
        "MAX_ADDRESS_TOKENS": mimescan.too_many_address_tokens,
        "MAX_COMMENTS": mimescan.too_many_comments, "MAX_DEPTH": mimescan.too_deep,
        "MAX_PARTS": mimescan.too_many_parts,
    }
    for name, make in refusals.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"docs/receiving.md has no row for {name}"
        cells = [cell.strip() for cell in row.split("|")]
        assert cells[2].startswith(shown(getattr(mimescan, name)) + " "), row
        assert (cells[3], cells[4]) == (f"`{make().smtp_reply}`", f"`{make().reason}`"), row
