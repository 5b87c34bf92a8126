"""Members' PKESKs built in Python from gpg's session key (listserv.pkesk): read by GnuPG,
Sequoia and RNP; the subkey chosen is the one gpg would choose; other curves go to gpg."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from listserv import openpgp, pkesk
from listserv.errors import CryptoError
from listserv.keyring import Keyring
from listserv.stages import fanout as fanout_stage
from listserv.stages.fanout import armored_copy, encrypt_for

from tests.helpers.fanout import POST, Clients, ListRing, encryption_key_ids, kill_agent, read_everywhere, read_with_gpg
from tests.helpers.keys import GPG_BATCH, User, keys_in, make_gpg_key, run


@dataclass(frozen=True)
class Special:
    user: User
    client: Clients  # the member's own secret key, alone, in a gpg home


def subkeys(home: Path, fingerprint: str) -> list[tuple[str, str, str]]:
    """(fingerprint, capabilities, validity) of each subkey, in key block order."""
    listing = run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys", fingerprint]).stdout
    return [(subkey, fields[11], fields[1]) for fields, subkey in keys_in(listing) if fields[0] == "sub"]


def make_special(base: Path, name: str, steps: list[tuple[str, str, str | None]], algo: str = "ed25519") -> Special:
    """A gpg key with primary `algo` (sign) and subkeys added by `steps`: (algo, expiry, faked time)."""
    user = make_gpg_key(base, name, f"{name}@example.org", algo=algo, at="20230101T000000", subkeys=steps,
                        home=f"gpg-{name}")
    return Special(user, Clients(user.home, user.home, user.home))


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory, ring: ListRing) -> dict[str, Special]:
    base = tmp_path_factory.mktemp("special")
    made = {
        # two valid Curve25519 encryption subkeys, the second one newer
        "two": make_special(base, "two", [("cv25519", "never", "20240101T000000"),
                                          ("cv25519", "never", "20250101T000000")]),
        # an old encryption subkey that has expired, and a newer valid one
        "renewed": make_special(base, "renewed", [("cv25519", "1d", "20240101T000000"),
                                                  ("rsa3072", "never", None)]),
        # the newest encryption subkey has expired: gpg falls back to the older valid one
        "stale-newest": make_special(base, "stale", [("cv25519", "never", "20240101T000000"),
                                                     ("cv25519", "1d", "20250101T000000")]),
        # NIST P-256: not encrypted to by listserv.pkesk, so gpg's own path
        "p256": make_special(base, "p256", [("nistp256", "never", None)], algo="nistp256"),
    }
    for item in made.values():
        assert ring.keyring.import_keys(item.user.public_key) == [item.user.fingerprint]
        run([*GPG_BATCH, "--homedir", str(item.client.gpg_home), "--import", str(ring.cert)])
    yield made
    for item in made.values():
        kill_agent(item.user.home)


def gpg_choice(ring: ListRing, fingerprint: str) -> str:
    """The key id gpg itself encrypts to for this member (from a gpg-made PKESK)."""
    (packet, _) = openpgp.parse(ring.keyring.seal(fingerprint, b"x"))
    return openpgp.pkesk_key_id(packet)


def copy_key_id(result: fanout_stage.Fanout, fingerprint: str) -> str:
    packets = openpgp.parse(openpgp.dearmor(armored_copy(result, fingerprint)))
    assert [packet.tag for packet in packets] == [openpgp.PKESK, openpgp.SEIPD]
    return openpgp.pkesk_key_id(packets[0])


@pytest.fixture
def no_gpg_batches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records who went down gpg's own batch path."""
    taken: list[list[str]] = []
    original = fanout_stage._encrypt_batch

    def spy(keyring, signer, wanted, plaintext):
        taken.append(list(wanted))
        return original(keyring, signer, wanted, plaintext)

    monkeypatch.setattr(fanout_stage, "_encrypt_batch", spy)
    return taken


def test_gpg_sq_and_rnp_members_get_python_built_pkesks_all_three_can_read(
    ring: ListRing, people: dict[str, User], clients: dict[str, Clients], no_gpg_batches: list, tmp_path: Path,
) -> None:
    result = encrypt_for(ring.keyring, ring.fingerprint, [user.fingerprint for user in people.values()], POST)
    assert no_gpg_batches == []  # RSA and Curve25519 keys from all three tools: no gpg batch
    assert len(result.shared) == 1 and result.unusable == ()
    algorithms = set()
    for name, user in people.items():
        copy = armored_copy(result, user.fingerprint)
        packet = openpgp.parse(openpgp.dearmor(copy))[0]
        assert openpgp.pkesk_key_id(packet) == gpg_choice(ring, user.fingerprint)
        algorithms.add(packet.body[9])
        read_everywhere(clients[name], ring, copy, tmp_path)
    assert algorithms == {1, 18}  # bob is RSA-3072; alice, mallory: Curve25519


def test_the_lists_own_pkesk_is_in_no_copy(
    ring: ListRing, people: dict[str, User], special: dict[str, Special],
) -> None:
    fingerprints = [user.fingerprint for user in people.values()] + [s.user.fingerprint for s in special.values()]
    result = encrypt_for(ring.keyring, ring.fingerprint, fingerprints, POST)
    listing = run(["gpg", "--show-keys", "--with-colons"], input=ring.cert.read_bytes()).stdout.decode()
    rows = [line.split(":") for line in listing.splitlines()]
    list_ids = [fields[4] for fields in rows if fields[0] in ("pub", "sub")]
    list_fprs = [fields[9] for fields in rows if fields[0] == "fpr"]
    assert len(list_ids) == 2
    for fingerprint in fingerprints:
        copy = openpgp.dearmor(armored_copy(result, fingerprint))
        packets = openpgp.parse(copy)
        assert [packet.tag for packet in packets] == [openpgp.PKESK, openpgp.SEIPD]
        assert openpgp.pkesk_key_id(packets[0]) not in list_ids
        for text in [*list_ids, *list_fprs]:
            assert bytes.fromhex(text) not in copy


def test_two_encryption_subkeys_the_newest_is_used_as_gpg_would(
    ring: ListRing, special: dict[str, Special], no_gpg_batches: list,
) -> None:
    user = special["two"].user
    first, second = subkeys(user.home, user.fingerprint)
    result = encrypt_for(ring.keyring, ring.fingerprint, [user.fingerprint], POST)
    assert no_gpg_batches == []
    assert copy_key_id(result, user.fingerprint) == second[0][-16:] == gpg_choice(ring, user.fingerprint)
    assert read_with_gpg(special["two"].client, ring, armored_copy(result, user.fingerprint)) == POST


@pytest.mark.parametrize("name", ["renewed", "stale-newest"])
def test_an_expired_subkey_is_passed_over_for_the_valid_one(
    ring: ListRing, special: dict[str, Special], no_gpg_batches: list, name: str,
) -> None:
    user = special[name].user
    valid = [fpr for fpr, cap, validity in subkeys(user.home, user.fingerprint) if validity != "e"]
    assert len(valid) == 1
    result = encrypt_for(ring.keyring, ring.fingerprint, [user.fingerprint], POST)
    assert no_gpg_batches == [] and result.unusable == ()
    assert copy_key_id(result, user.fingerprint) == valid[0][-16:] == gpg_choice(ring, user.fingerprint)
    assert read_with_gpg(special[name].client, ring, armored_copy(result, user.fingerprint)) == POST


def test_a_nist_p256_member_goes_through_gpg_and_the_rest_share_one_packet(
    ring: ListRing, people: dict[str, User], special: dict[str, Special], clients: dict[str, Clients],
    no_gpg_batches: list, tmp_path: Path,
) -> None:
    p256 = special["p256"].user
    alice, bob = people["alice"], people["bob"]
    result = encrypt_for(ring.keyring, ring.fingerprint, [alice.fingerprint, p256.fingerprint, bob.fingerprint], POST)
    assert no_gpg_batches == [[p256.fingerprint]]
    assert len(result.shared) == 2 and result.unusable == ()
    assert result.pkesks[alice.fingerprint].batch == result.pkesks[bob.fingerprint].batch
    assert result.pkesks[p256.fingerprint].batch != result.pkesks[alice.fingerprint].batch
    assert copy_key_id(result, p256.fingerprint) == gpg_choice(ring, p256.fingerprint)
    assert read_with_gpg(special["p256"].client, ring, armored_copy(result, p256.fingerprint)) == POST
    read_everywhere(clients["alice"], ring, armored_copy(result, alice.fingerprint), tmp_path)
    read_everywhere(clients["bob"], ring, armored_copy(result, bob.fingerprint), tmp_path)


def count_calls(monkeypatch: pytest.MonkeyPatch, keyring: object, name: str) -> list[list[str]]:
    calls: list[list[str]] = []
    original = getattr(type(keyring), name)

    def spy(self, fingerprints):
        calls.append(list(fingerprints))
        return original(self, fingerprints)

    monkeypatch.setattr(type(keyring), name, spy)
    return calls


def test_keys_are_listed_and_parsed_once_while_the_keyring_is_unchanged(
    ring: ListRing, people: dict[str, User], outsiders: dict[str, User], monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyring = Keyring(ring.keyring.home)  # its own cache, empty: the server keeps one keyring
    exported = count_calls(monkeypatch, keyring, "export_public")
    listed = count_calls(monkeypatch, keyring, "encryption_subkeys")
    fingerprints = [user.fingerprint for user in people.values()]
    encrypt_for(keyring, ring.fingerprint, fingerprints, POST)
    encrypt_for(keyring, ring.fingerprint, fingerprints, POST)
    assert len(exported) == 1 and sorted(exported[0]) == sorted(fingerprints)
    assert len(listed) == 1
    # A member asked about for the first time is listed alone.
    encrypt_for(keyring, ring.fingerprint, [*fingerprints, outsiders["expired"].fingerprint], POST)
    assert listed[1:] == [[outsiders["expired"].fingerprint]] and len(exported) == 1
    # Any change to the keyring drops the cache (here: a key removed and imported again).
    keyring.delete(outsiders["signonly"].fingerprint)
    assert keyring.import_keys(outsiders["signonly"].public_key)
    encrypt_for(keyring, ring.fingerprint, fingerprints, POST)
    assert len(exported) == 2 and len(listed) == 3


def test_a_removed_member_key_is_noticed_on_the_next_post(
    ring: ListRing, people: dict[str, User], outsiders: dict[str, User],
) -> None:
    signonly = outsiders["signonly"]
    alice = people["alice"]
    assert encrypt_for(ring.keyring, ring.fingerprint, [alice.fingerprint], POST).unusable == ()
    ring.keyring.delete(alice.fingerprint)
    try:
        assert encrypt_for(ring.keyring, ring.fingerprint, [alice.fingerprint], POST).unusable == (alice.fingerprint,)
    finally:
        assert ring.keyring.import_keys(alice.public_key) == [alice.fingerprint]
    assert encrypt_for(ring.keyring, ring.fingerprint, [alice.fingerprint, signonly.fingerprint], POST).unusable \
        == (signonly.fingerprint,)


def test_the_listing_is_made_again_once_a_listed_key_reaches_its_expiry(
    ring: ListRing, special: dict[str, Special], monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = special["stale-newest"].user  # its subkeys' expiry is past: no future time to wait for
    expiring = make_special(ring.keyring.home.parent, "soon", [("cv25519", "2030-01-01", None)])
    assert ring.keyring.import_keys(expiring.user.public_key) == [expiring.user.fingerprint]
    listed = count_calls(monkeypatch, ring.keyring, "encryption_subkeys")
    members = [user.fingerprint, expiring.user.fingerprint]
    assert encrypt_for(ring.keyring, ring.fingerprint, members, POST).unusable == ()
    assert encrypt_for(ring.keyring, ring.fingerprint, members, POST).unusable == ()
    assert len(listed) == 1
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 10 * 365 * 86400)
    encrypt_for(ring.keyring, ring.fingerprint, members, POST)
    assert len(listed) == 2  # listed again (gpg, on the real clock, still calls the key valid)
    kill_agent(expiring.user.home)


def test_rsa_and_curve25519_material_is_read_from_certificates(people: dict[str, User]) -> None:
    for user in people.values():
        keys = pkesk.read_keys(openpgp.dearmor(user.public_key, "PGP PUBLIC KEY BLOCK"))
        usable = {fpr[-16:] for fpr, key in keys.items() if key is not None}
        assert encryption_key_ids(user) <= usable


def test_session_key_of_data_the_keyring_cannot_decrypt_is_a_crypto_error(ring: ListRing) -> None:
    with pytest.raises(CryptoError):
        ring.keyring.session_key(b"\x8c\x0d\x04\x09\x03\x02garbage", b"")
    data = ring.keyring.seal(ring.fingerprint, b"sealed")
    assert ring.keyring.session_key(data, b"sealed")[0] == pkesk.AES256
    with pytest.raises(CryptoError):  # gpg must give back exactly the plaintext
        ring.keyring.session_key(data, b"something else")


def test_only_aes256_session_keys_are_encrypted(people: dict[str, User]) -> None:
    keys = pkesk.read_keys(openpgp.dearmor(people["alice"].public_key, "PGP PUBLIC KEY BLOCK"))
    key = next(key for key in keys.values() if key is not None)
    with pytest.raises(CryptoError):
        pkesk.build(key, bytes(16), algorithm=7)
