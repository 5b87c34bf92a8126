"""Throwaway OpenPGP identities made by real implementations: GnuPG, Sequoia `sq` and RNP.

Each `User` owns a private keyring directory and can export its public key; tests make them
at run time, so no secret is ever committed. Every key a test needs is made here, and gpg's
colon listings are read here (`keys_in`, `fingerprints`).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

GPG_BATCH = ["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]


def run(args: list[str], input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=input, capture_output=True, check=check)


@dataclass(frozen=True)
class User:
    """A member's own client: `tool` is 'gpg', 'sq' or 'rnp'; `home` its private key store."""

    tool: str
    name: str
    email: str
    home: Path
    fingerprint: str
    public_key: bytes  # armored certificate
    secret_file: Path | None = None  # sq keeps its key in a file

    @property
    def uid(self) -> str:
        return f"{self.name} <{self.email}>"

    def gpg(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return run([*GPG_BATCH, "--homedir", str(self.home), *args], input=input, check=check)


def keys_in(listing: str | bytes) -> list[tuple[list[str], str]]:
    """gpg's `--with-colons` listing as (key record's fields, fingerprint) pairs, in order: each
    pub/sub/sec/ssb record with the `fpr:` record that follows it. The one place tests read it."""
    text = listing.decode() if isinstance(listing, bytes) else listing
    rows = [line.split(":") for line in text.splitlines()]
    return [(row, following[9]) for row, following in zip(rows, rows[1:])
            if row[0] in ("pub", "sub", "sec", "ssb") and following[0] == "fpr"]


def user_ids(listing: str | bytes) -> list[tuple[str, str]]:
    """(validity, user id) of every `uid:` record in a colon listing, in order ("r": revoked)."""
    text = listing.decode() if isinstance(listing, bytes) else listing
    return [(row[1], row[9]) for row in (line.split(":") for line in text.splitlines()) if row[0] == "uid"]


def primary_user_ids(certificate: bytes) -> list[str]:
    """The user ids of `certificate` whose self-signature carries the primary flag, as
    `gpg --list-packets` reads the packets (not what any keyring made of them)."""
    with tempfile.TemporaryDirectory(prefix="list-packets-") as scratch:
        out = run(["gpg", "--homedir", scratch, "--list-packets"], input=certificate).stdout.decode()
    current, found = None, []
    for line in out.splitlines():
        if line.startswith(":user ID packet:"):
            current = line.split('"', 1)[1].rsplit('"', 1)[0]
        elif line.startswith(":") and not line.startswith(":signature packet:"):
            current = None
        elif "(primary user ID)" in line and current is not None:
            found.append(current)
    return found


def fingerprints(listing: str | bytes) -> list[str]:
    """Every fingerprint in a colon listing, keys' and subkeys', in order."""
    return [fingerprint for _, fingerprint in keys_in(listing)]


def primary_fingerprints(listing: str | bytes) -> list[str]:
    """The fingerprints of the primary keys in a colon listing, in order."""
    return [fingerprint for row, fingerprint in keys_in(listing) if row[0] in ("pub", "sec")]


def gpg_fingerprint(home: Path, who: str) -> str:
    return fingerprints(run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys", who]).stdout)[0]


def make_gpg_key(
    base: Path, name: str, email: str, *, algo: str = "ed25519", usage: str = "sign",
    expire: str = "never", at: str | None = None,
    subkeys: list[tuple[str, str, str | None]] = (("cv25519", "never", None),), home: str | None = None,
) -> User:
    """A GnuPG key in its own home `base / home` (default gpg-EMAIL): primary `algo` for `usage`,
    expiring `expire`, made at the faked time `at` (as gpg's --faked-system-time reads it: e.g.
    "20240101T000000", or "EPOCH!"); then one encryption subkey per (algo, expire, at) in `subkeys`."""
    home_dir = base / (home or f"gpg-{email}")
    if len(str(home_dir / "S.gpg-agent.browser")) > 107:  # a Unix socket's path limit
        raise ValueError(f"gpg home {home_dir} is too deep for gpg-agent's sockets; make it shorter")
    home_dir.mkdir(mode=0o700, parents=True)

    def gpg(when: str | None, *args: str) -> subprocess.CompletedProcess:
        past = ["--faked-system-time", when] if when else []
        return run([*GPG_BATCH, "--homedir", str(home_dir), *past, *args])

    gpg(at, "--quick-gen-key", f"{name} <{email}>", algo, usage, expire)
    fingerprint = gpg_fingerprint(home_dir, email)
    for subkey_algo, subkey_expire, subkey_at in subkeys:
        gpg(subkey_at, "--quick-add-key", fingerprint, subkey_algo, "encr", subkey_expire)
    public = run(["gpg", "--homedir", str(home_dir), "--armor", "--export", fingerprint]).stdout
    return User("gpg", name, email, home_dir, fingerprint, public)


def make_gpg_user(
    base: Path, name: str, email: str, *, algo: str = "ed25519", encrypt: bool = True,
    expire: str = "never", subkey_algo: str = "cv25519",
) -> User:
    return make_gpg_key(base, name, email, algo=algo, expire=expire,
                        subkeys=[(subkey_algo, expire, None)] if encrypt else [])


def make_sq_user(base: Path, name: str, email: str) -> User:
    home = base / f"sq-{email}"
    home.mkdir(mode=0o700, parents=True)
    key = home / "key.pgp"
    run(["sq", "key", "generate", "--userid", f"{name} <{email}>", "--export", str(key)])
    cert = run(["sq", "key", "extract-cert", str(key)]).stdout
    listing = run(["sq", "inspect", str(key)]).stdout.decode()
    fingerprint = next(
        line.split(":", 1)[1].strip().replace(" ", "")
        for line in listing.splitlines() if line.strip().startswith("Fingerprint:")
    )
    return User("sq", name, email, home, fingerprint, cert, secret_file=key)


def make_rnp_user(base: Path, name: str, email: str) -> User:
    home = base / f"rnp-{email}"
    home.mkdir(mode=0o700, parents=True)
    uid = f"{name} <{email}>"
    run(["rnpkeys", "--homedir", str(home), "--generate-key", "--userid", uid, "--password", ""])
    public = run(["rnpkeys", "--homedir", str(home), "--export-key", email]).stdout
    # Ask GnuPG for the fingerprint of what RNP exported: an independent reading.
    fingerprint = fingerprints(run(["gpg", "--show-keys", "--with-colons"], input=public).stdout)[0]
    return User("rnp", name, email, home, fingerprint, public)


def make_expired_gpg_user(base: Path, name: str, email: str, *, primary_expire: str = "1d",
                          at: str = "20200101T000000", home: str | None = None) -> User:
    """A GnuPG key made at `at` (2020 unless told) whose encryption subkey expired a day later
    (and its primary key too, unless primary_expire is "never")."""
    return make_gpg_key(base, name, email, expire=primary_expire, at=at, subkeys=[("cv25519", "1d", at)],
                        home=home or f"gpg-expired-{email}")


def revoked(user: User) -> bytes:
    """`user`'s public key with the revocation certificate gpg made at key generation applied."""
    certificate = (user.home / "openpgp-revocs.d" / f"{user.fingerprint}.rev").read_bytes()
    # gpg writes the certificate with a ':' before its armor line so it is not used by accident.
    user.gpg("--import", input=certificate.replace(b":-----BEGIN", b"-----BEGIN"))
    return user.gpg("--armor", "--export", user.fingerprint).stdout


def secret_key(user: User) -> bytes:
    return user.gpg("--armor", "--export-secret-keys", user.fingerprint).stdout


def keyring_listing(keys: Path) -> list[str]:
    """What `gpg --list-keys --with-colons` says about a keyring: keys, subkeys, user ids."""
    out = run(["gpg", "--homedir", str(keys), "--trust-model", "always", "--list-keys",
               "--with-colons"]).stdout.decode()
    return [line for line in out.splitlines() if line.split(":")[0] in ("pub", "sub", "fpr", "uid")]


def fingerprints_in(keys: Path) -> set[str]:
    return set(primary_fingerprints("\n".join(keyring_listing(keys))))
