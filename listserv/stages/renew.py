"""Renew: a submission whose signer's pinned key has expired, carrying that same key renewed.

A member whose key expired extends it (`gpg --quick-set-expire`, `sq key expire`,
Thunderbird's key manager) and sends the renewed key along: attached to an `x-key-update`
request, or in the `Autocrypt:` header Thunderbird writes inside the encryption of every
message. gpg, judging by the copy the list has, says the signature is good but the key expired
(EXPKEYSIG), and the submission is refused as `key-expired`. Here it is judged again, by the
key as the submission renews it: the offered copy of the *same* fingerprint is staged beside
the pinned one (self-signatures only), and only if that renewed key is usable now is the
signature checked again, by gpg, with that key alone (listserv.stages.open.open_renewed: the
list's keyring gives only the session key). A signature the renewed key does not make good
-- its signing subkey still expired, say -- is refused as before. Nothing is written here:
the renewal itself is taken in after the reply, like any key update (listserv.keyupdate).

    offered_keys(content) -> (key data, ...)       what a signed content carries of keys
    open_with_renewal(raw, keyring, members, list_key) -> Opened
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from .. import mime
from ..errors import KeyProblem, Malformed, Unauthorized
from ..keyring import Keyring
from ..model import Member
from .commands import MAX_KEY_ATTACHMENT, attached_keys
from .open import Opened, open_message, open_renewed


def offered_keys(content: bytes) -> tuple[bytes, ...]:
    """The key data a signed content carries: its application/pgp-keys parts, then the
    keydata of the Autocrypt headers of the content itself (RFC 9788's protected headers;
    never the outer, unsigned ones, nor Autocrypt-Gossip, which carries other people's keys)."""
    found = list(attached_keys(content))
    try:
        headers = mime.parse(content)
    except Malformed:
        return tuple(found)
    for value in headers.get_all("Autocrypt") or ():
        attributes = dict(_attribute(part) for part in str(value).split(";") if "=" in part)
        try:
            data = base64.b64decode("".join(attributes.get("keydata", "").split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        if 0 < len(data) <= MAX_KEY_ATTACHMENT:
            found.append(data)
    return tuple(found)


def _attribute(part: str) -> tuple[str, str]:
    name, _, value = part.partition("=")
    return name.strip().lower(), value.strip()


def open_with_renewal(raw: bytes, keyring: Keyring, members: Mapping[str, Member], *,
                      list_key: str | None = None) -> Opened:
    """`open_message`, and when the refusal is `key-expired` for a member's key, the
    submission opened again and judged by the renewed key it carries, if any makes it good."""
    try:
        return open_message(raw, keyring, list_key=list_key)
    except Unauthorized as refusal:
        if refusal.reason != "key-expired":
            raise
        expired = refusal
    first = open_message(raw, keyring, list_key=list_key, accepted=True)  # what it says, by an expired key
    if first.signer not in members:
        raise expired
    for data in offered_keys(first.content):
        try:
            with keyring.stage(data, known=(first.signer,)) as staged:
                renewed = [key for key in staged.keys if key.fingerprint == first.signer]
                if renewed and first.signer in staged.changed and renewed[0].problem() is None:
                    return open_renewed(raw, keyring, staged.scratch, list_key=list_key)
        except KeyProblem:
            continue  # not key data gpg can read: the next one may be
    raise expired
