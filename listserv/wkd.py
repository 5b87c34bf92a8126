"""The Web Key Directory export (draft-koch-openpgp-webkey-service): the files a web server
serves so that a mail client finds a list's key by the list's address alone.

A client hashes the address's local part -- SHA-1 of it with ASCII letters lowercased (and no
other character changed), in z-base-32 -- and asks for `.well-known/openpgpkey/DOMAIN/hu/HASH`
on the host `openpgpkey.DOMAIN` (the advanced method), else `.well-known/openpgpkey/hu/HASH` on
DOMAIN itself (the direct method); each needs a `policy` file beside `hu/`. What it gets is
the key, binary, with the user id of that address only.

The layout of DIR (docs/wkd.md): the advanced method's paths name the domain, so DIR is one web
root for every `openpgpkey.DOMAIN` host; the direct method's do not, so DIR holds one web root
per domain, DIR/DOMAIN/.

`write` builds the whole tree in a temporary sibling of DIR and puts it in DIR's place in one
step (durable.replace_directory): a web server serves the old export or the new, never a mix;
a list deleted since is gone from it; a run that fails leaves the old export as it was.

Export only: listserv never looks anyone's key up by WKD or a keyserver -- each look-up would
tell a member's provider that this server knows them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import string
import tempfile
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import durable
from .errors import StoreError, UsageError
from .keyring import Keyring
from .model import MailingList

ADVANCED, DIRECT = "advanced", "direct"
METHODS = (ADVANCED, DIRECT)
MARKER = ".listserv-wkd"  # in DIR: what tells an earlier export from someone else's files
_MARKER_TEXT = b"A Web Key Directory written by `listserv wkd export`; each run replaces this directory whole.\n"
_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"  # RFC 6189, section 5.1.6
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_WELL_KNOWN = PurePosixPath(".well-known", "openpgpkey")


def zbase32(data: bytes) -> str:
    """z-base-32 (RFC 6189 5.1.6): five bits a character, the most significant first, the
    last character's missing bits zero, no padding. 20 bytes (a SHA-1) make 32 characters."""
    bits = len(data) * 8
    count = -(-bits // 5)
    number = int.from_bytes(data, "big") << (count * 5 - bits)
    return "".join(_ZBASE32[(number >> 5 * (count - 1 - i)) & 31] for i in range(count))


def split(address: str) -> tuple[str, str]:
    """(local part as written, domain in lower case)."""
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise UsageError(f"'{address}' is not an email address.")
    return local, domain.lower()


def wkd_hash(address: str) -> str:
    """The name of the address's file in `hu/`: only ASCII letters are lowercased, as the draft
    and gpg do (`Ä` stays `Ä`); a `+tag` is part of the local part like any other character."""
    local, _ = split(address)
    return zbase32(hashlib.sha1(local.translate(_ASCII_LOWER).encode("utf-8")).digest())


def key_path(address: str, method: str) -> PurePosixPath:
    """Where the address's key lies in DIR."""
    _, domain = split(address)
    return _root(domain, method) / "hu" / wkd_hash(address)


def policy_path(domain: str, method: str) -> PurePosixPath:
    return _root(domain.lower(), method) / "policy"


def _root(domain: str, method: str) -> PurePosixPath:
    if method == ADVANCED:
        return _WELL_KNOWN / domain
    if method == DIRECT:
        return PurePosixPath(domain) / _WELL_KNOWN
    raise UsageError(f"'{method}' is not a WKD method; use one of {', '.join(METHODS)}.")


def url(address: str, method: str) -> str:
    """The URL a client asks for the address's key (the `l=` parameter: the local part as
    written, for servers that look keys up rather than serve files)."""
    local, domain = split(address)
    host = f"openpgpkey.{domain}" if method == ADVANCED else domain
    path = key_path(address, method)
    served = path if method == ADVANCED else path.relative_to(domain)
    return f"https://{host}/{served}?l={urllib.parse.quote(local, safe='')}"


@dataclass(frozen=True)
class Published:
    address: str
    path: PurePosixPath  # in DIR
    url: str


@dataclass(frozen=True)
class Skipped:
    address: str
    why: str


@dataclass(frozen=True)
class Plan:
    files: tuple[tuple[PurePosixPath, bytes], ...]
    published: tuple[Published, ...]
    skipped: tuple[Skipped, ...]


def plan(lists: Iterable[MailingList], keyring: Keyring, method: str) -> Plan:
    """What the export holds: for each list's own addresses (LIST@, LIST-request@, LIST-owner@:
    the user ids `MailingList.key_user_ids` gives its key) the key with that user id alone, and
    an empty policy file for each domain (no policy flags: nobody submits keys here). An address
    whose user id the key lacks or has revoked is left out and said so."""
    if method not in METHODS:  # refused before gpg runs
        raise UsageError(f"'{method}' is not a WKD method; use one of {', '.join(METHODS)}.")
    files: dict[PurePosixPath, bytes] = {}
    published, skipped = [], []
    for mailing_list in sorted(lists, key=lambda ml: ml.address):
        for address in (mailing_list.address, mailing_list.request_address, mailing_list.owner_address):
            key = keyring.export_user_id(mailing_list.fingerprint, address)
            if key is None:
                skipped.append(Skipped(address, "the list's key has no valid user id for it"))
                continue
            files[key_path(address, method)] = key
            published.append(Published(address, key_path(address, method), url(address, method)))
        files[policy_path(mailing_list.domain, method)] = b""
    return Plan(tuple(files.items()), tuple(published), tuple(skipped))


def check_target(directory: Path) -> Path:
    """DIR made absolute (a symbolic link followed), or UsageError: a file; missing parent;
    a directory holding files that no export wrote, which `write` would delete."""
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file, not a directory; give a directory for the export.")
    if not directory.parent.is_dir():
        raise UsageError(f"{directory.parent} does not exist; make it first, then export into {directory}.")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / MARKER).is_file():
        raise UsageError(f"{directory} holds files that no listserv export wrote, which an export would "
                         "delete; give a new or empty directory, or an earlier export's.")
    return directory


def write(directory: Path, files: Iterable[tuple[PurePosixPath, bytes]]) -> None:
    """Replace DIR whole by a tree of `files` (and the marker), readable by a web server running
    as another user: directories 0755, files 0644 -- keys public, nothing else in it."""
    directory = check_target(directory)
    entries = dict(files)
    entries[PurePosixPath(MARKER)] = _MARKER_TEXT
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}.wkd-", dir=directory.parent))
    except OSError as exc:
        raise StoreError(f"Cannot write the export beside {directory}: {exc.strerror}.") from None
    try:
        for path, data in sorted(entries.items()):
            durable.make_directories((scratch / path).parent, mode=0o755)
            durable.write_atomically(scratch / path, data, mode=0o644)
        for folder, _, names in os.walk(scratch):  # as the modes say, whatever the umask
            os.chmod(folder, 0o755)
            for name in names:
                os.chmod(os.path.join(folder, name), 0o644)
        old = durable.replace_directory(scratch, directory)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise StoreError(f"Cannot write the export into {directory}: {exc.strerror}.") from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
