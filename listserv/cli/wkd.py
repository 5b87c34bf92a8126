"""`listserv wkd export`: the lists' keys as a Web Key Directory for a web server to serve."""

from __future__ import annotations

from pathlib import Path

import click

from .. import wkd
from . import App, main, pass_app


@main.group("wkd")
def wkd_group() -> None:
    """The lists' keys for a Web Key Directory, which mail clients ask by address (docs/wkd.md)."""


@wkd_group.command("export", short_help="Write the lists' keys into DIR as a Web Key Directory.")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(wkd.METHODS), default=wkd.ADVANCED, show_default=True,
              help="advanced: DIR is the web root of every openpgpkey.DOMAIN host; "
                   "direct: DIR/DOMAIN is the web root of each DOMAIN.")
@pass_app
def wkd_export(app: App, directory: Path, method: str) -> None:
    """Write into DIR, replacing an earlier export whole, the files a web server serves so that
    mail clients find each list's key by its addresses (LIST@, LIST-request@, LIST-owner@): the
    key with that address's user id alone, and a policy file per domain. Run it again after
    creating or deleting a list. listserv itself never looks a key up."""
    directory = wkd.check_target(directory)  # a bad DIR is refused before anything changes
    app.context.complete_list_keys()  # an older list key gets its -request@ and -owner@ user ids, as at `serve`
    lists = app.store.read().lists()
    plan = wkd.plan(lists, app.keyring, method)
    wkd.write(directory, plan.files)
    for skipped in plan.skipped:
        click.echo(f"listserv: warning: {skipped.address} is not published: {skipped.why}.", err=True)
    for published in plan.published:
        click.echo(f"{published.address:<40} {published.url}")
    domains = len({ml.domain for ml in lists})
    click.echo(f"wrote {len(plan.published)} keys of {len(lists)} lists on {domains} domains into "
               f"{directory} ({method} method)")
