"""listserv.mime: what a submission's structure must be before anything reads it, and the exact
bytes of the parts a detached signature covers (RFC 3156 §5). Pure functions on real bytes."""

from __future__ import annotations

import pytest

from listserv import mime
from listserv.errors import Malformed

PLAIN = (b"From: Alice <alice@example.org>\r\nTo: news@example.org\r\nSubject: Hello\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, list.\r\n")

SIGNED_BODY = (b"preamble, not a part\r\n"
               b"--b1\r\n"
               b"Content-Type: text/plain\r\n\r\nfirst line\r\nlast line\r\n\r\n"
               b"--b1 \t\r\n"  # transport padding after a delimiter is allowed
               b"Content-Type: application/pgp-signature\r\n\r\nSIG"
               b"\r\n--b1--\r\n"
               b"epilogue, not a part\r\n")
SIGNED = (b"Content-Type: multipart/signed; boundary=b1; protocol=\"application/pgp-signature\"\r\n"
          b"\r\n" + SIGNED_BODY)


def reason(raw: bytes) -> str:
    with pytest.raises(Malformed) as refused:
        mime.parse(raw)
    return refused.value.reason


def test_an_honest_message_parses_and_its_headers_read_back_decoded():
    message = mime.parse(PLAIN)
    assert message.get_content_type() == "text/plain"
    assert mime.header(message, "Subject") == "Hello"
    assert message.get_content() == "Hello, list.\r\n"
    encoded = PLAIN.replace(b"Subject: Hello", b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n and more")
    assert mime.header(mime.parse(encoded), "subject") == "Grüße and more"


def test_header_is_none_for_a_missing_or_empty_field():
    message = mime.parse(PLAIN.replace(b"Subject: Hello\r\n", b"Subject:   \r\n"))
    assert mime.header(message, "Subject") is None
    assert mime.header(message, "In-Reply-To") is None


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"   \r\n"])
def test_an_empty_submission_is_malformed(raw):
    assert reason(raw) == "empty"


@pytest.mark.parametrize("raw", [
    PLAIN.replace(b"\r\n", b"\n"),  # LF throughout
    PLAIN.replace(b"Subject: Hello\r\n", b"Subject: Hello\n"),  # one bare LF
    PLAIN.replace(b"Subject: Hello\r\n", b"Subject: Hello\r"),  # one bare CR
    PLAIN.replace(b"Hello, list.", b"Hello,\rlist."),  # in the body too
])
def test_a_bare_cr_or_lf_anywhere_is_malformed(raw):
    assert reason(raw) == "bare-newline"


@pytest.mark.parametrize("field", [b"Subject: Again", b"content-type: text/html", b"FROM: Mallory <m@example.com>",
                                   b"Message-ID: <a@b>\r\nMessage-ID: <c@d>"])
def test_a_structural_header_twice_is_malformed_whatever_its_case(field):
    assert reason(PLAIN.replace(b"\r\n\r\n", b"\r\n" + field + b"\r\n\r\n", 1)) == "duplicate-header"


def test_fields_that_may_repeat_do():
    repeated = PLAIN.replace(b"\r\n\r\n", b"\r\nReceived: from a\r\nReceived: from b\r\nX-Note: 1\r\n"
                             b"X-Note: 2\r\n\r\n", 1)
    assert mime.parse(repeated).get_all("Received") == ["from a", "from b"]


@pytest.mark.parametrize("subject", [
    b"=?utf-8?q?Hello=0D=0ABcc:_everyone@example.org?=",  # an encoded CR LF
    b"=?utf-8?b?SGVsbG8KWC1JbmplY3RlZDogeWVz?=",  # an encoded LF, base64
    b"=?utf-8?q?Hello=00world?=",  # an encoded NUL
])
def test_a_header_whose_decoded_value_carries_a_line_break_or_nul_is_malformed(subject):
    assert reason(PLAIN.replace(b"Subject: Hello", b"Subject: " + subject)) == "header-injection"


def test_a_multipart_without_its_close_delimiter_is_ambiguous():
    assert mime.parse(SIGNED).is_multipart()
    assert reason(SIGNED.replace(b"\r\n--b1--\r\n", b"\r\n")) == "ambiguous-structure"
    assert reason(SIGNED.replace(b"boundary=b1", b"boundary=b2")) == "ambiguous-structure"


def test_crlf_writes_every_line_ending_as_crlf():
    assert mime.crlf(b"a\nb\r\nc\rd\r\n\r\n") == b"a\r\nb\r\nc\r\nd\r\n\r\n"
    assert mime.crlf(b"no ending") == b"no ending"
    assert mime.crlf(mime.crlf(b"a\n\nb")) == b"a\r\n\r\nb"


def test_body_parts_are_the_bytes_between_delimiters_exactly():
    first, signature = mime.body_parts(SIGNED, "b1")
    # The CRLF before a delimiter belongs to the delimiter; the one before it is the part's.
    assert first == b"Content-Type: text/plain\r\n\r\nfirst line\r\nlast line\r\n"
    assert signature == b"Content-Type: application/pgp-signature\r\n\r\nSIG"
    assert b"preamble" not in first + signature and b"epilogue" not in first + signature


def test_body_parts_agree_with_the_parser_on_the_number_of_parts():
    assert len(mime.body_parts(SIGNED, "b1")) == len(mime.parse(SIGNED).get_payload()) == 2
    assert mime.body_parts(b"\r\n" + SIGNED_BODY, "b1") == mime.body_parts(SIGNED, "b1")  # no headers


def test_a_delimiter_only_looks_like_one_at_a_line_start():
    body = b"\r\n--b1\r\nsee --b1-- and x--b1\r\n--b1x\r\n--b1--"
    assert mime.body_parts(body, "b1") == [b"see --b1-- and x--b1\r\n--b1x"]


@pytest.mark.parametrize("entity, boundary, why", [
    (SIGNED.replace(b"\r\n--b1--\r\n", b"\r\n"), "b1", "no-close-delimiter"),
    (SIGNED, "other", "no-close-delimiter"),
    (b"Content-Type: multipart/mixed; boundary=b1\r\n--b1--", "b1", "no-body"),
    (SIGNED, "", "bad-boundary"),
    (SIGNED, "x" * 71, "bad-boundary"),  # RFC 2046: at most 70 characters
])
def test_body_parts_refuse_what_they_cannot_cut_exactly(entity, boundary, why):
    with pytest.raises(Malformed) as refused:
        mime.body_parts(entity, boundary)
    assert refused.value.reason == why
