"""Join: a request to join a list (x-join, listserv.invites) is signed by a key the list does
not hold yet, so gpg cannot judge its signature and the open stage refuses it as `unknown-key`.

Here it is opened again, by the one key it carries: gpg decrypts it with the list's key
without judging the signature (Keyring.peek) only so that the key attached can be found; then
that key alone is staged in a scratch keyring and the whole submission is opened again as any
other is, the signature judged by gpg with that key (stages.open.open_renewed), so the signer
IS the attached key. It is taken only when it holds nothing but x-join and x-list-name. Every
other check of authorize (encrypted to this list, fresh, addressed to LIST-request@, replay)
applies as ever. A submission that fails any of this hears what every outsider hears: the
original `unknown-key` refusal. Nothing is written here; the key is staged, never adopted.

    open_request(raw, keyring, members, list_key, kind) -> Opened
    joining(opened, roster) -> {fingerprint: PendingKey}   Roster.confirming, and the x-join such a signer may send
    signed_from(content) -> address | None                 the invitee's own word for their address
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import mime
from ..errors import KeyProblem, Malformed, Refusal, Unauthorized
from ..keyring import Keyring
from ..model import Kind, Member, PendingKey, Roster
from .commands import attached_keys, holds_only
from .open import MAX_PLAINTEXT, Opened, message_packets, open_message, open_renewed
from .renew import open_with_renewal

JOINING = "joining@invalid"  # the address of a provisional requester, never written to


def open_request(raw: bytes, keyring: Keyring, members: Mapping[str, Member], list_key: str, kind: Kind,
                 accepted: bool = False) -> Opened:
    """`open_with_renewal` (or `open_message` once accepted); and for a request refused as
    `unknown-key`, the submission opened by the one key it carries, if it is a request to join."""
    try:
        if accepted:
            return open_message(raw, keyring, list_key=list_key, accepted=True)
        return open_with_renewal(raw, keyring, members, list_key=list_key)
    except Unauthorized as refusal:
        if refusal.reason != "unknown-key" or kind != Kind.REQUEST:
            raise
        try:
            return _by_attached_key(raw, keyring, list_key)
        except (Refusal, KeyProblem, Malformed):
            raise refusal from None


def _by_attached_key(raw: bytes, keyring: Keyring, list_key: str) -> Opened:
    outer = mime.parse(raw)
    if outer.get_content_type() != "multipart/encrypted" or len(outer.get_payload()) != 2:
        raise Unauthorized("unknown-key")
    payload = outer.get_payload()[1].get_payload(decode=True) or b""
    content = mime.crlf(keyring.peek(message_packets(payload, "encrypted"), max_output=MAX_PLAINTEXT))
    keys = attached_keys(content)
    if len(keys) != 1 or not holds_only(content, "join"):
        raise Unauthorized("unknown-key")
    with keyring.stage(keys[0]) as staged:
        if len(staged.keys) != 1:
            raise Unauthorized("unknown-key")
        opened = open_renewed(raw, keyring, staged.scratch, list_key=list_key)
        if opened.signer != staged.keys[0].fingerprint or not holds_only(opened.content, "join"):
            raise Unauthorized("unknown-key")
        return opened


def reopen_request(raw: bytes, keyring: Keyring, list_key: str) -> Opened:
    """A request accepted before, opened again after the reply (an invitee's key may not be here)."""
    return open_request(raw, keyring, {}, list_key, Kind.REQUEST, accepted=True)


def joining(opened: Opened, roster: Roster) -> dict[str, PendingKey]:
    """Roster.confirming; and a signer who is not a member may send x-join, and nothing else (authorize.confirming_member
    checks that the request holds only it) -- a key awaiting its code too, so that a second
    x-join by it meets the same answer as any other bad one."""
    if opened.signer in roster.by_fingerprint:
        return roster.confirming
    if opened.signer in roster.confirming and not holds_only(opened.content, "join"):
        return roster.confirming  # a pending key's x-confirm: the PendingKey it has already decides
    ml = roster.mailing_list
    return {**roster.confirming, opened.signer: PendingKey(opened.signer, Member(ml.address, JOINING, opened.signer, "invitee"),
                                      float("inf"), "join")}


def signed_from(content: bytes) -> str | None:
    """The From address of the signed content itself (its protected header), if it names one."""
    try:
        addresses = getattr(mime.parse(content).get("From"), "addresses", ())
    except Malformed:
        return None
    return addresses[0].addr_spec.lower() if len(addresses) == 1 and addresses[0].addr_spec else None
