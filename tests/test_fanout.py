"""Encrypt once, split per member: every copy read by GnuPG, Sequoia and RNP with one key each."""

from __future__ import annotations

import bz2
import os
import re
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from listserv import openpgp
from listserv.errors import CryptoError, NotFound
from listserv.keyring import Keyring
from listserv.stages.fanout import Fanout, armored_copy, encrypt_for

from .support import GPG_BATCH, User, make_gpg_user, run

POST = os.urandom(7 * 1024).hex().encode()[:10 * 1024]  # 10 KB: gpg writes partial body lengths
MISSING = "0123456789ABCDEF0123456789ABCDEF01234567"  # in no keyring


def make_expired_user(base: Path) -> User:
    """A key that was valid for one day in January 2024."""
    home = base / "gpg-expired"
    home.mkdir(mode=0o700)
    past = [*GPG_BATCH, "--homedir", str(home), "--faked-system-time", "20240101T000000"]
    run([*past, "--quick-gen-key", "Expired <expired@example.org>", "ed25519", "sign", "1d"])
    listing = run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys"]).stdout.decode()
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    run([*past, "--quick-add-key", fingerprint, "cv25519", "encr", "1d"])
    public = run(["gpg", "--homedir", str(home), "--armor", "--export", fingerprint]).stdout
    return User("gpg", "Expired", "expired@example.org", home, fingerprint, public)


def kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


@pytest.fixture(scope="module")
def outsiders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, User]:
    base = tmp_path_factory.mktemp("outsiders")
    users = {
        "expired": make_expired_user(base),
        "signonly": make_gpg_user(base, "Sign Only", "signonly@example.org", encrypt=False),
    }
    yield users
    for user in users.values():
        kill_agent(user.home)


@dataclass(frozen=True)
class ListRing:
    keyring: Keyring
    fingerprint: str  # the list key
    cert: Path  # the list's public key, as members have it


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory, people: dict[str, User], outsiders: dict[str, User]) -> ListRing:
    """A keyring laid out like a deployment's: the list key and every member's public key."""
    base = tmp_path_factory.mktemp("listserv")
    home = base / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    for user in [*people.values(), *outsiders.values()]:
        assert keyring.import_keys(user.public_key) == [user.fingerprint]
    cert = base / "list.asc"
    cert.write_text(keyring.export(fingerprint))
    yield ListRing(keyring, fingerprint, cert)
    kill_agent(home)


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


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory, people: dict[str, User], ring: ListRing) -> dict[str, Clients]:
    made = {}
    for name, user in people.items():
        base = tmp_path_factory.mktemp(f"client-{name}")
        secret = base / "secret.asc"
        secret.write_bytes(export_secret(user))
        gpg_home, rnp_home = base / "gpg", base / "rnp"
        gpg_home.mkdir(mode=0o700)
        rnp_home.mkdir(mode=0o700)
        run([*GPG_BATCH, "--homedir", str(gpg_home), "--import", str(secret), str(ring.cert)])
        for key in (secret, ring.cert):
            run(["rnpkeys", "--homedir", str(rnp_home), "--import", str(key), "--password", ""])
        made[name] = Clients(gpg_home, rnp_home, secret)
    yield made
    for client in made.values():
        kill_agent(client.gpg_home)


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


@pytest.fixture(scope="module")
def fanout(ring: ListRing, people: dict[str, User]) -> Fanout:
    return encrypt_for(ring.keyring, ring.fingerprint, [user.fingerprint for user in people.values()], POST)


def test_every_member_reads_their_own_copy_with_gpg_sq_and_rnp(
    fanout: Fanout, ring: ListRing, people: dict[str, User], clients: dict[str, Clients], tmp_path: Path,
) -> None:
    assert fanout.unusable == ()
    assert len(fanout.shared) == 1
    for name, user in people.items():
        read_everywhere(clients[name], ring, armored_copy(fanout, user.fingerprint), tmp_path)


def key_ids(user: User) -> set[str]:
    listing = run(["gpg", "--show-keys", "--with-colons"], input=user.public_key).stdout.decode()
    return {line.split(":")[4] for line in listing.splitlines() if line.startswith(("pub:", "sub:"))}


def encryption_key_ids(user: User) -> set[str]:
    listing = run(["gpg", "--show-keys", "--with-colons"], input=user.public_key).stdout.decode()
    return {fields[4] for fields in (line.split(":") for line in listing.splitlines())
            if fields[0] in ("pub", "sub") and "e" in fields[11]}


def test_each_copy_is_one_pkesk_with_its_members_real_key_id_and_the_shared_packet(
    fanout: Fanout, people: dict[str, User],
) -> None:
    for user in people.values():
        packets = openpgp.parse(openpgp.dearmor(armored_copy(fanout, user.fingerprint)))
        assert [packet.tag for packet in packets] == [openpgp.PKESK, openpgp.SEIPD]
        assert openpgp.pkesk_key_id(packets[0]) in encryption_key_ids(user)  # not the wildcard
        assert packets[1].raw == fanout.shared[0]


def decompressed(inner: bytes) -> bytes:
    """The packets inside gpg's compressed data packet (RFC 9580 §5.6)."""
    packets = openpgp.parse(inner)
    assert [packet.tag for packet in packets] == [8]
    algorithm, data = packets[0].body[0], packets[0].body[1:]
    return {0: lambda d: d, 1: lambda d: zlib.decompress(d, -15), 2: zlib.decompress,
            3: bz2.decompress}[algorithm](data)


def identifiers(user: User) -> list[bytes]:
    """Every way a packet could name this user: fingerprint and key ids, binary and hex."""
    ids = [user.fingerprint, *key_ids(user)]
    return [form for text in ids for form in (bytes.fromhex(text), text.encode(), text.lower().encode())]


def test_no_copy_names_another_member_even_inside_the_signature(
    fanout: Fanout, ring: ListRing, people: dict[str, User], clients: dict[str, Clients],
) -> None:
    for name, user in people.items():
        copy = openpgp.dearmor(armored_copy(fanout, user.fingerprint))
        unwrapped = run([*GPG_BATCH, "--homedir", str(clients[name].gpg_home), "--decrypt", "--unwrap"],
                        input=copy).stdout
        inner = decompressed(unwrapped)  # one-pass signature, literal data, signature
        assert [packet.tag for packet in openpgp.parse(inner)] == [4, 11, 2]
        assert bytes.fromhex(ring.fingerprint) in inner  # the search does find a fingerprint
        for other in people.values():
            if other is user:
                continue
            for needle in identifiers(other):
                assert needle not in copy, (name, other.name)
                assert needle not in inner, (name, other.name)


def test_a_copy_is_unreadable_with_another_members_key(
    fanout: Fanout, people: dict[str, User], clients: dict[str, Clients],
) -> None:
    copy = armored_copy(fanout, people["alice"].fingerprint)
    result = run([*GPG_BATCH, "--homedir", str(clients["mallory"].gpg_home), "--decrypt"], input=copy, check=False)
    assert result.returncode != 0 and POST not in result.stdout


def test_unusable_members_get_no_copy_and_everyone_else_still_does(
    ring: ListRing, people: dict[str, User], outsiders: dict[str, User], clients: dict[str, Clients],
) -> None:
    alice, bob = people["alice"], people["bob"]
    expired, signonly = outsiders["expired"].fingerprint, outsiders["signonly"].fingerprint
    result = encrypt_for(ring.keyring, ring.fingerprint, [alice.fingerprint, expired, signonly, MISSING,
                                                          bob.fingerprint], POST)
    assert result.unusable == (expired, signonly, MISSING)
    assert set(result.pkesks) == {alice.fingerprint, bob.fingerprint}
    assert read_with_gpg(clients["alice"], ring, armored_copy(result, alice.fingerprint)) == POST
    assert read_with_gpg(clients["bob"], ring, armored_copy(result, bob.fingerprint)) == POST
    with pytest.raises(NotFound):
        armored_copy(result, expired)


def test_batches_still_give_every_member_exactly_one_readable_copy(
    ring: ListRing, people: dict[str, User], outsiders: dict[str, User], clients: dict[str, Clients],
    tmp_path: Path,
) -> None:
    order = ["alice", "expired", "bob", "sally", "signonly", "rita", "mallory"]
    everyone = {**people, **outsiders}
    result = encrypt_for(ring.keyring, ring.fingerprint, [everyone[name].fingerprint for name in order], POST,
                         batch_size=2)
    # [alice, expired] [bob, sally] [signonly, rita] [mallory]: one shared packet per gpg call
    assert len(result.shared) == 4 and len(set(result.shared)) == 4
    assert set(result.pkesks) == {user.fingerprint for user in people.values()}
    assert result.unusable == (outsiders["expired"].fingerprint, outsiders["signonly"].fingerprint)
    for name, user in people.items():
        copy = armored_copy(result, user.fingerprint)
        assert [packet.tag for packet in openpgp.parse(openpgp.dearmor(copy))] == [1, 18]
        read_everywhere(clients[name], ring, copy, tmp_path)


def test_duplicates_and_spelling_of_fingerprints_give_one_copy(ring: ListRing, people: dict[str, User]) -> None:
    alice = people["alice"].fingerprint
    spaced = " ".join(re.findall("....", alice.lower()))
    result = encrypt_for(ring.keyring, ring.fingerprint, [alice, spaced, alice], b"hello")
    assert list(result.pkesks) == [alice] and result.unusable == ()
    assert armored_copy(result, spaced) == armored_copy(result, alice)


def test_no_recipients_need_no_gpg_call(ring: ListRing, outsiders: dict[str, User]) -> None:
    result = encrypt_for(ring.keyring, ring.fingerprint, [outsiders["signonly"].fingerprint], POST)
    assert result.shared == () and dict(result.pkesks) == {}
    assert result.unusable == (outsiders["signonly"].fingerprint,)


@pytest.mark.parametrize("size", [100, 4 * 1024 * 1024], ids=["small", "4MB"])
def test_a_signer_without_secret_key_raises_crypto_error(
    ring: ListRing, people: dict[str, User], size: int,
) -> None:
    # Bob's key is in the keyring without its secret part. gpg must not fall back to the list's
    # secret key; it gives up before reading its input, so a large post meets a broken pipe.
    with pytest.raises(CryptoError):
        encrypt_for(ring.keyring, people["bob"].fingerprint, [people["alice"].fingerprint], bytes(size))

