"""The list's key in every message it sends: the Autocrypt and OpenPGP headers. Pure.

  Autocrypt: addr=FROM; prefer-encrypt=mutual; _list-recommendation=mandatory; keydata=BASE64
  OpenPGP: id=FINGERPRINT; preference=signencrypt

Autocrypt Level 1: a client takes the key of a header whose `addr` is the message's From
address (so `addr` is the From: the list's own address, LIST-request@, LIST-owner@ or
LIST-sendkey@), and ignores a header with an attribute it does not know unless the name starts
with `_`; `keydata` comes last and is the key, binary, in base64, here with only the user id
of that address (listserv.keyring.Keyring.minimal_key). `_list-recommendation=mandatory` tells
a client that understands it that this list takes encrypted mail only. The OpenPGP header
(draft-josefsson-openpgp-mailnews-header) names the key by its full fingerprint, for clients
that read that one instead.

Never Autocrypt-Gossip: a gossip header carries the keys of the other recipients, and on a
list that would hand every member the others' keys -- who is on the list. Nor any count of
members. The outbox (listserv.outbox) adds these headers to each delivery job's shared
envelope once, so every copy, digest, alert, notice and reply carries them and no copy costs
a gpg run.
"""

from __future__ import annotations

import base64
from email import policy
from email.parser import BytesHeaderParser

MAX_HEADER = 10 * 1024  # bytes of the Autocrypt header, folded; over it, none is sent
LINE = 76  # base64 characters per folded line of keydata (a header line stays under 78)


def autocrypt(address: str, keydata: bytes) -> str:
    """The Autocrypt header field, `Autocrypt: ...` folded per RFC 5322 (CRLF, each line
    under 78 characters, keydata last, its base64 broken into lines of LINE)."""
    encoded = base64.b64encode(keydata).decode("ascii")
    lines = [encoded[start:start + LINE] for start in range(0, len(encoded), LINE)]
    return "\r\n ".join([f"Autocrypt: addr={address}; prefer-encrypt=mutual;",
                         "_list-recommendation=mandatory; keydata=", *lines])


def openpgp(fingerprint: str) -> str:
    """The OpenPGP header field: the list key by its full fingerprint."""
    return f"OpenPGP: id={fingerprint}; preference=signencrypt"


def key_headers(address: str, fingerprint: str, keydata: bytes | None) -> bytes:
    """The header lines (CRLF after each) for a message from `address`: Autocrypt when there
    is key data for that address and its header stays under MAX_HEADER, and OpenPGP."""
    fields = [openpgp(fingerprint)]
    if keydata:
        field = autocrypt(address, keydata)
        if len(field) + 2 < MAX_HEADER:
            fields.insert(0, field)
    return "".join(f"{field}\r\n" for field in fields).encode("ascii")


def _head_end(message: bytes) -> int:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("The message has no end of header.")
    return end + 2


def sender(message: bytes) -> str:
    """The From address of `message` (its header as the list wrote it), lower case."""
    head = BytesHeaderParser(policy=policy.default).parsebytes(message[:_head_end(message)] + b"\r\n")
    found = head["From"].addresses if head["From"] is not None else ()
    if len(found) != 1:
        raise ValueError("The message does not have one From address.")
    return found[0].addr_spec.lower()


def with_headers(message: bytes, headers: bytes) -> bytes:
    """`message` (or the start of one: a delivery job's shared envelope) with `headers` added
    at the end of its header, where a header of the same name is taken out first."""
    end = _head_end(message)
    names = {line.split(b":", 1)[0].lower() for line in headers.split(b"\r\n") if line}
    kept, name = [], b""
    for line in message[:end].split(b"\r\n")[:-1]:
        if line[:1] not in (b" ", b"\t"):
            name = line.split(b":", 1)[0].lower()
        if name not in names:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n" + headers + message[end:]
