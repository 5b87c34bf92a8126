"""How large a member's copy gets, from the size of what fan-out encrypts. Pure arithmetic.

A copy is   envelope prefix + ASCII armor( PKESK + SEIPD( compressed( one-pass signature +
            literal(inner) + signature ) + MDC ) ) + envelope suffix
where `inner` is compose's protected message: the post's content parts, the list's headers,
the footer and (alerts) the banner. What each step adds, measured (GnuPG 2.2.40, an ed25519
list key; docs/delivery.md has the table):

  * the packets around `inner`: 281-357 bytes for an empty message, plus a member's PKESK
    (96 bytes for Curve25519, 527 for RSA-4096; 2,060 for RSA-16384, the largest key gpg
    makes). gpg compresses (the list key prefers ZLIB); data that does not compress grows:
    by 0.05 % with ZLIB, 0.24 % with ZIP, 0.54 % with BZIP2 (10 MB of random bytes). A
    bound cannot count on compression saving anything (an operator's gpg.conf may switch
    it off), so it takes none and allows 1/128 (0.78 %) for growth, plus PACKETS bytes;
  * armor: 64 base64 characters and CRLF for every 48 bytes (x 1.375), and 65 bytes of
    BEGIN/END lines and checksum;
  * the envelope: about 920 bytes of outer headers and MIME framing (more with a long list
    name, threading ids, alert headers) -- measured per list by composing a probe;
  * compose itself: about 1,000 bytes of protected headers, the footer part, the banner
    (an alert), fresh MIME boundaries -- measured per list too (`Overhead`).

A relay counts more than the message: Postfix counts its own Received: header and the
envelope records against message_size_limit, a signing milter adds a DKIM-Signature.
RELAY_ADDS keeps room for that. And the outbox adds the list key's Autocrypt and OpenPGP
headers to every envelope after compose (listserv.autocrypt): KEY_HEADERS keeps room for them.
"""

from __future__ import annotations

from dataclasses import dataclass

ARMOR_IN, ARMOR_OUT = 48, 66  # bytes per armor line: 48 in, 64 characters + CRLF out
ARMOR_FRAME = 65  # "-----BEGIN PGP MESSAGE-----" CRLF CRLF, "=XXXX" CRLF, "-----END ...-----" CRLF
PACKETS = 4096  # PKESK (up to RSA-16384), one-pass signature, signature, packet headers, IV, MDC
GROWTH = 128  # incompressible data grows by at most 1/GROWTH through gpg (measured: < 1/185)
RELAY_ADDS = 8192  # what a relay counts beyond the message: Received:, envelope records, DKIM
KEY_HEADERS = 10240 + 128  # the outbox's Autocrypt (under autocrypt.MAX_HEADER) and OpenPGP headers
REBUILD = 8192  # compose's fresh boundaries (34 characters) for up to 100 MIME parts, refolding
THREADS = 4096  # a reply's In-Reply-To and References: copied outside too (the probe has none)
# How much compose and a digest can grow a content at most, for a quick look that spares
# composing a large message to measure it: compose's quoted-printable rewriting of an HTML
# part (with inline images) makes at most 3.2 bytes of 1; a digest repeats a post's text as
# HTML, escaped (one '&' becomes '&amp;'), both re-encoded (x 1.37 for base64).
POST_GROWTH, DIGEST_GROWTH = 4, 16
DIGEST_FRAME = 16384  # a digest's own text around one post: contents line, headings, footer
DIGEST_SLACK = 1024  # what one more post adds to a part beyond its own size (numbers, contents)


@dataclass(frozen=True)
class Overhead:
    """What compose adds around a post's content for one list (measured with a probe)."""

    inner: int  # protected headers, footer part, banner, framing: inner minus content
    envelope: int  # the outer prefix and suffix of every copy


def copy_bound(inner: int, envelope: int) -> int:
    """The most bytes a copy of an `inner` message of this size can have."""
    packets = inner + -(-inner // GROWTH) + PACKETS
    return envelope + ARMOR_FRAME + -(-packets // ARMOR_IN) * ARMOR_OUT


def largest_inner(limit: int, envelope: int) -> int:
    """The largest inner message whose copies are at most `limit` bytes (0 if none fits)."""
    lines = (limit - envelope - ARMOR_FRAME) // ARMOR_OUT
    inner = max(0, (lines * ARMOR_IN - PACKETS) * GROWTH // (GROWTH + 1))
    while inner > 0 and copy_bound(inner, envelope) > limit:
        inner -= 1
    return inner


def copy_limit(relay_size: int | None) -> int | None:
    """The most a copy may have, as composed, for a relay that takes `relay_size` bytes (None:
    no limit): room kept for what the relay and the outbox still add."""
    if relay_size is None:
        return None
    return max(0, relay_size - RELAY_ADDS - KEY_HEADERS)


def largest_post(limit: int | None, overhead: Overhead) -> int | None:
    """The largest submission whose copies certainly fit under `limit`, if its content is no
    larger than the submission itself -- true of every post a client does not compress:
    opening a post only takes away (armor, encryption, signature, outer headers), and
    compose rebuilds the content part by part. A client that compresses can hide more
    content in fewer bytes; the content itself is checked after opening (`fits`)."""
    if limit is None:
        return None
    return max(0, largest_inner(limit, overhead.envelope + THREADS) - overhead.inner - REBUILD)


def fits(inner: int, envelope: int, limit: int | None) -> bool:
    return limit is None or copy_bound(inner, envelope) <= limit
