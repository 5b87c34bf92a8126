"""`listserv contact add|list|remove`: the outsiders a list may resend posts to (listserv.contacts)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import contacts
from ..errors import Conflict
from ..keyring import MAX_KEY_BYTES, require_gnupg
from ..model import fingerprint_format, normalise_list_address
from . import App, echo_json, json_option, main, pass_app
from .members import _read_key, key_path


@main.group("contact")
def contact_group() -> None:
    """The outsiders a list may resend posts to, each with their pinned key."""


def _keyring(app: App):
    app.home.require()
    require_gnupg()
    return contacts.contacts_keyring(app.home.data)


@contact_group.command("add")
@click.argument("list_address", metavar="LIST")
@click.argument("address")
@click.option("--key", "key_file", type=key_path,
              help="The contact's public key, armored or binary ('-' reads stdin): one key that can encrypt. "
                   "Without it the contact gets resends only with resend_unencrypted on.")
@pass_app
def contact_add(app: App, list_address: str, address: str, key_file: Path | None) -> None:
    """Make ADDRESS a contact of LIST, pinned to the key in --key."""
    list_address = normalise_list_address(list_address)
    snapshot = app.store.read()
    snapshot.require_list(list_address)
    address = contacts.contact_address(address, snapshot)
    if snapshot.get_contact(list_address, address) is not None:
        raise Conflict(f"{address} is a contact of {list_address} already.")  # before any key is read
    data = _read_key(key_file, MAX_KEY_BYTES) if key_file is not None else None
    key = contacts.stage_key(_keyring(app), data)
    try:
        with app.store.transaction() as tx:
            contacts.add(tx, list_address, address, key)
    finally:
        key.close()
    click.echo(f"added the contact {address} to {list_address}")
    click.echo(f"pinned key {fingerprint_format(key.fingerprint)}" if key.fingerprint else
               "no key: resends to it go out only with resend_unencrypted on, signed and not encrypted")


@contact_group.command("list")
@click.argument("list_address", metavar="LIST")
@json_option("array")
@pass_app
def contact_list(app: App, list_address: str, as_json: bool) -> None:
    """The contacts of LIST: address, key fingerprint, when added."""
    list_address = normalise_list_address(list_address)
    snapshot = app.store.read()
    snapshot.require_list(list_address)
    found = snapshot.contacts(list_address)
    if as_json:
        echo_json([{k: c[k] for k in ("address", "fingerprint", "added")} for c in found])
        return
    for record in found:
        click.echo(contacts.shown(record))
    if not found:
        click.echo(f"{list_address} has no contacts.")


@contact_group.command("remove")
@click.argument("list_address", metavar="LIST")
@click.argument("address")
@pass_app
def contact_remove(app: App, list_address: str, address: str) -> None:
    """Remove ADDRESS from the contacts of LIST; its key leaves the contacts keyring."""
    list_address = normalise_list_address(list_address)
    with app.store.transaction() as tx:
        record = contacts.remove(tx, list_address, address)
    contacts.forget(_keyring(app), app.store.read(), [record["fingerprint"]])
    click.echo(f"removed the contact {record['address']} from {list_address}")
