"""Throwaway OpenPGP identities made by real implementations: GnuPG, Sequoia `sq` and RNP.

Each `User` owns a private keyring directory and can export its public key; tests make them
at run time, so no secret is ever committed.
"""

from __future__ import annotations

import subprocess
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


def gpg_fingerprint(home: Path, who: str) -> str:
    out = run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys", who]).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def make_gpg_user(
    base: Path, name: str, email: str, *, algo: str = "ed25519", encrypt: bool = True,
    expire: str = "never", subkey_algo: str = "cv25519",
) -> User:
    home = base / f"gpg-{email}"
    home.mkdir(mode=0o700, parents=True)
    uid = f"{name} <{email}>"
    run([*GPG_BATCH, "--homedir", str(home), "--quick-gen-key", uid, algo, "sign", expire])
    fingerprint = gpg_fingerprint(home, email)
    if encrypt:
        run([*GPG_BATCH, "--homedir", str(home), "--quick-add-key", fingerprint, subkey_algo, "encr", expire])
    public = run(["gpg", "--homedir", str(home), "--armor", "--export", fingerprint]).stdout
    return User("gpg", name, email, home, fingerprint, public)


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
    listing = run(["gpg", "--show-keys", "--with-colons"], input=public).stdout.decode()
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    return User("rnp", name, email, home, fingerprint, public)


def make_expired_gpg_user(base: Path, name: str, email: str, *, primary_expire: str = "1d") -> User:
    """A GnuPG key made in 2020 whose encryption subkey expired a day later (and its primary
    key too, unless primary_expire is "never")."""
    home = base / f"gpg-expired-{email}"
    home.mkdir(mode=0o700, parents=True)
    past = ["--faked-system-time", "20200101T000000"]
    run([*GPG_BATCH, "--homedir", str(home), *past, "--quick-gen-key", f"{name} <{email}>", "ed25519", "sign", primary_expire])
    fingerprint = gpg_fingerprint(home, email)
    run([*GPG_BATCH, "--homedir", str(home), *past, "--quick-add-key", fingerprint, "cv25519", "encr", "1d"])
    public = run(["gpg", "--homedir", str(home), "--armor", "--export", fingerprint]).stdout
    return User("gpg", name, email, home, fingerprint, public)


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
    listing = keyring_listing(keys)
    return {
        following.split(":")[9]
        for line, following in zip(listing, listing[1:])
        if line.startswith("pub:") and following.startswith("fpr:")
    }
