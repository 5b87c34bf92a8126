"""`listserv verify FILE [--list ADDRESS | --key KEYFILE] [--signature SIG]`: whether a file is a
statement of the group, signed by its list key (listserv.keyring.statement, docs/verify.md).

Offline: with --key it needs no home at all (a journalist holding only the list's key), with
--list it reads the list's key from the home's keyring. Either way the file is judged in a
throwaway keyring holding that one key.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..keyring import require_gnupg, statement
from ..model import normalise_list_address
from . import App, main, pass_app

_path = click.Path(dir_okay=False, path_type=Path)  # read here, so a missing file gets one sentence


def _read(path: Path, what: str, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a folder, not a file.") from None
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read ({exc.strerror}).") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than listserv verify reads ({limit // 1024} KiB).")
    return data


def _signature_for(file: Path, given: Path | None) -> tuple[Path, Path | None]:
    """The signed file and its detached signature: --signature, else FILE.sig beside FILE (and
    FILE itself when it is NAME.sig beside NAME), else none (FILE is cleartext-signed)."""
    if given is not None:
        return file, given
    beside = file.with_name(file.name + ".sig")
    if beside.is_file():
        return file, beside
    if file.suffix == ".sig" and file.with_suffix("").is_file():
        return file.with_suffix(""), file
    return file, None


@main.command("verify")
@click.argument("file", type=_path)
@click.option("--list", "list_address", metavar="ADDRESS",
              help="The list whose key (in this home's keyring) must have signed it.")
@click.option("--key", "key_file", type=_path, metavar="KEYFILE",
              help="A file holding the list's public key alone (armored or binary); no home needed.")
@click.option("--signature", "signature_file", type=_path, metavar="SIG",
              help="FILE's detached signature, when it is not FILE.sig beside FILE.")
@pass_app
def verify(app: App, file: Path, list_address: str | None, key_file: Path | None,
           signature_file: Path | None) -> None:
    """Check that FILE is a statement of the group: cleartext-signed by the list key, or with a
    detached signature (FILE.sig, or --signature), carrying the list's statement notation.
    Offline; prints who signed it and when, or says why not and exits non-zero (docs/verify.md)."""
    if (list_address is None) == (key_file is None):
        raise UsageError("Give the list's key with --key KEYFILE, or the list of this home with --list ADDRESS.")
    signed_path, signature_path = _signature_for(file, signature_file)
    signed = _read(signed_path, "The file", statement.MAX_SIGNED_BYTES)
    signature = _read(signature_path, "The signature", statement.MAX_KEY_BYTES) if signature_path else None
    if key_file is not None:
        key = _read(key_file, "The key file", statement.MAX_KEY_BYTES)
        require_gnupg()
        source, key_name, address = f"The key file {key_file}", f"the list key in {key_file}", None
    else:
        address = normalise_list_address(list_address)
        fingerprint = app.store.read().require_list(address).fingerprint
        key = app.keyring.export_public([fingerprint])
        source, key_name = f"The keyring of {app.home.root}", f"the list key of {address}"
    verified = statement.verify(key, signed, signature, list_address=address, name=str(signed_path),
                                key_source=source, key_name=key_name)
    click.echo(verified.sentence())
