"""Statements in the group's own voice: signed by the list key with a notation that says so,
and checked offline by anyone who holds that key (docs/verify.md).

The list key signs more than statements: every copy of every post (stages.fanout) and every
key reply (stages.sendkey). Any member could lift a list-signed post out of their copy and
show it around, so a signature by the list key alone proves only that the list sent it, not
that the group said it. What makes a statement is the one non-critical notation

    statement@DOMAIN=LIST          e.g. statement@example.org=news@example.org

on the signature itself (DOMAIN is the list address's domain), made only by
`Keyring.clearsign_statement` and `Keyring.sign_statement_detached`; nothing else the list
signs carries it. The time of the statement is the signature's own creation time.

`verify` judges a file by one key alone, in a throwaway keyring holding only that key: gpg
never reaches the network and no key of the machine it runs on counts. Each way it can fail
is an error of its own (errors.NotVerified's subtree) with one sentence a reader can act on.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote

from ..errors import (Altered, Expired, KeyProblem, NotAStatement, NotSigned, NotVerified, OtherList,
                      OtherSigner, Revoked, Unauthorized, UsageError)
from ..model import fingerprint_format, split_user_id
from . import listing, status
from .status import Line, StatusError

NOTATION = "statement@"  # the notation's name is this and the list address's domain
MAX_KEY_BYTES = 512 * 1024  # a key file for --key: one certificate
MAX_SIGNED_BYTES = 256 * 1024 * 1024  # a statement or an attachment read into memory
# Digests listserv signs statements with (SHA-512), and those as strong (RFC 9580 9.5):
# SHA-256, SHA-384, SHA-512, SHA-3-256, SHA-3-512. SHA-1 and the like never make a statement.
STRONG_DIGESTS = frozenset({"8", "9", "10", "12", "14"})

_CLEARSIGN_BEGIN = re.compile(rb"(?m)^-----BEGIN PGP SIGNED MESSAGE-----\r?$")
_SIGNATURE_END = b"-----END PGP SIGNATURE-----"


def domain_of(list_address: str) -> str:
    return list_address.rsplit("@", 1)[1].lower()


def notation(list_address: str) -> str:
    """The notation (gpg's sig-notation option) for a statement of `list_address`."""
    if "@" not in list_address or "=" in list_address or any(c.isspace() for c in list_address):
        raise UsageError(f"'{list_address}' is not a list address.")
    address = list_address.lower()
    return f"{NOTATION}{domain_of(address)}={address}"


def normalise(text: bytes) -> bytes:
    """A statement's text as it is signed: UTF-8 in NFC, every line break LF (a lone CR too),
    no trailing white space on a line (the cleartext signature ignores trailing spaces and tabs,
    RFC 9580 7.2, so what a reader sees is then exactly what was signed), no blank lines at the
    start or end, one final line break. The same as listserv.stages.statement.normalise, which
    makes the digest a quorum counts, so its output passes through unchanged. UsageError for
    text that is not UTF-8, or is empty."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("The statement is not UTF-8 text.") from None
    decoded = unicodedata.normalize("NFC", decoded.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in decoded.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise UsageError("The statement is empty.")
    return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Verified:
    """A statement `verify` found good."""

    list_address: str  # the list the notation names, lower case
    fingerprint: str  # the list key's primary fingerprint
    signed_at: int  # the signature's creation time, Unix seconds

    def sentence(self) -> str:
        return f"signed by the group {self.list_address} on {when(self.signed_at)}"


def when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _day(timestamp: int | None) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d") if timestamp else "an unknown day"


def check_clearsigned_frame(data: bytes, name: str) -> None:
    """A cleartext-signed file must be that and nothing more. gpg checks only what lies between
    BEGIN PGP SIGNED MESSAGE and the signature and says nothing of text around it, so anyone
    could add a paragraph above a real statement and gpg would still say "Good signature"."""
    begins = _CLEARSIGN_BEGIN.findall(data)
    if not begins:
        return  # not cleartext-signed: gpg judges what it is
    stripped = data.strip()
    if len(begins) > 1 or not _CLEARSIGN_BEGIN.match(stripped) or not stripped.endswith(_SIGNATURE_END):
        raise Altered(f"{name} holds text outside its signed part (before BEGIN PGP SIGNED MESSAGE or "
                      "after END PGP SIGNATURE); someone added it, and only the text between those "
                      "lines can be the group's.")


def notations(lines: tuple[Line, ...]) -> list[tuple[str, str]]:
    """(name, value) of each notation gpg reported, in order. gpg percent-escapes the value
    and may cut a long one over several NOTATION_DATA lines."""
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.keyword == "NOTATION_NAME":
            found.append((line[0], []))
        elif line.keyword == "NOTATION_DATA" and found:
            found[-1][1].append(line[0])
    return [(name, unquote("".join(parts))) for name, parts in found]


def statement_address(pairs: list[tuple[str, str]]) -> str | None:
    """The list address a signature's notations name as a statement's, or None when they
    name none, or not exactly one that is well formed."""
    named = [(name.lower(), value.lower()) for name, value in pairs if name.lower().startswith(NOTATION)]
    if len(named) != 1:
        return None
    name, value = named[0]
    if "@" not in value or name != f"{NOTATION}{domain_of(value)}":
        return None
    return value


class _Scratch:
    """A throwaway keyring holding one public key, for one verification."""

    def __init__(self, key: bytes, source: str):
        from . import IMPORT_FILTER, Keyring  # the package imports this module

        self.folder = Path(tempfile.mkdtemp(prefix="listserv-verify-"))
        self.folder.chmod(0o700)
        try:
            self.keyring = Keyring(self.folder, "--no-autostart")  # public keys only: no agent
            if len(key) > MAX_KEY_BYTES:
                raise KeyProblem(f"{source} is larger than {MAX_KEY_BYTES // 1024} KiB; give the list's key alone.")
            # gpg 2.2 stops ("Fatal: can't open trustdb.gpg") showing a revoked key under the
            # trust model "always" in a home without a trust database; only showing, the model
            # does not matter.
            shown, _ = self.keyring._run("read the key file", ["--trust-model", "pgp", "--with-colons",
                                                                "--import-options", "show-only", "--import"], key)
            keys = listing.parse(shown.output)
            if any(k.secret for k in keys):
                raise KeyProblem(f"{source} holds a secret key; give the list's public key.")
            if not keys:
                raise KeyProblem(f"{source} holds no OpenPGP key that GnuPG can read.")
            if len(keys) > 1:
                raise KeyProblem(f"{source} holds {len(keys)} keys; give a file with the list's key alone "
                                 "(gpg --export FINGERPRINT > list-key.pgp).")
            self.keyring._run("import the key", [*IMPORT_FILTER, "--import"], key)
            listed = self.keyring.listed()
            if len(listed) != 1:
                raise KeyProblem(f"{source} holds no OpenPGP key that GnuPG can read.")
            self.key = listed[0]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def verify(key: bytes, signed: bytes, signature: bytes | None = None, *, list_address: str | None = None,
           name: str = "The file", key_source: str = "The key file", key_name: str = "the list key") -> Verified:
    """Whether `signed` (cleartext-signed, or any data with its detached `signature`) is a
    statement of the list whose public key is `key`: Verified, or the NotVerified (or
    KeyProblem, for the key itself) that says why not.

    With `list_address` the notation must name exactly that list; without it, a list whose
    address is a user id of `key`. The sentences call the file `name`, the file the key came
    from `key_source` (both begin a sentence) and the key `key_name`."""
    if len(signed) > MAX_SIGNED_BYTES:
        raise UsageError(f"{name} is larger than listserv verify reads ({MAX_SIGNED_BYTES // 2**20} MiB); "
                         "check it with gpg --verify.")
    if signature is not None and len(signature) > MAX_KEY_BYTES:
        raise NotSigned(f"The signature of {name} is larger than {MAX_KEY_BYTES // 1024} KiB: it is not one "
                        "signature, which takes a few hundred bytes.")
    if signature is None:
        check_clearsigned_frame(signed, name)
    scratch = _Scratch(key, key_source)
    try:
        lines, returncode = _run_verify(scratch, signed, signature)
        return _judge(scratch.key, lines, returncode, detached=signature is not None,
                      list_address=list_address, name=name, key_name=key_name)
    finally:
        scratch.close()


def _run_verify(scratch: _Scratch, signed: bytes, signature: bytes | None) -> tuple[tuple[Line, ...], int]:
    timeout = 60.0 + len(signed) / 2**20  # a second more for each MiB
    args = ["--verify", "--", "-&SIDE", "-"] if signature is not None else ["--verify"]
    try:
        result, lines = scratch.keyring._run("verify", args, signed, side=signature, max_output=0,
                                             timeout=timeout)
    except StatusError:
        raise NotVerified("GnuPG's answer about the file cannot be read, so it proves nothing.") from None
    return lines, result.returncode


def _judge(key: listing.Listed, lines: tuple[Line, ...], returncode: int, *, detached: bool,
           list_address: str | None, name: str, key_name: str) -> Verified:
    # A cleartext-signed file has no literal data packet (no PLAINTEXT line); a signed message
    # (a copy of a post unwrapped from its encryption) has one.
    has_literal = any(line.keyword == "PLAINTEXT" for line in lines)
    try:
        judged = status.judge(lines, returncode, detached=detached or not has_literal)
    except Unauthorized as refusal:
        raise _refusal(refusal.reason, key, lines, name, key_name) from None
    if judged.encrypted:
        raise NotSigned(f"{name} is encrypted; decrypt it first (the statement inside is what is signed).")
    signature = judged.signature
    if signature is None:
        raise NotSigned(f"{name} is not signed.")
    if signature.signer != key.fingerprint:
        raise OtherSigner(f"{name} is signed by the key {fingerprint_format(signature.signer)}, "
                          f"not by {key_name}.")
    valid = next(line for line in lines if line.keyword == "VALIDSIG")
    signed_on = when(signature.signed_at)
    if valid[7] not in STRONG_DIGESTS:
        raise NotAStatement(f"{name} is signed by the list key (on {signed_on}) with a weak digest algorithm, "
                            "which listserv never uses for a statement; it is not a statement of the group.")
    address = statement_address(notations(lines))
    if address is None:
        raise NotAStatement(f"{name} is signed by the list key (on {signed_on}) but is not a statement of the "
                            "group: it lacks the statement notation (the list signs every copy of every post "
                            "too, so a member may have lifted this one out of their mail).")
    if list_address is not None and address != list_address.lower():
        raise OtherList(f"{name} is a statement of {address}, not of {list_address.lower()}.")
    addresses = {split_user_id(uid)[1].lower() for uid in key.uids}
    if address not in addresses:
        raise OtherList(f"{name} names the list {address}, but {key_name} has no user id for that "
                        "address: it is not that list's key.")
    return Verified(address, key.fingerprint, signature.signed_at)


def _refusal(reason: str, key: listing.Listed, lines: tuple[Line, ...], name: str, key_name: str) -> NotVerified:
    """The error for what status.judge refused, with the sentence a reader needs."""
    made = [status.timestamp(line[2]) for line in lines if line.keyword == "VALIDSIG"]
    on = f" on {when(made[0])}" if made else ""
    if reason == "unknown-key":
        errsig = next((line for line in lines if line.keyword == "ERRSIG"), None)
        issuer = (errsig.args[6] if errsig and len(errsig.args) > 6 else errsig[0] if errsig else "")
        by = f"the key {fingerprint_format(issuer)}" if issuer else "another key"
        return OtherSigner(f"{name} is signed by {by}, not by {key_name}.")
    if reason == "bad-signature":
        return Altered(f"{name} has been altered since it was signed (the signature does not match it), "
                       "or its signature is damaged.")
    if reason == "multiple-signatures":
        return Altered(f"{name} carries more than one signature; a statement of the group carries the list's alone.")
    if reason == "key-expired":
        return Expired(f"{name} was signed by the list key{on}, but that key expired on {_day(key.expires)}; "
                       "ask the group for its current key.")
    if reason == "signature-expired":
        ends = [int(line[3]) for line in lines if line.keyword == "VALIDSIG" and line[3].isdigit()]
        return Expired(f"{name} was signed by the list key{on}, but the signature expired on "
                       f"{_day(ends[0] if ends else None)}.")
    if reason == "key-revoked":
        return Revoked(f"{name} was signed by the list key{on}, but that key has been revoked: it no longer "
                       "proves anything; ask the group for its current key.")
    if reason in ("not-decryptable", "no-mdc", "unsigned-part"):
        return NotSigned(f"{name} is encrypted, not a signed statement; decrypt it first.")
    return NotSigned(f"{name} is not signed (it holds no OpenPGP signature GnuPG can read).")
