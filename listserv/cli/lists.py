"""`listserv list ...` and `listserv lists`: create, inspect, configure and delete lists."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from ..errors import Conflict, CryptoError, UsageError
from ..model import MailingList, fingerprint_format, iso, normalise_list_address
from ..store import Store
from ..membership import set_option
from ..options import defaults, parse_option
from . import App, echo_json, json_option, main, pass_app


def list_json(app: App, mailing_list: MailingList, member_count: int) -> dict[str, Any]:
    return {
        "address": mailing_list.address,
        "name": mailing_list.name,
        "fingerprint": mailing_list.fingerprint,
        "urgent_address": mailing_list.urgent_address,
        "request_address": mailing_list.request_address,
        "owner_address": mailing_list.owner_address,
        "sendkey_address": mailing_list.sendkey_address,
        "created": mailing_list.created,
        "members": member_count,
        "options": {**defaults(), **mailing_list.options},
    }


@main.group("list")
def list_group() -> None:
    """Create, show, configure and delete a list."""


@list_group.command("create")
@click.argument("address")
@click.option("--name", required=True, help="Display name, e.g. 'News'.")
@pass_app
def list_create(app: App, address: str, name: str) -> None:
    """Create the list ADDRESS and its own key; prints the key's fingerprint."""
    address = normalise_list_address(address)
    name = parse_option("name", name)
    if not name.strip():
        raise UsageError("The list name cannot be empty.")
    with app.store.transaction() as tx:
        # Checked under the lock before the (slow) key generation, so a key is made only
        # for a list that will be stored.
        if tx.get_list(address):
            raise Conflict(f"The list {address} exists already.")
        fingerprint = app.keyring.generate_list_key(address, name)
        options = {**defaults(), "name": name, "subject_prefix": f"[{name}]"}
        mailing_list = MailingList(address, name, fingerprint, options, iso())
        try:
            app.keyring.add_user_ids({fingerprint: mailing_list.key_user_ids})
            tx.add_list(mailing_list)
        except BaseException:
            with contextlib.suppress(CryptoError):  # gpg removes no public key whose secret is there
                app.keyring.delete_secret(fingerprint)
            raise
    click.echo(f"created {address}")
    click.echo(f"fingerprint {fingerprint_format(fingerprint)}")


@list_group.command("show")
@click.argument("address")
@json_option("object")
@pass_app
def list_show(app: App, address: str, as_json: bool) -> None:
    """Show a list: its key's fingerprint and its options."""
    snapshot = app.store.read()
    mailing_list = snapshot.require_list(normalise_list_address(address))
    shown = list_json(app, mailing_list, len(snapshot.members(mailing_list.address)))
    if as_json:
        echo_json(shown)
        return
    click.echo(f"address      {shown['address']}")
    click.echo(f"urgent       {shown['urgent_address']}")
    click.echo(f"requests     {shown['request_address']}")
    click.echo(f"admins       {shown['owner_address']}")
    click.echo(f"key          {shown['sendkey_address']}")
    click.echo(f"fingerprint  {fingerprint_format(shown['fingerprint'])}")
    click.echo(f"members      {shown['members']}")
    click.echo("options:")
    for key, value in shown["options"].items():
        click.echo(f"  {key:<20} {value!r}")


@list_group.command("key")
@click.argument("address")
@pass_app
def list_key(app: App, address: str) -> None:
    """Print the list's armored public key (members encrypt their posts to it)."""
    mailing_list = app.store.read().require_list(normalise_list_address(address))
    click.echo(app.keyring.export(mailing_list.fingerprint), nl=False)


@list_group.command("set")
@click.argument("address")
@click.argument("option")
@click.argument("value")
@pass_app
def list_set(app: App, address: str, option: str, value: str) -> None:
    """Set OPTION of the list to VALUE (see docs/options.md)."""
    address = normalise_list_address(address)
    with app.store.transaction() as tx:
        before = tx.require_list(address).option(option) if option == "emergency" else None
        _, parsed = set_option(tx, address, option, value)
    click.echo(f"{address}: {option} = {parsed!r}")
    if option == "emergency" and parsed != before:  # every admin hears of it, as of a signed x-emergency
        from ..notices import emergency

        ctx = app.context
        for job in ctx.outbox.notices([emergency(ctx.templates, ctx.roster(address), bool(parsed))]):
            click.echo(f"notice to the admins of {address} queued as {job.qid}")


@list_group.command("delete")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Required: confirms the deletion, which cannot be undone.")
@pass_app
def list_delete(app: App, address: str, yes: bool) -> None:
    """Delete the list for good: its members, its key pair, and the member keys no other
    list pins. Nothing is deleted without --yes."""
    address = normalise_list_address(address)
    if not yes:
        raise UsageError(f"Deleting {address} destroys its key and members; repeat with --yes.")
    with app.store.transaction() as tx:
        mailing_list = tx.require_list(address)
        fingerprints = {m.fingerprint for m in tx.members(address)} | {c["new"] for c in tx.key_changes(address)}
        tx.delete_list(address)
        unused = [f for f in fingerprints if not tx.fingerprint_in_use(f)]
    with Store(app.home.events).transaction() as events:
        events.forget_events(address)
    app.keyring.delete_secret(mailing_list.fingerprint)
    for fingerprint in unused:
        app.keyring.delete(fingerprint)
    if (app.home.data / "contacts").is_dir():  # its contacts' keys, unless another list's contact pins them
        from ..contacts import RequestContacts, contacts_keyring

        RequestContacts(contacts_keyring(app.home.data), ()).sweep(app.store.read())
    click.echo(f"deleted {address}")


@main.command("lists")
@json_option("array")
@pass_app
def lists(app: App, as_json: bool) -> None:
    """Show every list."""
    snapshot = app.store.read()
    shown = [list_json(app, ml, len(snapshot.members(ml.address))) for ml in snapshot.lists()]
    if as_json:
        echo_json(shown)
        return
    if not shown:
        click.echo("No lists yet; create one with 'listserv list create ADDRESS --name NAME'.")
    for entry in shown:
        click.echo(f"{entry['address']:<32} {entry['members']:>6} members  {entry['name']}")
