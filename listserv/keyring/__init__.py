"""The deployment's keyring: list keys and members' pinned public keys, and every gpg run.

gpg always runs with the home's keys/ passed explicitly, never through os.environ, with
automatic key retrieval and import off and dirmngr disabled, so gpg never reaches the network.
Keys are always named by full fingerprint, never looked up by an email address.

gpg is run directly (keyring.run), not through python-gnupg: python-gnupg reads gpg's status
from stderr, where gpg also writes a log that echoes text from the input, and splits what it
reads with str.splitlines() -- a message could write its own status lines, and a user id its
own key listing. Here the status arrives on a pipe of its own and is read by a grammar
(keyring.status), listings are cut at b"\\n" only (keyring.listing), and the decision
"decrypted with integrity, one good signature by primary fingerprint F" is made in one place
(`decrypt` and `verify_detached`, through status.judge); the stages get that verdict.

A key offered for a member is first imported into a scratch keyring (keeping self-signatures
only, against certificate flooding) and inspected there; only keys that pass are copied into
the real keyring, so a refused key leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import pkesk
from ..model import iso, split_user_id
from ..errors import CryptoError, EnvironmentProblem, KeyProblem, TooLarge, Unauthorized
from . import listing, statement, status
from .listing import Listed
from .run import GpgTimeout, OutputTooLarge, Run, run
from .status import Signature, StatusError

__all__ = ["GPG_OPTIONS", "IMPORT_FILTER", "MIN_GNUPG", "Decrypted", "GpgTimeout", "KeyInfo", "Keyring",
           "Signature", "StagedKeys", "check_fingerprint", "gnupg_version", "require_gnupg"]

# 2.2.8 fixed the SigSpoof status-line injection (CVE-2018-12020); 2.2.17 added the import
# option self-sigs-only and 2.2.20 the option --auto-key-import that GPG_OPTIONS switches off.
# Older gpg stops at the unknown option, so 2.2.20 is what this module really needs.
MIN_GNUPG = (2, 2, 20)
MAX_KEY_BYTES = 512 * 1024  # one member key; photo ids beyond this are refused
MAX_KEYRING_BYTES = 256 * 1024 * 1024  # `member import` of a whole keyring file
_SLACK = 65536  # how far gpg's --max-output may stop short of (or past) its limit
VERIFY_TIMEOUT = 60.0  # seconds for one decryption or verification of a submission

GPG_OPTIONS = [
    "--no-auto-key-retrieve",
    "--no-auto-key-import",
    "--disable-dirmngr",
    "--no-greeting",
    "--trust-model", "always",  # membership is decided by pinned fingerprints, not the web of trust
    "--no-emit-version",
    "--no-comments",
    "--pinentry-mode", "error",  # no secret key here has a passphrase; never wait for one
]
IMPORT_FILTER = ["--import-options", "import-clean,self-sigs-only"]
_LIST = ["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--with-subkey-fingerprint"]

@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str
    uids: tuple[str, ...]
    can_encrypt: bool  # has an encryption subkey usable now
    can_sign: bool
    revoked: bool
    expired: bool
    expires: str | None  # ISO 8601 UTC, None for no expiry
    secret: bool = False

    @property
    def primary_uid(self) -> str:
        return self.uids[0] if self.uids else ""

    def problem(self) -> str | None:
        """Why this key cannot be pinned to a member, or None."""
        if self.secret:
            return "it contains a secret key; send only the public key"
        if self.revoked:
            return "the key is revoked"
        if self.expired:
            return "the key has expired"
        if not self.can_encrypt:
            return "the key has no usable encryption subkey"
        return None


@dataclass(frozen=True)
class Decrypted:
    """What `Keyring.decrypt` proved about a message."""

    content: bytes  # the literal data, exactly as gpg wrote it
    encrypted: bool  # it was encrypted and decrypted with integrity protection
    signature: Signature | None  # its one good signature, or None when it had none
    decrypted_with: str | None  # primary fingerprint of the key that opened it (DECRYPTION_KEY)


def _iso(timestamp: int | None) -> str | None:
    if not timestamp:
        return None
    return iso(timestamp)


_UNUSABLE = ("e", "r", "i", "d", "n")  # expired, revoked, invalid, disabled, not valid


def _usable_until(key: Listed) -> int | None:
    """When the key stops being usable for encryption: None for never.

    That is the earlier of the primary key's expiry and the latest expiry among its usable
    encryption subkeys -- a primary key that never expires is of no use once its only
    encryption subkey has expired.
    """
    subkeys = [sub.expires for sub in key.subkeys
               if "e" in sub.capabilities and sub.validity not in _UNUSABLE[:4]]
    latest = None if not subkeys or None in subkeys else max(s for s in subkeys if s)
    ends = [t for t in (key.expires, latest) if t is not None]
    return min(ends) if ends else None


def _key_info(key: Listed) -> KeyInfo:
    return KeyInfo(
        fingerprint=key.fingerprint,
        uids=key.uids,
        can_encrypt="E" in key.capabilities,
        can_sign="S" in key.capabilities,
        revoked=key.validity == "r",
        expired=key.validity == "e",
        expires=_iso(_usable_until(key)),
        secret=key.secret,
    )


def _check_user_id_text(text: str) -> None:
    """A line break in a user id would end gpg's parameter line or a header showing it."""
    if any(ch in text for ch in "\r\n\0"):
        raise KeyProblem("A list's name and address cannot hold line breaks.")


def check_fingerprint(text: str) -> str:
    fingerprint = text.replace(" ", "").upper()
    if not status.FPR.match(fingerprint):
        raise KeyProblem(f"'{text}' is not a full key fingerprint.")
    return fingerprint


def gnupg_version(binary: str = "gpg") -> tuple[int, ...]:
    if shutil.which(binary) is None:
        raise EnvironmentProblem("GnuPG is not installed; install it (Debian: apt-get install gnupg).")
    broken = EnvironmentProblem(f"'{binary}' does not run as GnuPG; install GnuPG 2.2.20 or newer.")
    with tempfile.TemporaryDirectory(prefix="listserv-gpgcheck-") as scratch:
        try:
            result = run(scratch, ["--with-colons", "--list-config", "version"], timeout=30)
        except (CryptoError, EnvironmentProblem):
            raise broken from None
    for line in result.output.split(b"\n"):
        if line.startswith(b"cfg:version:"):
            numbers = re.match(rb"(\d+)\.(\d+)\.(\d+)", line[len(b"cfg:version:"):])
            if numbers:
                return tuple(int(n) for n in numbers.groups())
    raise broken


def require_gnupg(binary: str = "gpg") -> None:
    version = gnupg_version(binary)
    if version < MIN_GNUPG:
        found = ".".join(map(str, version)) or "unknown"
        raise EnvironmentProblem(
            f"GnuPG {found} is too old; listserv needs GnuPG "
            f"{'.'.join(map(str, MIN_GNUPG))} or newer."
        )


class _Recipients:
    """gpg's listing of each member asked about (the encryption subkey gpg would use, or None
    when unusable) and the parsed key material. Kept while the keyring files are unchanged
    (Keyring.stamp: an import, removal or disabling) and until the earliest expiry or creation
    time in the future among the keys listed; then listed again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamp: object = None
        self.until: int | None = None
        self.chosen: dict[str, str | None] = {}
        self.keys = pkesk.KeyCache()


class _KeyIds:
    """The encryption key ids of each list key asked about, kept while the keyring files are
    unchanged (Keyring.stamp): every submission asks for its list's, and a list key does not
    change between two imports."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamp: object = None
        self.ids: dict[str, frozenset[str]] = {}


class _Minimal:
    """Each list key minimised to one of its addresses (`Keyring.minimal_key`), kept while the
    keyring files are unchanged (Keyring.stamp): every message the list sends carries one, and
    thousands of copies share it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamp: object = None
        self.keys: dict[tuple[str, str], bytes] = {}


# What may stand in a gpg filter expression's value: an address with no space, quote or
# operator character (`&&`, `||`) that would end the value and start another condition.
_FILTER_ADDRESS = re.compile(r"[^\s\"'&|<>()!=~]+@[^\s\"'&|<>()!=~]+")


class Keyring:
    def __init__(self, home: Path, *extra: str):
        self.home = home
        self.options = [*GPG_OPTIONS, *extra]
        self._recipients = _Recipients()  # one Keyring per home and process (listserv.context)
        self._key_ids = _KeyIds()
        self._minimal = _Minimal()

    @classmethod
    def made(cls, home: Path, *extra: str) -> "Keyring":
        """A keyring whose home folder is made (mode 0700) when it is not there yet: a home's
        second keyring, the contacts' (listserv.contacts)."""
        home.mkdir(mode=0o700, exist_ok=True)
        return cls(home, *extra)

    def _run(self, what: str, args: list[str], stdin: bytes = b"", **kwargs) -> tuple[Run, tuple[status.Line, ...]]:
        """One gpg run and its parsed status; CryptoError naming `what` if it cannot be read."""
        try:
            result = run(self.home, [*self.options, *args], stdin, **kwargs)
            return result, status.parse(result.status)
        except (GpgTimeout, OutputTooLarge, StatusError):
            raise
        except CryptoError as exc:
            raise CryptoError(f"GnuPG could not {what} ({exc}).") from None

    def stop_agent(self) -> None:
        """Stop the gpg-agent that gpg starts for this keyring (key generation, signing and
        decryption need one) and leaves running; gpg starts it again when it needs it."""
        gpgconf = shutil.which("gpgconf")
        if gpgconf is None:
            return
        try:
            subprocess.run([gpgconf, "--homedir", str(self.home), "--kill", "gpg-agent"],
                           capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass  # a stray agent costs memory, not correctness

    # -- list keys -----------------------------------------------------------
    def generate_list_key(self, address: str, name: str) -> str:
        """Ed25519 primary (sign, certify) + Curve25519 encryption subkey, no passphrase, no
        expiry, and one user id, `name <address>`; `add_user_ids` gives it the others."""
        _check_user_id_text(f"{address}{name}")
        parameters = "\n".join([
            "Key-Type: EDDSA", "Key-Curve: ed25519", "Key-Usage: sign",
            "Subkey-Type: ECDH", "Subkey-Curve: cv25519", "Subkey-Usage: encrypt",
            f"Name-Real: {name}", f"Name-Email: {address}", "Expire-Date: 0",
            "%no-protection", "%commit", "",
        ])
        result, lines = self._run("generate the list's key", ["--gen-key"], parameters.encode("utf-8"))
        created = [line[1] for line in lines if line.keyword == "KEY_CREATED"]
        if result.returncode != 0 or len(created) != 1:
            raise CryptoError("GnuPG could not generate the list's key.")
        return created[0]

    def add_user_ids(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Give each list key (fingerprint -> its user ids, the primary one first) the user ids
        whose address it has none for yet, keeping the first one primary; what was added, by key.

        Idempotent, and a single key listing when nothing is missing, so the server can run it
        at every start. A user id counts as there when any user id of the key has its address,
        revoked or not: one an admin revoked stays revoked. A key not in the keyring is skipped
        (its list is being deleted)."""
        if not wanted:
            return {}
        added: dict[str, list[str]] = {}
        for key in self.listed(list(wanted)):
            uids = wanted.get(key.fingerprint)
            if not uids:
                continue
            have = {split_user_id(uid)[1].lower(): uid for uid in key.uids}
            missing = [uid for uid in uids if split_user_id(uid)[1].lower() not in have]
            if missing:
                primary = have.get(split_user_id(uids[0])[1].lower(), uids[0])
                self._add_user_ids(key.fingerprint, missing, primary)
                added[key.fingerprint] = missing
        return added

    def _add_user_ids(self, fingerprint: str, uids: list[str], primary: str) -> None:
        """Certify `uids` on the key `fingerprint` (its secret key has no passphrase), then mark
        `primary` primary again: with no primary flag, gpg and others take the user id with the
        newest self-signature -- the last one added -- for the key's name."""
        fingerprint = check_fingerprint(fingerprint)
        for uid in uids:
            _check_user_id_text(uid)
        for uid in uids:
            result, _ = self._run("add a user id", ["--quick-add-uid", "--", fingerprint, uid])
            if result.returncode != 0:
                raise CryptoError(f"GnuPG could not add the user id {uid} to the key {fingerprint}.")
        result, _ = self._run("mark a user id primary", ["--quick-set-primary-uid", "--", fingerprint, primary])
        if result.returncode != 0:
            raise CryptoError(f"GnuPG could not make {primary} the primary user id of the key {fingerprint}.")

    # -- inspecting and importing member keys --------------------------------
    def stage(self, data: bytes, limit: int = MAX_KEY_BYTES, known: tuple[str, ...] = ()) -> "StagedKeys":
        """Import `data` into a scratch keyring (self-signatures only) and describe each key.

        The keys `known` (fingerprints in this keyring) are copied into the scratch keyring
        first: a bare revocation certificate applies only to a key already there, and a key
        sent again is then judged as the keyring would hold it after adoption (a revocation
        taken in earlier stays). They are described only when the data names them (a copy of
        the key, or a revocation certificate for it)."""
        if len(data) > limit:
            raise KeyProblem(f"The key data is larger than {limit // 1024} KiB.")
        if not data.strip():
            raise KeyProblem("The key data is empty.")
        return StagedKeys(self, data, known)

    def listed(self, fingerprints: list[str] | None = None, secret: bool = False) -> list[Listed]:
        """gpg's listing of the keys `fingerprints` (all keys when None) in this keyring."""
        args = [*_LIST, "--list-secret-keys" if secret else "--list-keys", "--", *(fingerprints or [])]
        result, lines = self._run("list keys", args)
        if result.returncode != 0:
            # gpg exits 2 when not one of the keys asked for is in the keyring ("No public key").
            errors = [line.args for line in lines if line.keyword == "ERROR"]
            if not fingerprints or not errors or any(e[:2] != ("keylist.getkey", "9") for e in errors):
                raise CryptoError(f"GnuPG could not list the keys (exit {result.returncode}).")
        return listing.parse(result.output)

    def key_infos(self, fingerprints: list[str]) -> dict[str, KeyInfo]:
        """What the keyring holds now of each key `fingerprints` names (a key not in the
        keyring is left out): read afresh each time, since an update may have changed it."""
        if not fingerprints:
            return {}
        return {key.fingerprint: _key_info(key) for key in self.listed(sorted(set(fingerprints)))}

    def export(self, fingerprint: str) -> str:
        armored = self._export([fingerprint], armor=True)
        if b"BEGIN PGP PUBLIC KEY BLOCK" not in armored:
            raise KeyProblem(f"The key {fingerprint} is not in the keyring.")
        return armored.decode("ascii")

    def export_public(self, fingerprints: list[str]) -> bytes:
        """The public certificates of `fingerprints`, binary, in one gpg call."""
        return self._export(fingerprints, armor=False)

    def _export(self, fingerprints: list[str], armor: bool) -> bytes:
        args = [*(["--armor"] if armor else []), "--export-options", "export-minimal", "--export",
                "--", *fingerprints]
        result, _ = self._run("export keys", args)
        return result.output

    def export_user_id(self, fingerprint: str, address: str) -> bytes | None:
        """What a Web Key Directory serves for `address` (listserv.wkd): `minimal_key`, or None
        when the key holds no valid user id of that address (or cannot encrypt). KeyProblem when
        the key is not in the keyring."""
        if not self.listed([check_fingerprint(fingerprint)]):
            raise KeyProblem(f"The key {fingerprint} is not in the keyring.")
        try:
            return self.minimal_key(fingerprint, address)
        except KeyProblem:
            return None

    def minimal_key(self, fingerprint: str, address: str) -> bytes:
        """The key `fingerprint`, binary, with only what a client needs to encrypt to `address`:
        the primary key, the one user id whose address is `address` (not revoked) and its
        latest self-signature, the subkeys and their bindings; no third-party signature
        (export-minimal). What an Autocrypt header's keydata carries (listserv.autocrypt), and
        a Web Key Directory's file. KeyProblem when the key holds no such user id, or cannot
        encrypt. Two gpg runs the first time, none again until the keyring changes."""
        fingerprint = check_fingerprint(fingerprint)
        if not _FILTER_ADDRESS.fullmatch(address):
            raise KeyProblem(f"'{address}' cannot name a user id of a list's key.")
        wanted = (fingerprint, address.lower())
        cache = self._minimal
        with cache.lock:
            stamp = self.stamp()
            if stamp != cache.stamp:
                cache.stamp, cache.keys = stamp, {}
            if wanted not in cache.keys:
                cache.keys[wanted] = self._minimise(*wanted)
            return cache.keys[wanted]

    def _minimise(self, fingerprint: str, address: str) -> bytes:
        args = ["--export-options", "export-minimal",
                "--export-filter", f"keep-uid=mbox = {address} && revoked == 0", "--export", "--", fingerprint]
        result, _ = self._run("export the list's key", args)
        shown, _ = self._run("read the list's key", [*_LIST, "--import-options", "show-only", "--import"],
                             result.output) if result.output else (result, ())
        keys = listing.parse(shown.output) if result.output else []
        if [key.fingerprint for key in keys] != [fingerprint]:
            raise KeyProblem(f"The key {fingerprint} is not in the keyring.")
        if [split_user_id(uid)[1].lower() for uid in keys[0].uids] != [address]:
            raise KeyProblem(f"The key {fingerprint} has no user id for {address}.")
        if "E" not in keys[0].capabilities:
            raise KeyProblem(f"The key {fingerprint} cannot be encrypted to.")
        return result.output

    def import_keys(self, data: bytes) -> list[str]:
        """Import `data` (self-signatures only); the fingerprints gpg reports it took in."""
        result, lines = self._run("import keys", [*IMPORT_FILTER, "--import"], data)
        return list(dict.fromkeys(line[1] for line in lines
                                  if line.keyword == "IMPORT_OK" and len(line.args) > 1))

    def delete(self, fingerprint: str) -> None:
        result, _ = self._run("remove a key", ["--yes", "--delete-keys", "--", check_fingerprint(fingerprint)])
        if result.returncode != 0:
            raise CryptoError(f"The key {fingerprint} could not be removed from the keyring.")

    def forget(self, fingerprint: str) -> None:
        """Remove a key no member pins any more -- unless it is revoked: that one stays, for its
        revocation is what keeps an old copy sent again from being pinned."""
        if any(key.validity == "r" for key in self.listed([fingerprint])):
            return
        self.delete(fingerprint)

    def delete_secret(self, fingerprint: str) -> None:
        """Destroy a list key: secret and public part."""
        result, _ = self._run("remove a secret key", ["--yes", "--delete-secret-and-public-key", "--",
                                                      check_fingerprint(fingerprint)])
        if result.returncode != 0:
            raise CryptoError(f"The secret key {fingerprint} could not be removed.")

    # -- sealing data at rest to a list's own key ---------------------------
    def seal(self, fingerprint: str, data: bytes) -> bytes:
        """Encrypt `data` to one key (a list's own), binary, for storage at rest."""
        args = ["--cipher-algo", "AES256", "--compress-algo", "none", "--no-encrypt-to",
                "--encrypt", "--recipient", check_fingerprint(fingerprint)]
        result, lines = self._run("encrypt", args, data)
        if result.returncode != 0 or not result.output or not any(l.keyword == "END_ENCRYPTION" for l in lines):
            raise CryptoError(f"GnuPG could not encrypt to {fingerprint} (exit {result.returncode}).")
        return result.output

    def unseal(self, data: bytes) -> bytes:
        """Decrypt what `seal` wrote (requires the list's secret key in this keyring)."""
        decrypted = self._decrypt_own(data, [], "decrypt sealed data")
        return decrypted.output

    def _decrypt_own(self, data: bytes, args: list[str], what: str) -> Run:
        """Decrypt a message listserv itself encrypted; CryptoError unless all went well."""
        try:
            result, lines = self._run(what, [*args, "--decrypt"], data)
            judged = status.judge(lines, result.returncode)
        except (CryptoError, Unauthorized, TooLarge) as exc:
            raise CryptoError(f"GnuPG could not {what} ({getattr(exc, 'reason', exc)}).") from None
        if not judged.encrypted:
            raise CryptoError(f"GnuPG could not {what} (not encrypted).")
        return result

    # -- gpg runs for the stages (open, fan-out) -------------------------------
    def decrypt(self, data: bytes, *, max_output: int, allow_expired: bool = False,
                timeout: float | None = None, session_key: str | None = None) -> Decrypted:
        """Decrypt and/or verify the OpenPGP message `data` (binary or armored).

        Returns what gpg proved, or raises Unauthorized (or TooLarge) naming the first
        problem: see status.judge. At most `max_output` bytes of plaintext are written. With
        `session_key` ("ALGO:HEX", from `session_key_of` in another keyring) no secret key is
        needed: the signature is then judged by the keys of this keyring."""
        given = ["--override-session-key-fd", "SIDE_FD"] if session_key else []
        args = [*given, "--max-output", str(max_output), "--decrypt"]
        result = None
        try:
            result = run(self.home, [*self.options, *args], data, max_output=max_output + _SLACK,
                         timeout=timeout or VERIFY_TIMEOUT,
                         side=session_key.encode("ascii") + b"\n" if session_key else None)
            lines = status.parse(result.status)
            # gpg --max-output stops writing near the limit and fails, often without a word
            # in the status about why.
            truncated = result.returncode != 0 and len(result.output) > max_output - _SLACK
            judged = status.judge(lines, result.returncode, allow_expired=allow_expired, max_output=max_output,
                                  truncated=truncated)
        except OutputTooLarge:
            raise TooLarge("plaintext-too-large") from None
        except StatusError:
            failed = result is not None and status.decryption_failed(result.status)
            raise Unauthorized("not-decryptable" if failed else "gpg-status") from None
        if judged.literal_length is not None and judged.literal_length != len(result.output):
            raise Unauthorized("not-decryptable")  # gpg wrote something other than the literal
        return Decrypted(result.output, judged.encrypted, judged.signature, judged.decrypted_with)

    def peek(self, data: bytes, *, max_output: int) -> bytes:
        """The plaintext of a message encrypted to a key here, its signature NOT judged: only
        to find the key a request to join carries (listserv.stages.join), which then judges
        the same message again, by that key alone. Unauthorized unless gpg decrypted it whole."""
        try:
            result, lines = self._run("decrypt", ["--max-output", str(max_output), "--decrypt"], data,
                                      max_output=max_output + _SLACK, timeout=VERIFY_TIMEOUT)
        except (OutputTooLarge, StatusError, CryptoError):
            raise Unauthorized("not-decryptable") from None
        if not any(line.keyword == "DECRYPTION_OKAY" for line in lines):
            raise Unauthorized("not-decryptable")
        return result.output

    def session_key_of(self, data: bytes, *, max_output: int) -> tuple[str, str | None]:
        """The session key of the message `data` as gpg gives it ("ALGO:HEX") and the primary
        fingerprint of the key that opened it: for judging its signature by the keys of another
        keyring (`decrypt`'s `session_key`). Its own signature may be by an expired key, or one
        not here; the decryption must be sound. Kept in memory only."""
        try:
            result, lines = self._run("decrypt", ["--show-session-key", "--max-output", str(max_output), "--decrypt"],
                                      data, max_output=max_output + _SLACK, timeout=VERIFY_TIMEOUT)
            judged = status.judge(lines, result.returncode, allow_expired=True, max_output=max_output)
            encrypted, opened_by = judged.encrypted, judged.decrypted_with
        except Unauthorized as refusal:
            if refusal.reason != "unknown-key":
                raise
            # Signed by a key this keyring does not hold (an invitee's, listserv.stages.join):
            # the other keyring judges it; here only the decryption must be sound.
            primaries = {line[1] for line in lines if line.keyword == "DECRYPTION_KEY" and len(line.args) > 1}
            encrypted = any(line.keyword == "DECRYPTION_OKAY" for line in lines) and len(primaries) == 1
            opened_by = primaries.pop() if len(primaries) == 1 else None
        except (OutputTooLarge, StatusError):
            raise Unauthorized("not-decryptable") from None
        keys = [line[0] for line in lines if line.keyword == "SESSION_KEY"]
        if not encrypted or len(keys) != 1 or not re.fullmatch(r"[0-9]+:[0-9A-Fa-f]+", keys[0]):
            raise Unauthorized("not-decryptable")
        return keys[0], opened_by

    def verify_detached(self, signature: bytes, data: bytes, *, allow_expired: bool = False,
                        timeout: float | None = None) -> Signature:
        """The one good signature `signature` makes over `data`, or Unauthorized."""
        try:
            result, lines = self._run("verify", ["--verify", "--", "-&SIDE", "-"], data, side=signature,
                                      max_output=0, timeout=timeout or VERIFY_TIMEOUT)
            judged = status.judge(lines, result.returncode, detached=True, allow_expired=allow_expired)
        except StatusError:
            raise Unauthorized("gpg-status") from None
        except OutputTooLarge:
            raise Unauthorized("bad-signature") from None
        if judged.encrypted or judged.signature is None:
            raise Unauthorized("bad-signature" if judged.encrypted else "no-signature")
        return judged.signature

    def sign_and_encrypt(self, data: bytes, recipients: list[str], signer: str,
                         options: list[str]) -> tuple[bytes, list[str]]:
        """Sign `data` with exactly the key `signer` and encrypt it to `recipients` in one gpg
        call, binary: (output, the fingerprints of the keys that signed). CryptoError unless gpg
        reports success."""
        # --local-user FPR! names exactly that primary key: gpg would otherwise silently sign
        # with another secret key when that one has none.
        args = [*options, "--local-user", f"{signer}!", "--sign", "--encrypt",
                *[arg for fingerprint in recipients for arg in ("--recipient", fingerprint)]]
        result, lines = self._run("sign and encrypt", args, data)
        if result.returncode != 0 or not any(line.keyword == "END_ENCRYPTION" for line in lines):
            raise CryptoError(f"GnuPG failed to sign and encrypt (exit {result.returncode}).")
        return result.output, [line[5] for line in lines if line.keyword == "SIG_CREATED"]

    def sign_detached(self, data: bytes, signer: str) -> bytes:
        """An armored detached signature of `data` by exactly the key `signer`, with SHA-512
        (RFC 3156 §5: the caller names it micalg=pgp-sha512). CryptoError unless gpg signed."""
        args = ["--local-user", f"{signer}!", "--digest-algo", "SHA512", "--armor", "--detach-sign"]
        result, lines = self._run("sign", args, data)
        if result.returncode != 0 or not any(line.keyword == "SIG_CREATED" for line in lines):
            raise CryptoError(f"GnuPG failed to sign (exit {result.returncode}).")
        return result.output

    # -- the group's own voice (keyring.statement, docs/verify.md) ----------------
    def clearsign_statement(self, signer: str, text: bytes, list_address: str) -> bytes:
        """`text` (normalised: statement.normalise) cleartext-signed by exactly the key `signer`
        with SHA-512 and the statement notation of `list_address`, armored. UsageError for text
        that cannot be a statement, CryptoError unless gpg signed."""
        return self._sign_statement(signer, statement.normalise(text), list_address, clear=True)

    def sign_statement_detached(self, signer: str, data: bytes, list_address: str) -> bytes:
        """A binary detached signature (an attachment's NAME.sig) of `data`, exactly as given,
        by exactly the key `signer` with SHA-512 and the statement notation of `list_address`."""
        return self._sign_statement(signer, data, list_address, clear=False)

    def _sign_statement(self, signer: str, data: bytes, list_address: str, *, clear: bool) -> bytes:
        signer = check_fingerprint(signer)
        # Said here rather than left to gpg's defaults or a gpg.conf: a statement never
        # expires, From lines are escaped (mail software rewrites "From " to ">From "), a
        # detached signature is binary and over the bytes as they are (class 00, not text).
        form = ["--escape-from-lines", "--clearsign"] if clear else ["--no-armor", "--no-textmode", "--detach-sign"]
        args = ["--local-user", f"{signer}!", "--digest-algo", "SHA512", "--default-sig-expire", "0",
                "--no-ask-sig-expire", "--sig-notation", statement.notation(list_address), *form]
        result, lines = self._run("sign a statement", args, data)
        made = [line for line in lines if line.keyword == "SIG_CREATED"]
        if result.returncode != 0 or len(made) != 1 or made[0][5] != signer or not result.output:
            raise CryptoError(f"GnuPG failed to sign a statement (exit {result.returncode}).")
        return result.output

    def encryption_keys(self, fingerprints: list[str]) -> dict[str, dict[str, str]]:
        """The keys among `fingerprints` that can encrypt now, each with the ids of its
        encryption keys (key id -> primary fingerprint).

        Field 12 of the `pub` line holds an upper-case E only when the key can encrypt now
        (not expired, not revoked, not disabled, with a valid encryption subkey).
        """
        wanted = set(fingerprints)
        usable: dict[str, dict[str, str]] = {}
        for key in self.listed(fingerprints):
            if key.fingerprint not in wanted or "E" not in key.capabilities or "D" in key.capabilities:
                continue
            ids = {sub.keyid: key.fingerprint for sub in key.subkeys if "e" in sub.capabilities}
            if "e" in key.capabilities:  # the primary key itself may encrypt (RSA keys from some tools)
                ids[key.keyid] = key.fingerprint
            usable[key.fingerprint] = ids
        return usable

    def encryption_subkeys(self, fingerprints: list[str]) -> tuple[dict[str, str], int | None]:
        """The keys among `fingerprints` that can encrypt now, each with the fingerprint of the
        (sub)key gpg itself would encrypt to: of the valid encryption subkeys (not expired, not
        revoked) the most recently created one -- the first of them on a tie, as gpg walks the
        key block -- else the primary key if it may encrypt. Read from gpg's listing.

        Also returns when this answer may next change by itself (the earliest expiry or
        creation time in the future of any listed key or subkey, Unix seconds), or None."""
        wanted = set(fingerprints)
        chosen: dict[str, str] = {}
        now, changes = time.time(), []
        for key in self.listed(fingerprints):
            if key.fingerprint not in wanted:
                continue
            for item in (key, *key.subkeys):
                changes += [item.created, item.expires or 0]
            if "E" not in key.capabilities or "D" in key.capabilities:
                continue
            best, newest = None, -1
            for sub in key.subkeys:
                if "e" not in sub.capabilities or sub.validity in _UNUSABLE[:4] or not sub.fingerprint:
                    continue
                if sub.created > newest:
                    best, newest = sub.fingerprint, sub.created
            if best is None and "e" in key.capabilities:  # the primary key itself may encrypt
                best = key.fingerprint
            if best is not None:
                chosen[key.fingerprint] = best.upper()
        return chosen, min((t for t in changes if t > now), default=None)

    def encryption_ids(self, fingerprint: str) -> frozenset[str]:
        """The key ids (16 hex digits) of every encryption key of `fingerprint` -- its
        encryption subkeys, expired or not, and the primary key if it may encrypt: what a key
        packet names when a message is encrypted to it. Empty for a key not in the keyring."""
        cache = self._key_ids
        with cache.lock:
            stamp = self.stamp()
            if stamp != cache.stamp:
                cache.stamp, cache.ids = stamp, {}
            if fingerprint not in cache.ids:
                ids = set()
                for key in self.listed([fingerprint]):
                    if key.fingerprint == fingerprint:
                        ids |= {sub.keyid.upper() for sub in key.subkeys if "e" in sub.capabilities}
                        ids |= {key.keyid.upper()} if "e" in key.capabilities else set()
                cache.ids[fingerprint] = frozenset(ids)
            return cache.ids[fingerprint]

    def stamp(self) -> tuple[tuple[str, int, int], ...]:
        """What changes whenever a key is imported, removed or disabled: the public keyring
        files' and the trust database's modification times and sizes (for caches)."""
        found = []
        for name in ("pubring.kbx", "pubring.gpg", "trustdb.gpg"):  # trustdb: disabled keys
            try:
                info = (self.home / name).stat()
            except FileNotFoundError:
                continue
            found.append((name, info.st_mtime_ns, info.st_size))
        return tuple(found)

    def recipient_keys(self, wanted: list[str]) -> dict[str, pkesk.RecipientKey | None]:
        """The usable members among `wanted`, in order, each with the material of the encryption
        key gpg would choose, or None when listserv.pkesk cannot encrypt to it (gpg's path)."""
        # Usability and the choice of subkey are gpg's (its listing); only the material is parsed here.
        cache = self._recipients
        with cache.lock:
            stamp = self.stamp()
            if stamp != cache.stamp or (cache.until is not None and time.time() >= cache.until):
                cache.stamp, cache.until, cache.chosen = stamp, None, {}
            missing = [fingerprint for fingerprint in wanted if fingerprint not in cache.chosen]
            if missing:
                listed, until = self.encryption_subkeys(missing)
                cache.chosen.update((fingerprint, listed.get(fingerprint)) for fingerprint in missing)
                if until is not None:
                    cache.until = until if cache.until is None else min(cache.until, until)
            chosen = {fingerprint: cache.chosen[fingerprint] for fingerprint in wanted if cache.chosen[fingerprint]}
            owner: dict[str, str] = {}
            for fingerprint, subkey in chosen.items():
                if owner.setdefault(subkey, fingerprint) != fingerprint:
                    raise CryptoError(
                        f"The keys {owner[subkey]} and {fingerprint} share the encryption key {subkey}."
                    )
            return cache.keys.lookup(stamp, chosen, self.export_public)

    def session_key(self, data: bytes, plaintext: bytes) -> tuple[int, bytes]:
        """The session key of `data`, a message this keyring's secret key can decrypt
        (the list's own copy of a post): (symmetric algorithm id, key). gpg decrypts it in
        memory and must give back exactly `plaintext`; nothing is written to disk."""
        try:
            result, lines = self._run("decrypt the list's own copy", ["--show-session-key", "--decrypt"], data)
            judged = status.judge(lines, result.returncode)
        except (CryptoError, Unauthorized, TooLarge):
            raise CryptoError("GnuPG could not decrypt the list's own copy.") from None
        if not judged.encrypted or result.output != plaintext:
            raise CryptoError("GnuPG could not decrypt the list's own copy.")
        keys = [line[0] for line in lines if line.keyword == "SESSION_KEY"]
        if len(keys) != 1 or ":" not in keys[0]:
            raise CryptoError("GnuPG did not report one session key.")
        algorithm, _, hexkey = keys[0].partition(":")
        try:
            return int(algorithm), bytes.fromhex(hexkey)
        except ValueError:
            raise CryptoError("GnuPG reported a session key that cannot be read.") from None


class StagedKeys:
    """Keys imported into a scratch keyring, waiting to be adopted or thrown away."""

    def __init__(self, keyring: Keyring, data: bytes, known: tuple[str, ...] = ()):
        self.keyring = keyring
        self._scratch = Path(tempfile.mkdtemp(prefix="listserv-stage-"))
        self._scratch.chmod(0o700)
        try:
            # Public keys only: no gpg-agent is needed, and none is left behind for a folder
            # that is deleted a moment later.
            self.scratch = Keyring(self._scratch, "--no-autostart")
            shown, _ = self.scratch._run("read the key data", [*_LIST, "--import-options", "show-only", "--import"], data)
            if any(key.secret for key in listing.parse(shown.output)):
                raise KeyProblem("The data contains a secret key; send only the public key.")
            if known:
                self.scratch.import_keys(keyring.export_public(list(known)))
            # gpg exits 2 when it adds a revocation to a key already here (a known one) in a home
            # without a trust database, which it then fails to mark for a check; the key is
            # changed all the same, and the listing below is what counts.
            _, lines = self.scratch._run("import keys", [*IMPORT_FILTER, "--import"], data)
            # IMPORT_OK names each key read (new, changed or unchanged); a bare revocation
            # certificate has none, only KEY_CONSIDERED for the key it applies to.
            named = {line[1] for line in lines if line.keyword == "IMPORT_OK" and len(line.args) > 1}
            # IMPORT_OK's first field is what the import added (0: nothing, the key was
            # here as it is); for a known key, a nonzero one means the data is newer.
            self.changed = frozenset(line[1] for line in lines if line.keyword == "IMPORT_OK"
                                     and len(line.args) > 1 and line[0] != "0")
            named |= {line[0] for line in lines if line.keyword == "KEY_CONSIDERED"}
            self.keys = [_key_info(key) for key in self.scratch.listed()
                         if key.fingerprint not in known or key.fingerprint in named]
            if not self.keys:
                raise KeyProblem("The data holds no OpenPGP public key that GnuPG can read.")
        except BaseException:
            self.close()
            raise

    def adopt(self, fingerprints: list[str]) -> None:
        """Copy the named keys (self-signatures only) into the real keyring."""
        if not fingerprints:
            return
        exported = self.scratch.export_public(fingerprints)
        imported = set(self.keyring.import_keys(exported))
        missing = [f for f in fingerprints if f not in imported]
        if missing:
            raise CryptoError(f"GnuPG did not import {len(missing)} key(s) into the keyring.")

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> "StagedKeys":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
