"""Changes to a list and its members that the CLI and the request address make alike, inside
a store transaction: the same checks, the same refusals, whoever asks.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from .errors import Conflict, KeyProblem, UsageError
from .keyring import KeyInfo, StagedKeys
from .model import ACTIVE, MailingList, Member, check_pseudonym, list_of_address
from .options import parse_option
from .store import Transaction


def unique_pseudonym(tx: Transaction, list_address: str, name: str | None, email: str,
                     taken: set[str] | None = None) -> str:
    """`name` checked and free in the list, or a neutral one; `taken` (lower-case names of the
    other members) may be given by a caller that adds many members."""
    if taken is None:
        taken = {m.name.lower() for m in tx.members(list_address) if m.email != email}
    if name is not None:
        name = check_pseudonym(name)
        if name.lower() in taken:
            raise Conflict(f"Another member of {list_address} is already called '{name}'.")
        return name
    # A neutral default that says nothing about the person or their key; the range grows
    # with the list, so a free number is always found quickly.
    span = max(9000, 10 * len(taken))
    while True:
        generated = f"Member {secrets.randbelow(span) + 1000}"
        if generated.lower() not in taken:
            return generated


def set_option(tx: Transaction, address: str, option: str, value: str) -> tuple[MailingList, object]:
    """Set a list option from its text (listserv.options); the list and the parsed value."""
    parsed = parse_option(option, value)
    mailing_list = tx.require_list(address)
    changed = replace(mailing_list, options={**mailing_list.options, option: parsed})
    if option == "name":
        if not str(parsed).strip():
            raise UsageError("The list name cannot be empty.")
        changed = replace(changed, name=parsed)
    tx.update_list(changed)
    return changed, parsed


def require_an_admin_left(tx: Transaction, list_address: str, without: Member) -> None:
    """Conflict when `without` is the list's last admin in good standing: a list with none
    could no longer be run by mail, nor tell anyone of its troubles."""
    admins = [m for m in tx.members(list_address) if m.role == "admin" and m.state == ACTIVE]
    if without.role == "admin" and [m.email for m in admins] == [without.email]:
        raise Conflict(f"{without.name} is the last admin of {list_address}; make another member an admin first.")


def key_problem(key: KeyInfo, revoked: set[str]) -> str | None:
    """Why `key` cannot be pinned; `revoked` are the pinned keys whose revocation was taken in
    (a copy sent again without its revocation is no less revoked)."""
    return key.problem() or ("the key is revoked" if key.fingerprint in revoked else None)


def single_key(staged: StagedKeys, revoked: set[str], pinned: str | None = None) -> KeyInfo:
    """The one key in `staged`, if it can be pinned -- or if it is `pinned` itself, revoked
    (`member set --key` with the member's own revocation)."""
    if len(staged.keys) != 1:
        raise KeyProblem(f"The file holds {len(staged.keys)} keys; give exactly one.")
    key = staged.keys[0]
    if key.fingerprint == pinned and key.fingerprint in revoked:
        return key
    problem = key_problem(key, revoked)
    if problem:
        raise KeyProblem(f"Refused: {problem} ({key.fingerprint}).")
    return key


def list_address_problem(email: str, list_addresses: list[str]) -> str | None:
    owner = list_of_address(email, list_addresses)
    if owner is None:
        return None
    return f"{email} is an address of the list {owner}; a member there would get every copy back at the list"
