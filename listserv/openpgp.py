"""OpenPGP framing (RFC 9580 §4.2, §6): split a packet stream, read a PKESK's key id, armor.

No cryptography happens here: gpg does that. This module only cuts a stream into packets,
keeping each packet's exact bytes so it can be written out again unchanged, and wraps or
unwraps ASCII armor. Malformed input raises `CryptoError`.

The armor checksum (CRC-24) is computed with whole-integer arithmetic instead of a per-byte
loop: CRC-24 is the remainder of a polynomial division over GF(2), and Python's big integers
can fold a message of n bits in half with a couple of dozen shifts and XORs at C speed. That
turns ~130 ms of per-byte Python for 1 MB into a few milliseconds. Linearity then lets one
shared data packet be checksummed once and combined with each member's small PKESK.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from .errors import CryptoError

PKESK = 1
SEIPD = 18
# Only these packets may use partial body lengths (RFC 9580 §4.2.1.4).
_PARTIAL_OK = frozenset({8, 9, 11, 18, 20})
_MIN_FIRST_PARTIAL = 512


# -- packets ----------------------------------------------------------------
@dataclass(frozen=True)
class Packet:
    tag: int
    raw: bytes  # the packet exactly as it was read: header, lengths and body
    new_format: bool
    spans: tuple[tuple[int, int], ...]  # (start, end) of each body chunk within `raw`

    @property
    def body(self) -> bytes:
        if len(self.spans) == 1:
            start, end = self.spans[0]
            return self.raw[start:end]
        return b"".join(self.raw[start:end] for start, end in self.spans)

    @property
    def partial(self) -> bool:
        return len(self.spans) > 1


def _need(data: memoryview, pos: int, count: int) -> None:
    if pos + count > len(data):
        raise CryptoError("The OpenPGP data ends in the middle of a packet.")


def _new_length(data: memoryview, pos: int) -> tuple[int, int, bool]:
    """Read a new-format length at `pos`: (body length, octets used, is a partial length)."""
    _need(data, pos, 1)
    first = data[pos]
    if first < 192:
        return first, 1, False
    if first < 224:
        _need(data, pos, 2)
        return ((first - 192) << 8) + data[pos + 1] + 192, 2, False
    if first == 255:
        _need(data, pos, 5)
        return int.from_bytes(data[pos + 1:pos + 5], "big"), 5, False
    return 1 << (first & 0x1F), 1, True


def _read_packet(data: memoryview, start: int) -> tuple[Packet, int]:
    ctb = data[start]
    if not ctb & 0x80:
        raise CryptoError("Not an OpenPGP packet (bit 7 of the header octet is clear).")
    pos = start + 1
    spans: list[tuple[int, int]] = []
    if ctb & 0x40:
        tag, new_format = ctb & 0x3F, True
        while True:
            length, used, partial = _new_length(data, pos)
            pos += used
            if partial and not spans and length < _MIN_FIRST_PARTIAL:
                raise CryptoError("The first partial body length is shorter than 512 octets.")
            _need(data, pos, length)
            spans.append((pos, pos + length))
            pos += length
            if not partial:
                break
        if len(spans) > 1 and tag not in _PARTIAL_OK:
            raise CryptoError(f"A packet with tag {tag} may not use partial body lengths.")
    else:
        tag, new_format = (ctb >> 2) & 0x0F, False
        kind = ctb & 0x03
        if kind == 3:  # indeterminate length: the body runs to the end of the data
            length = len(data) - pos
        else:
            size = 1 << kind  # 1, 2 or 4 octets
            _need(data, pos, size)
            length = int.from_bytes(data[pos:pos + size], "big")
            pos += size
        _need(data, pos, length)
        spans.append((pos, pos + length))
        pos += length
    if tag == 0:
        raise CryptoError("An OpenPGP packet has the reserved tag 0.")
    offset = [(s - start, e - start) for s, e in spans]
    return Packet(tag, bytes(data[start:pos]), new_format, tuple(offset)), pos


def parse(data: bytes) -> list[Packet]:
    """Every packet of a binary OpenPGP stream, in order; re-joining their `raw` gives `data`."""
    view = memoryview(data)
    packets: list[Packet] = []
    pos = 0
    while pos < len(view):
        packet, pos = _read_packet(view, pos)
        packets.append(packet)
    if not packets:
        raise CryptoError("The OpenPGP data is empty.")
    return packets


def pkesk_key_id(packet: Packet) -> str:
    """The recipient key id (16 upper-case hex digits) of a version 3 PKESK packet."""
    body = packet.body
    if packet.tag != PKESK:
        raise CryptoError(f"Expected a PKESK packet (tag 1), found tag {packet.tag}.")
    if len(body) < 10 or body[0] != 3:
        raise CryptoError("Only version 3 PKESK packets are understood here.")
    return body[1:9].hex().upper()


# -- CRC-24 (RFC 9580 §6.1) ----------------------------------------------------
# crc(M) = (INIT·x^(8n) + M(x)·x^24) mod P over GF(2), with M's first octet highest.
_CRC_INIT = 0xB704CE
_CRC_POLY = 0x1864CFB  # x^24 + x^23 + x^18 + x^17 + x^14 + x^11 + x^10 + x^7 + x^6 + x^5 + x^4 + x^3 + x + 1


def _clmul(big: int, small: int) -> int:
    """Carry-less (GF(2)) product; `small` is at most 24 bits, so this is a few big shifts."""
    out = 0
    while small:
        low = small & -small
        out ^= big << (low.bit_length() - 1)
        small ^= low
    return out


def _mod_small(value: int) -> int:
    while value.bit_length() > 24:
        value ^= _CRC_POLY << (value.bit_length() - 25)
    return value


def _x_power_2k() -> list[int]:
    powers = [2]  # x^1
    for _ in range(63):
        previous = powers[-1]
        powers.append(_mod_small(_clmul(previous, previous)))  # squaring doubles the exponent
    return powers


_X_2K = _x_power_2k()  # _X_2K[k] == x^(2^k) mod P


def _mod(value: int) -> int:
    """value mod P: fold the top part down at x^(2^k) until it is small."""
    while (bits := value.bit_length()) > 64:
        k = (bits - 1).bit_length() - 1  # 2^k < bits
        high = value >> (1 << k)
        value = (value & ((1 << (1 << k)) - 1)) ^ _clmul(high, _X_2K[k])
    return _mod_small(value)


def _x_power(exponent: int) -> int:
    """x^exponent mod P."""
    result, k = 1, 0
    while exponent:
        if exponent & 1:
            result = _mod_small(_clmul(result, _X_2K[k]))
        exponent >>= 1
        k += 1
    return result


def crc24(data: bytes) -> int:
    raw = _mod(int.from_bytes(data, "big") << 24)
    return raw ^ _mod_small(_clmul(_CRC_INIT, _x_power(8 * len(data))))


# -- ASCII armor (RFC 9580 §6.2) -------------------------------------------------
_LINE = 48  # octets per armor line: 64 base64 characters, as GnuPG writes


def _lines(data: bytes, newline: bytes = b"\n") -> bytes:
    """Base64 in 64-character lines, each ending in a newline (data starts a fresh line)."""
    encoded = binascii.b2a_base64(data, newline=False)
    width = _LINE * 4 // 3
    return b"".join(encoded[i:i + width] + newline for i in range(0, len(encoded), width))


def _frame(label: str, crc: int, *body_lines: bytes, newline: bytes = b"\n") -> bytes:
    checksum = binascii.b2a_base64(crc.to_bytes(3, "big"), newline=False)
    return b"".join((
        f"-----BEGIN {label}-----".encode(), newline, newline, *body_lines,
        b"=", checksum, newline, f"-----END {label}-----".encode(), newline,
    ))


def armor(data: bytes, label: str = "PGP MESSAGE") -> bytes:
    """ASCII armor with no headers and with the CRC-24 line (GnuPG T7071 needs it)."""
    return _frame(label, crc24(data), _lines(data))


class SharedArmor:
    """Armors `head + shared` for many small heads and one large shared tail.

    The tail's checksum contribution is computed once; its base64 lines depend only on
    where the head leaves the 48-octet line grid, so they are encoded once per alignment.
    """

    _CACHED_ALIGNMENTS = 4  # a few key types per list; more would hold several copies of a large post

    def __init__(self, shared: bytes, label: str = "PGP MESSAGE", newline: bytes = b"\n"):
        self.shared = shared
        self.label = label
        self.newline = newline  # b"\r\n" for mail: no per-copy conversion of the whole post
        self._crc_tail = _mod(int.from_bytes(shared, "big") << 24)
        self._shift = _x_power(8 * len(shared))  # moves the head's CRC state past the tail
        self._tails: dict[int, bytes] = {}

    def armor(self, head: bytes) -> bytes:
        crc_head = crc24(head)  # the CRC state after the head, as if it were the whole message
        crc = _mod_small(_clmul(crc_head, self._shift)) ^ self._crc_tail
        cut = -len(head) % _LINE
        return _frame(self.label, crc, _lines(head + self.shared[:cut], self.newline),
                      self._tail(cut), newline=self.newline)

    def _tail(self, cut: int) -> bytes:
        tail = self._tails.get(cut)
        if tail is None:
            tail = _lines(self.shared[cut:], self.newline)
            if len(self._tails) < self._CACHED_ALIGNMENTS:
                self._tails[cut] = tail
        return tail


def dearmor(text: bytes | str, label: str | None = "PGP MESSAGE") -> bytes:
    """The binary data of the first armored block; its checksum, if present, must match.

    RFC 9580 §6.1 lets readers ignore a wrong checksum; GnuPG rejects it, and so do we:
    a mismatch means the transport changed the message.
    """
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    lines = [line.rstrip(b" \t\r") for line in text.split(b"\n")]
    start = next((i for i, line in enumerate(lines) if line.startswith(b"-----BEGIN PGP ")), None)
    if start is None or not lines[start].endswith(b"-----"):
        raise CryptoError("No ASCII-armored OpenPGP block was found.")
    found = lines[start][len(b"-----BEGIN "):-5].decode("ascii", "replace")
    if label is not None and found != label:
        raise CryptoError(f"Expected an armored {label}, found {found}.")
    if found == "PGP SIGNED MESSAGE":
        raise CryptoError("Cleartext-signed messages are not supported here.")
    pos = start + 1
    while pos < len(lines) and lines[pos]:  # armor headers ("Version: ...") end at a blank line
        if b": " not in lines[pos]:
            raise CryptoError("The armor header lines are malformed.")
        pos += 1
    body: list[bytes] = []
    checksum: bytes | None = None
    end = f"-----END {found}-----".encode()
    for line in lines[pos + 1:]:
        if line == end:
            break
        if checksum is not None:
            raise CryptoError("Data follows the armor checksum line.")
        if line.startswith(b"=") and len(line) == 5:
            checksum = line[1:]
        else:
            body.append(line)
    else:
        raise CryptoError("The armored block has no end line.")
    try:
        data = binascii.a2b_base64(b"".join(body), strict_mode=True)
        expected = int.from_bytes(binascii.a2b_base64(checksum, strict_mode=True), "big") if checksum else None
    except binascii.Error:
        raise CryptoError("The armored block is not valid base64.") from None
    if expected is not None and expected != crc24(data):
        raise CryptoError("The armor checksum does not match: the message was altered in transit.")
    return data


# -- the shape of a submitted message (checked before gpg sees it) ------------
SIGNATURE, SKESK, ONE_PASS, COMPRESSED, SED, MARKER, LITERAL, AEAD = 2, 3, 4, 8, 9, 10, 11, 20
_ARMOR_LABELS = ("PGP MESSAGE", "PGP SIGNATURE")


def read_armored(text: bytes, label: str) -> list[bytes]:
    """The binary data of each armored block labelled `label` that `text` consists of; only
    whitespace may lie around and between them. Header lines are checked for form and
    dropped: gpg never sees them, so nothing in them can reach gpg's log."""
    if label not in _ARMOR_LABELS:
        raise ValueError(label)
    begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    rest = text.strip(b" \t\r\n")
    blocks = []
    while rest:
        stop = rest.find(end)
        if not rest.startswith(begin) or stop < 0 or rest.count(b"-----BEGIN ", 0, stop) != 1:
            raise CryptoError(f"The data is not a sequence of armored {label} blocks.")
        blocks.append(dearmor(rest[:stop + len(end)], label))
        rest = rest[stop + len(end):].lstrip(b" \t\r\n")
    if not blocks:
        raise CryptoError(f"The data holds no armored {label}.")
    return blocks


def message_kind(data: bytes) -> str:
    """"encrypted" or "signed" for a binary OpenPGP message of a shape real clients send;
    CryptoError for anything else (trailing packets, marker packets, a bare key, ...).

        encrypted   (PKESK | SKESK)+ (SEIPD | AEAD | SED)     SED is refused later, by gpg's word
        signed      COMPRESSED | ONE_PASS+ LITERAL SIGNATURE+ | SIGNATURE+ LITERAL | LITERAL
    """
    tags = [packet.tag for packet in parse(data)]
    keys = 0
    while keys < len(tags) and tags[keys] in (PKESK, SKESK):
        keys += 1
    if keys:
        if tags[keys:] in ([SEIPD], [AEAD], [SED]):
            return "encrypted"
        raise CryptoError("An encrypted OpenPGP message has packets after its encrypted data.")
    passes = 0
    while passes < len(tags) and tags[passes] == ONE_PASS:
        passes += 1
    rest = tags[passes:]
    if tags == [COMPRESSED] or tags == [LITERAL] \
            or (passes and rest == [LITERAL] + [SIGNATURE] * passes) \
            or (not passes and len(rest) > 1 and rest[-1] == LITERAL and set(rest[:-1]) == {SIGNATURE}):
        return "signed"
    raise CryptoError("The OpenPGP data is not a message of a known shape.")


WILDCARD = "0" * 16  # the key id of a hidden recipient (gpg --throw-keyids)


def only_to(data: bytes, key_ids: frozenset[str]) -> bytes:
    """An encrypted message with only its key packets for `key_ids` (or a hidden recipient)
    left; `data` unchanged when it has none.

    Key packets lie outside the encryption's integrity protection: anyone can add one that
    names any key, so which keys a message names proves nothing. With the others gone, gpg
    can open it only with one of these keys -- its DECRYPTION_KEY then says so -- or not at
    all. With none of them, gpg opens it with whichever key it finds, and says which."""
    packets = parse(data)
    kept = [p for p in packets if p.tag not in (PKESK, SKESK) or _names(p, key_ids)]
    if len(kept) == len(packets) or not any(p.tag == PKESK for p in kept):
        return data
    return b"".join(p.raw for p in kept)


def _names(packet: Packet, key_ids: frozenset[str]) -> bool:
    if packet.tag != PKESK:
        return False
    try:
        key_id = pkesk_key_id(packet)
    except CryptoError:  # a version not read here names, for this purpose, no key of ours
        return False
    return key_id in key_ids or key_id == WILDCARD


def signature_count(data: bytes) -> int:
    """How many signatures a detached signature holds; CryptoError if it holds anything else."""
    tags = [packet.tag for packet in parse(data)]
    if set(tags) != {SIGNATURE}:
        raise CryptoError("A detached signature holds packets that are not signatures.")
    return len(tags)
