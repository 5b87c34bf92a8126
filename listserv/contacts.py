"""Contacts: the outsiders a list may resend posts to (docs/requests.md, "Resends").

    data/contacts/   the contacts keyring: a GnuPG home of its own, mode 0700, holding only
                     outsiders' public keys -- never the members' keyring, so a contact's key
                     can never sign as a member, nor open anything sent to the list
    store            per list, address -> the pinned fingerprint (None: a contact with no key)

The admins fill it (`listserv contact add/remove`, x-add-contact/x-remove-contact); a key is
only ever taken from a file an admin gives, never looked up on the network. A contact's key
must be one key that can encrypt now, of a kind the fan-out builds key packets for itself
(RSA or Curve25519, listserv.pkesk): the list's copy is encrypted with the members' machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import Conflict, KeyProblem, UsageError
from .keyring import Keyring, StagedKeys
from .model import fingerprint_format, iso, list_of_address, normalise_address
from .store import Transaction


def contacts_keyring(data: Path) -> Keyring:
    """The contacts keyring of a home whose data folder is `data` (made on first use). Public
    keys only: gpg never needs an agent here."""
    return Keyring.made(data / "contacts", "--no-autostart")


@dataclass
class ContactKey:
    """A contact's key file, staged in a scratch keyring and judged; adopted into the
    contacts keyring only once the contact is stored (`adopt`, inside the transaction)."""

    staged: StagedKeys | None
    fingerprint: str | None

    def adopt(self) -> None:
        if self.staged is not None and self.fingerprint:
            self.staged.adopt([self.fingerprint])

    def close(self) -> None:
        if self.staged is not None:
            self.staged.close()


def stage_key(keyring: Keyring, data: bytes | None) -> ContactKey:
    """The one usable encryption key in `data` (None: a contact with no key), or KeyProblem."""
    if data is None:
        return ContactKey(None, None)
    staged = keyring.stage(data)
    try:
        if len(staged.keys) != 1:
            raise KeyProblem(f"The key data holds {len(staged.keys)} keys; give exactly one.")
        key = staged.keys[0]
        problem = key.problem()
        if problem:
            raise KeyProblem(f"Refused: {problem} ({key.fingerprint}).")
        if staged.scratch.recipient_keys([key.fingerprint]).get(key.fingerprint) is None:
            raise KeyProblem(f"Refused: the key's encryption subkey is not RSA or Curve25519, which a contact's key "
                             f"must be ({key.fingerprint}).")
    except BaseException:
        staged.close()
        raise
    return ContactKey(staged, key.fingerprint)


def contact_address(text: str, tx: Transaction) -> str:
    """`text` as a contact's address: a valid address, and none of this home's lists' own."""
    address = normalise_address(text, "contact address")
    owner = list_of_address(address, [ml.address for ml in tx.lists()])
    if owner is not None:
        raise UsageError(f"{address} is an address of the list {owner}, not an outsider's.")
    return address


def add(tx: Transaction, list_address: str, address: str, key: ContactKey) -> dict:
    """Store the contact (Conflict if it is one already) and take its key into the contacts
    keyring -- inside `tx`, so a key that cannot be copied stores no contact."""
    tx.require_list(list_address)
    record = {"list": list_address, "address": address, "fingerprint": key.fingerprint, "added": iso()}
    tx.add_contact(record)
    key.adopt()
    return record


def remove(tx: Transaction, list_address: str, address: str) -> dict:
    """Remove the contact (NotFound if there is none); `forget` then takes its key out."""
    tx.require_list(list_address)
    return tx.remove_contact(list_address, normalise_address(address, "contact address"))


def forget(keyring: Keyring, snapshot: Transaction, fingerprints: list[str | None]) -> None:
    """Keys no contact of any list pins any more leave the contacts keyring."""
    for fingerprint in fingerprints:
        if fingerprint and not snapshot.contact_key_in_use(fingerprint) and keyring.listed([fingerprint]):
            keyring.delete(fingerprint)


def shown(record: dict) -> str:
    """One contact, one line: its address and key."""
    key = fingerprint_format(record["fingerprint"]) if record["fingerprint"] else "no key (plain copies only)"
    return f"{record['address']}  {key}  added {record['added']}"


KEYWORDS = ("add-contact", "remove-contact", "contacts")  # request commands (listserv.ledger runs them)


class RequestContacts:
    """x-add-contact, x-remove-contact and x-contacts in a request's transaction: a contact's
    key (the one key attached to the request; none: a contact with no key) is staged when its
    line runs and copied into the contacts keyring only once every line ran (`adopt`); a
    removed contact's key leaves it after the transaction (`sweep`)."""

    def __init__(self, keyring: Keyring | None, attachments: tuple[bytes, ...]):
        self.keyring, self.attachments = keyring, attachments
        self.staged: list[ContactKey] = []

    def run(self, tx: Transaction, list_address: str, keyword: str, args: tuple[str, ...], changes: list) -> str:
        if self.keyring is None:
            raise UsageError(f"x-{keyword} cannot be run here.")
        if keyword == "contacts":
            return "\n".join(shown(c) for c in tx.contacts(list_address)) or "The list has no contacts."
        if keyword == "remove-contact":
            record = remove(tx, list_address, args[0])
            changes.append(f"removed the contact {record['address']}")
            return f"{record['address']} is no longer a contact."
        address = contact_address(args[0], tx)
        if tx.get_contact(list_address, address) is not None:
            raise Conflict(f"{address} is a contact of {list_address} already.")
        if len(self.attachments) > 1:
            raise KeyProblem(f"The request carries {len(self.attachments)} key files; x-add-contact takes exactly one.")
        key = stage_key(self.keyring, self.attachments[0] if self.attachments else None)
        self.staged.append(key)
        add(tx, list_address, address, ContactKey(None, key.fingerprint))  # the key is adopted once every line ran
        pinned = f"key {fingerprint_format(key.fingerprint)}" if key.fingerprint else "no key"
        changes.append(f"added the contact {address}, {pinned}")
        return f"{address} is a contact, {pinned}."

    def adopt(self) -> None:
        for key in self.staged:
            key.adopt()

    def close(self) -> None:
        for key in self.staged:
            key.close()

    def sweep(self, snapshot: Transaction) -> None:
        """Keys no contact pins any more leave the contacts keyring."""
        if self.keyring is not None:
            forget(self.keyring, snapshot, [key.fingerprint for key in self.keyring.listed()])
