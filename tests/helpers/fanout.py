"""A list keyring laid out as deployed and each member's own clients, for the tests of the
encryption fan-out (stages/test_fanout.py) and of the PKESKs built in Python (test_pkesk.py).
The fixtures that make them (`outsiders`, `ring`, `clients`) are in tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from listserv.keyring import Keyring

from .keys import GPG_BATCH, User, keys_in, run

POST = os.urandom(7 * 1024).hex().encode()[:10 * 1024]  # 10 KB: gpg writes partial body lengths


def kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


@dataclass(frozen=True)
class ListRing:
    keyring: Keyring
    fingerprint: str  # the list key
    cert: Path  # the list's public key, as members have it


@dataclass(frozen=True)
class Clients:
    """One member's secret key, and nothing else secret, in each of the three implementations."""

    gpg_home: Path
    rnp_home: Path
    sq_key: Path


def export_secret(user: User) -> bytes:
    if user.tool == "sq":
        return user.secret_file.read_bytes()
    if user.tool == "rnp":
        return run(["rnpkeys", "--homedir", str(user.home), "--export-key", "--secret", user.email,
                    "--password", ""]).stdout
    return user.gpg("--armor", "--export-secret-keys", user.fingerprint).stdout


def read_with_gpg(client: Clients, ring: ListRing, copy: bytes) -> bytes:
    result = run([*GPG_BATCH, "--homedir", str(client.gpg_home), "--status-fd", "2", "--decrypt"],
                 input=copy, check=False)
    status = result.stderr.decode()
    assert result.returncode == 0, status
    valid = [line.split() for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
    assert [fields[-1] for fields in valid] == [ring.fingerprint]  # signed by the list's primary key
    return result.stdout


def read_with_sq(client: Clients, ring: ListRing, copy: bytes) -> bytes:
    result = run(["sq", "decrypt", "--recipient-key", str(client.sq_key), "--signer-cert", str(ring.cert)],
                 input=copy, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert f"Good signature from {ring.fingerprint[-16:]}" in result.stderr.decode()
    return result.stdout


def read_with_rnp(client: Clients, ring: ListRing, copy: bytes, scratch: Path) -> bytes:
    source, target = scratch / "copy.asc", scratch / "plain.out"  # rnp deletes --output on failure
    source.write_bytes(copy)
    target.unlink(missing_ok=True)
    result = run(["rnp", "--homedir", str(client.rnp_home), "--password", "", "--decrypt", str(source),
                  "--output", str(target)], check=False)
    messages = result.stderr.decode()
    assert result.returncode == 0, messages
    assert "Signature(s) verified successfully" in messages and ring.fingerprint.lower() in messages
    return target.read_bytes()


def read_everywhere(client: Clients, ring: ListRing, copy: bytes, scratch: Path) -> None:
    assert read_with_gpg(client, ring, copy) == POST
    assert read_with_sq(client, ring, copy) == POST
    assert read_with_rnp(client, ring, copy, scratch) == POST


def key_ids(user: User) -> set[str]:
    """The key ids of a member's key and subkeys."""
    listing = run(["gpg", "--show-keys", "--with-colons"], input=user.public_key).stdout
    return {row[4] for row, _ in keys_in(listing) if row[0] in ("pub", "sub")}


def encryption_key_ids(user: User) -> set[str]:
    listing = run(["gpg", "--show-keys", "--with-colons"], input=user.public_key).stdout
    return {row[4] for row, _ in keys_in(listing) if row[0] in ("pub", "sub") and "e" in row[11]}
