"""Encrypt once, split per member: every copy read by GnuPG, Sequoia and RNP with one key each."""

from __future__ import annotations

import bz2
import re
import zlib
from pathlib import Path

import pytest

from listserv import openpgp
from listserv.errors import CryptoError, NotFound
from listserv.stages.fanout import Fanout, armored_copy, encrypt_for

from tests.helpers.fanout import POST, Clients, ListRing, encryption_key_ids, key_ids, read_everywhere, read_with_gpg
from tests.helpers.keys import GPG_BATCH, User, run

MISSING = "0123456789ABCDEF0123456789ABCDEF01234567"  # in no keyring


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

