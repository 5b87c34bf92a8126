"""The deployment's keyring: list keys and members' pinned public keys (python-gnupg).

gpg always runs with the home's keys/ passed explicitly, never through os.environ, with
automatic key retrieval and import off and dirmngr disabled, so gpg never reaches the network.
Keys are always named by full fingerprint, never looked up by an email address.

A key offered for a member is first imported into a scratch keyring (keeping self-signatures
only, against certificate flooding) and inspected there; only keys that pass are copied into
the real keyring, so a refused key leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import gnupg

from .errors import CryptoError, EnvironmentProblem, KeyProblem

# 2.2.8 fixed the SigSpoof status-line injection (CVE-2018-12020); 2.2.17 added the import
# option self-sigs-only and 2.2.20 the option --auto-key-import that GPG_OPTIONS switches off.
# Older gpg stops at the unknown option, so 2.2.20 is what this module really needs.
MIN_GNUPG = (2, 2, 20)
MAX_KEY_BYTES = 512 * 1024  # one member key; photo ids beyond this are refused
MAX_KEYRING_BYTES = 256 * 1024 * 1024  # `member import` of a whole keyring file

GPG_OPTIONS = [
    "--no-auto-key-retrieve",
    "--no-auto-key-import",
    "--disable-dirmngr",
    "--no-greeting",
    "--trust-model", "always",  # membership is decided by pinned fingerprints, not the web of trust
    "--no-emit-version",
    "--no-comments",
]
IMPORT_FILTER = ["--import-options", "import-clean,self-sigs-only"]

_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$|^[0-9A-F]{64}$")


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


def _iso(timestamp: str) -> str | None:
    if not timestamp:
        return None
    return datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utf8(text: str) -> str:
    # python-gnupg decodes gpg's output as Latin-1 (lossless, never fails); gpg writes user
    # ids in UTF-8, so turn them back into the text the key's owner typed.
    return text.encode("latin-1", "replace").decode("utf-8", "replace")


def _usable_until(entry: dict) -> str:
    """When the key stops being usable for encryption: "" for never.

    That is the earlier of the primary key's expiry and the latest expiry among its usable
    encryption subkeys -- a primary key that never expires is of no use once its only
    encryption subkey has expired.
    """
    primary = int(entry.get("expires") or 0) or None
    subkeys = [
        int(sub.get("expires") or 0) or None
        for sub in (entry.get("subkey_info") or {}).values()
        if "e" in sub.get("cap", "") and sub.get("trust") not in ("e", "r", "i", "d")
    ]
    latest = None if not subkeys or None in subkeys else max(subkeys)
    ends = [t for t in (primary, latest) if t is not None]
    return str(min(ends)) if ends else ""


def _key_info(entry: dict) -> KeyInfo:
    capabilities = entry.get("cap", "")
    return KeyInfo(
        fingerprint=entry["fingerprint"],
        uids=tuple(_utf8(uid) for uid in entry.get("uids", [])),
        can_encrypt="E" in capabilities,
        can_sign="S" in capabilities,
        revoked=entry.get("trust") == "r",
        expired=entry.get("trust") == "e",
        expires=_iso(_usable_until(entry)),
        secret=entry.get("type") == "sec",
    )


def check_fingerprint(text: str) -> str:
    fingerprint = text.replace(" ", "").upper()
    if not _FINGERPRINT.match(fingerprint):
        raise KeyProblem(f"'{text}' is not a full key fingerprint.")
    return fingerprint


def gnupg_version(binary: str = "gpg") -> tuple[int, ...]:
    if shutil.which(binary) is None:
        raise EnvironmentProblem("GnuPG is not installed; install it (Debian: apt-get install gnupg).")
    with tempfile.TemporaryDirectory(prefix="listserv-gpgcheck-") as scratch:
        try:
            version = gnupg.GPG(gpgbinary=binary, gnupghome=scratch).version
        except (OSError, ValueError):
            raise EnvironmentProblem(
                f"'{binary}' does not run as GnuPG; install GnuPG 2.2.20 or newer."
            ) from None
    return tuple(version or ())


def require_gnupg(binary: str = "gpg") -> None:
    version = gnupg_version(binary)
    if version < MIN_GNUPG:
        found = ".".join(map(str, version)) or "unknown"
        raise EnvironmentProblem(
            f"GnuPG {found} is too old; listserv needs GnuPG "
            f"{'.'.join(map(str, MIN_GNUPG))} or newer."
        )


def _open(home: Path, *extra: str) -> gnupg.GPG:
    try:
        return gnupg.GPG(gnupghome=str(home), options=[*GPG_OPTIONS, *extra])
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"GnuPG cannot be started ({exc}).") from None


class Keyring:
    def __init__(self, home: Path):
        self.home = home
        self.gpg = _open(home)

    # -- list keys -----------------------------------------------------------
    def generate_list_key(self, address: str, name: str) -> str:
        """Ed25519 primary (sign, certify) + Curve25519 encryption subkey, no passphrase, no expiry."""
        params = self.gpg.gen_key_input(
            key_type="EDDSA", key_curve="ed25519", key_usage="sign",
            subkey_type="ECDH", subkey_curve="cv25519", subkey_usage="encrypt",
            name_real=name, name_email=address, expire_date=0, no_protection=True,
        )
        # Encoded here: python-gnupg would encode the parameters as Latin-1, but gpg reads
        # them as UTF-8 (a list called "Ünïon" would get a garbled user id).
        result = self.gpg.gen_key(params.encode("utf-8"))
        if not getattr(result, "fingerprint", None):
            raise CryptoError("GnuPG could not generate the list's key.")
        return str(result.fingerprint)

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

    def info(self, fingerprint: str) -> KeyInfo | None:
        keys = self.gpg.list_keys(keys=[fingerprint])
        for entry in keys:
            if entry["fingerprint"] == fingerprint:
                return _key_info(entry)
        return None

    def infos(self) -> dict[str, KeyInfo]:
        """Every public key in the keyring, by primary fingerprint (one gpg call)."""
        return {entry["fingerprint"]: _key_info(entry) for entry in self.gpg.list_keys()}

    def export(self, fingerprint: str) -> str:
        armored = self.gpg.export_keys([fingerprint], minimal=True)
        if not armored or "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
            raise KeyProblem(f"The key {fingerprint} is not in the keyring.")
        return armored

    def delete(self, fingerprint: str) -> None:
        result = self.gpg.delete_keys([fingerprint])
        if result.status != "ok":
            raise CryptoError(f"The key {fingerprint} could not be removed from the keyring.")

    def delete_secret(self, fingerprint: str) -> None:
        """Destroy a list key: secret and public part."""
        result = self.gpg.delete_keys([fingerprint], secret=True, expect_passphrase=False)
        if result.status != "ok":
            raise CryptoError(f"The secret key {fingerprint} could not be removed.")
        self.delete(fingerprint)

    # -- sealing data at rest to a list's own key ---------------------------
    def seal(self, fingerprint: str, data: bytes) -> bytes:
        """Encrypt `data` to one key (a list's own), binary, for storage at rest."""
        try:
            result = self.gpg.encrypt(data, [fingerprint], armor=False, always_trust=True,
                                      extra_args=["--cipher-algo", "AES256", "--compress-algo", "none"])
        except (OSError, ValueError) as exc:
            raise CryptoError(f"GnuPG could not encrypt ({type(exc).__name__}).") from None
        if not result.ok or not result.data:
            raise CryptoError(f"GnuPG could not encrypt to {fingerprint} ({result.status}).")
        return bytes(result.data)

    def unseal(self, data: bytes) -> bytes:
        """Decrypt what `seal` wrote (requires the list's secret key in this keyring)."""
        try:
            result = self.gpg.decrypt(data)
        except (OSError, ValueError) as exc:
            raise CryptoError(f"GnuPG could not decrypt ({type(exc).__name__}).") from None
        if not result.ok or "[GNUPG:] DECRYPTION_OKAY" not in (result.stderr or ""):
            raise CryptoError(f"GnuPG could not decrypt sealed data ({result.status}).")
        return bytes(result.data)

    def has_secret(self, fingerprint: str) -> bool:
        return any(entry["fingerprint"] == fingerprint for entry in self.gpg.list_keys(secret=True))

    # -- gpg runs for the stages (open, fan-out) -------------------------------
    # These hand back gpg's own [GNUPG:] status lines for the caller to judge: python-gnupg's
    # summary (.valid, .status) calls a revoked key's signature valid and returns plaintext
    # without integrity protection. Whatever python-gnupg raises becomes a CryptoError here.

    def decrypt_raw(self, data: bytes, max_output: int) -> tuple[bytes, list[str], int]:
        """Decrypt `data` (verifying any signature inside), writing at most `max_output` bytes:
        (output, gpg's status lines, gpg's exit code), whatever gpg made of it."""
        args = ["--pinentry-mode", "error", "--max-output", str(max_output)]
        return self._raw("decrypt", lambda: self.gpg.decrypt(data, extra_args=args))

    def verify_detached(self, signature: bytes, data: bytes) -> tuple[list[str], int]:
        """Verify a detached `signature` over `data`: (gpg's status lines, gpg's exit code)."""
        def verify():
            with tempfile.TemporaryDirectory(prefix="listserv-sig-") as scratch:
                path = Path(scratch) / "signature.asc"
                path.write_bytes(signature)
                return self.gpg.verify_data(str(path), data)

        _, lines, returncode = self._raw("verify", verify)
        return lines, returncode

    def sign_and_encrypt(self, data: bytes, recipients: list[str], signer: str,
                         options: list[str]) -> tuple[bytes, list[str]]:
        """Sign `data` with exactly the key `signer` and encrypt it to `recipients` in one gpg
        call, binary: (output, gpg's status lines). CryptoError unless gpg reports success."""
        # --local-user FPR! (exactly that primary key), not python-gnupg's sign=FPR
        # (--default-key): gpg silently signs with another secret key when that one has none.
        try:
            result = self.gpg.encrypt(data, recipients, sign=True, always_trust=True, armor=False,
                                      extra_args=[*options, "--local-user", f"{signer}!"])
        except (OSError, ValueError) as exc:  # BrokenPipeError when gpg exits early
            raise CryptoError(f"GnuPG failed to sign and encrypt ({exc}).") from None
        if not (result.ok and result.status == "encryption ok" and result.returncode == 0):
            raise CryptoError(
                f"GnuPG failed to sign and encrypt ({result.status or 'no status'}, "
                f"exit {result.returncode})."
            )
        return bytes(result.data), _status_lines(result.stderr)

    def encryption_keys(self, fingerprints: list[str]) -> dict[str, dict[str, str]]:
        """The keys among `fingerprints` that can encrypt now, each with the ids of its
        encryption keys (key id -> primary fingerprint).

        Field 12 of the `pub` line holds an upper-case E only when the key can encrypt now
        (not expired, not revoked, not disabled, with a valid encryption subkey).
        """
        try:
            listing = self.gpg.list_keys(keys=fingerprints)
        except (OSError, ValueError) as exc:
            raise CryptoError(f"GnuPG could not list the members' keys ({exc}).") from None
        if listing.returncode != 0:
            raise CryptoError(f"GnuPG could not list the members' keys (exit {listing.returncode}).")
        wanted = set(fingerprints)
        usable: dict[str, dict[str, str]] = {}
        for entry in listing:
            fingerprint, capabilities = entry["fingerprint"], entry.get("cap", "")
            if fingerprint not in wanted or "E" not in capabilities or "D" in capabilities:
                continue
            ids = {keyid: fingerprint for keyid, cap, *_ in entry.get("subkeys", []) if "e" in cap}
            if "e" in capabilities:  # the primary key itself may encrypt (RSA keys from some tools)
                ids[entry["keyid"]] = fingerprint
            usable[fingerprint] = ids
        return usable

    def encryption_subkeys(self, fingerprints: list[str]) -> tuple[dict[str, str], int | None]:
        """The keys among `fingerprints` that can encrypt now, each with the fingerprint of the
        (sub)key gpg itself would encrypt to: of the valid encryption subkeys (not expired, not
        revoked) the most recently created one -- the first of them on a tie, as gpg walks the
        key block -- else the primary key if it may encrypt. Read from gpg's listing.

        Also returns when this answer may next change by itself (the earliest expiry or
        creation time in the future of any listed key or subkey, Unix seconds), or None."""
        try:
            listing = self.gpg.list_keys(keys=fingerprints)
        except (OSError, ValueError) as exc:
            raise CryptoError(f"GnuPG could not list the members' keys ({exc}).") from None
        if listing.returncode != 0:
            # gpg exits 2 when not one of the keys asked for is in the keyring ("No public key").
            errors = [line.split()[2:] for line in _status_lines(listing.stderr) if line.startswith("[GNUPG:] ERROR ")]
            if len(listing) or not errors or any(error != ["keylist.getkey", "9"] for error in errors):
                raise CryptoError(f"GnuPG could not list the members' keys (exit {listing.returncode}).")
        wanted = set(fingerprints)
        chosen: dict[str, str] = {}
        now, changes = time.time(), []
        for entry in listing:
            fingerprint, capabilities = entry["fingerprint"], entry.get("cap", "")
            if fingerprint not in wanted:
                continue
            info = entry.get("subkey_info") or {}
            for item in [entry, *info.values()]:
                changes += [int(item.get(field) or 0) for field in ("date", "expires")]
            if "E" not in capabilities or "D" in capabilities:
                continue
            best, newest = None, -1
            for keyid, cap, subkey, *_ in entry.get("subkeys", []):
                sub = info.get(keyid, {})
                if "e" not in (cap or "") or sub.get("trust") in ("e", "r", "i", "d") or not subkey:
                    continue
                created = int(sub.get("date") or 0)
                if created > newest:
                    best, newest = subkey, created
            if best is None and "e" in capabilities:  # the primary key itself may encrypt
                best = fingerprint
            if best is not None:
                chosen[fingerprint] = best.upper()
        return chosen, min((t for t in changes if t > now), default=None)

    def export_public(self, fingerprints: list[str]) -> bytes:
        """The public certificates of `fingerprints`, binary, in one gpg call."""
        try:
            data = self.gpg.export_keys(fingerprints, armor=False, minimal=True)
        except (OSError, ValueError) as exc:
            raise CryptoError(f"GnuPG could not export the members' keys ({exc}).") from None
        return bytes(data or b"")

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

    def session_key(self, data: bytes, plaintext: bytes) -> tuple[int, bytes]:
        """The session key of `data`, a message this keyring's secret key can decrypt
        (the list's own copy of a post): (symmetric algorithm id, key). gpg decrypts it in
        memory and must give back exactly `plaintext`; nothing is written to disk."""
        args = ["--pinentry-mode", "error", "--show-session-key"]
        output, lines, returncode = self._raw("decrypt", lambda: self.gpg.decrypt(data, extra_args=args))
        if returncode != 0 or not any(line.startswith("[GNUPG:] DECRYPTION_OKAY") for line in lines) or output != plaintext:
            raise CryptoError(f"GnuPG could not decrypt the list's own copy (exit {returncode}).")
        keys = [line.split()[2] for line in lines if line.startswith("[GNUPG:] SESSION_KEY ")]
        if len(keys) != 1 or ":" not in keys[0]:
            raise CryptoError("GnuPG did not report one session key.")
        algorithm, _, hexkey = keys[0].partition(":")
        try:
            return int(algorithm), bytes.fromhex(hexkey)
        except ValueError:
            raise CryptoError("GnuPG reported a session key that cannot be read.") from None

    def _raw(self, what: str, run) -> tuple[bytes, list[str], int]:
        try:
            result = run()
        except Exception as exc:  # BrokenPipeError when gpg stops reading early, OSError, ValueError
            raise CryptoError(f"GnuPG could not {what} ({type(exc).__name__}).") from None
        if result.stderr is None or result.returncode is None:
            raise CryptoError(f"GnuPG did not finish ({what}).")
        return bytes(getattr(result, "data", None) or b""), _status_lines(result.stderr), result.returncode


def _status_lines(stderr: str | None) -> list[str]:
    return [line for line in (stderr or "").splitlines() if line.startswith("[GNUPG:] ")]


class StagedKeys:
    """Keys imported into a scratch keyring, waiting to be adopted or thrown away."""

    def __init__(self, keyring: Keyring, data: bytes, known: tuple[str, ...] = ()):
        self.keyring = keyring
        self._scratch = Path(tempfile.mkdtemp(prefix="listserv-stage-"))
        self._scratch.chmod(0o700)
        try:
            # Public keys only: no gpg-agent is needed, and none is left behind for a folder
            # that is deleted a moment later.
            gpg = _open(self._scratch, "--no-autostart")
            secret = [e for e in gpg.scan_keys_mem(data) if e.get("type") == "sec"]
            if secret:
                raise KeyProblem("The data contains a secret key; send only the public key.")
            if known:
                copied = keyring.gpg.export_keys(list(known), armor=False, minimal=True)
                if copied:
                    gpg.import_keys(copied, extra_args=IMPORT_FILTER)
            # gpg exits 2 when it adds a revocation to a key already here (a known one) in a home
            # without a trust database, which it then fails to mark for a check; the key is
            # changed all the same, and the listing below is what counts.
            result = gpg.import_keys(data, extra_args=IMPORT_FILTER)
            # IMPORT_OK names each key read (new, changed or unchanged); a bare revocation
            # certificate has none, only KEY_CONSIDERED for the key it applies to.
            named = set(result.fingerprints) | {
                line.split()[2] for line in _status_lines(result.stderr)
                if line.startswith("[GNUPG:] KEY_CONSIDERED ")
            }
            self.keys = [_key_info(entry) for entry in gpg.list_keys()
                         if entry["fingerprint"] not in known or entry["fingerprint"] in named]
            if not self.keys:
                raise KeyProblem("The data holds no OpenPGP public key that GnuPG can read.")
            self.gpg = gpg
        except BaseException:
            self.close()
            raise

    def adopt(self, fingerprints: list[str]) -> None:
        """Copy the named keys (self-signatures only) into the real keyring."""
        if not fingerprints:
            return
        exported = self.gpg.export_keys(fingerprints, armor=False, minimal=True)
        result = self.keyring.gpg.import_keys(exported, extra_args=IMPORT_FILTER)
        imported = set(result.fingerprints)
        missing = [f for f in fingerprints if f not in imported]
        if missing:
            raise CryptoError(f"GnuPG did not import {len(missing)} key(s) into the keyring.")

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> "StagedKeys":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
