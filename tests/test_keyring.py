"""The keyring: the list's own key, what a staged member key reports, and the GnuPG check."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from listserv import keyring as keyring_module
from listserv.errors import CryptoError, KeyProblem, Refusal, TooLarge, Unauthorized
from listserv.keyring import GPG_OPTIONS, MIN_GNUPG, GpgTimeout, Keyring, check_fingerprint, gnupg_version
from listserv.stages.open import open_message

from tests.helpers import forge
from tests.helpers import mail as mf
from tests.helpers.keys import (
    keyring_listing, keys_in, make_gpg_key, make_gpg_user, primary_user_ids, run, user_ids,
)
from tests.helpers.members_clients import encrypt_to_address


def listing_fields(cli, fingerprint: str) -> list[list[str]]:
    out = run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons", "--list-keys", fingerprint])
    return [line.split(":") for line in out.stdout.decode().splitlines()]


def test_list_key_is_ed25519_with_a_cv25519_encryption_subkey_and_no_expiry(cli, news):
    fingerprint = cli.json("list", "show", news)["fingerprint"]
    records = listing_fields(cli, fingerprint)
    [pub] = [r for r in records if r[0] == "pub"]
    [sub] = [r for r in records if r[0] == "sub"]
    assert (pub[3], pub[16], pub[6]) == ("22", "ed25519", "")  # EdDSA, no expiry
    assert "s" in pub[11] and "c" in pub[11] and "e" not in pub[11]
    assert (sub[3], sub[16], sub[6], sub[11]) == ("18", "cv25519", "", "e")  # ECDH, no expiry
    keyring = Keyring(cli.home / "keys")
    assert fingerprint in {key.fingerprint for key in keyring.listed(secret=True)}
    # The secret stays in keys/: no passphrase, so it needs none to be used by the server.
    secret = run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons", "--list-secret-keys",
                  fingerprint]).stdout.decode()
    assert secret.startswith("sec:")
    assert "PRIVATE" not in keyring.export(fingerprint)


NEWS_UIDS = ["News <news@example.org>", "News <news-request@example.org>", "News <news-owner@example.org>",
             "News <news-sendkey@example.org>"]


def test_a_list_key_has_a_user_id_for_each_address_members_write_to(cli, news):
    fingerprint = cli.json("list", "show", news)["fingerprint"]
    listed = run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons", "--list-keys", fingerprint]).stdout
    assert [uid for validity, uid in user_ids(listed) if validity != "r"] == NEWS_UIDS
    # What members are given (`list key`, a welcome, x-get-listkey): all four, news@ still primary.
    exported = cli.ok("list", "key", news).stdout.encode()
    assert [uid for _, uid in user_ids(run(["gpg", "--show-keys", "--with-colons"], input=exported).stdout)] == NEWS_UIDS
    assert primary_user_ids(exported) == ["News <news@example.org>"]


@pytest.mark.parametrize("tool", ["gpg", "sq", "rnp"])
def test_a_members_client_finds_the_list_key_by_the_request_and_owner_address(cli, news, people, tool):
    """The exported key beside another member's, as in a member's keyring: each tool picks the
    list's key by the address alone, and the list's keyring decrypts what it made."""
    certificates = cli.ok("list", "key", news).stdout.encode() + people["alice"].public_key
    keyring = Keyring(cli.home / "keys")
    for address in ("news-request@example.org", "news-owner@example.org"):
        sealed = encrypt_to_address(tool, address, certificates, f"to {address}\n".encode())
        assert keyring.unseal(sealed) == f"to {address}\n".encode()


def test_adding_the_user_ids_again_changes_nothing_and_a_revoked_one_stays_revoked(tmp_path):
    home = tmp_path / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    assert keyring.add_user_ids({fingerprint: NEWS_UIDS}) == {fingerprint: NEWS_UIDS[1:]}
    pubring = (home / "pubring.kbx").read_bytes()
    assert keyring.add_user_ids({fingerprint: NEWS_UIDS}) == {}
    assert (home / "pubring.kbx").read_bytes() == pubring
    # An admin who revokes the owner's user id by hand means it: it is not added back.
    run(["gpg", "--homedir", str(home), "--batch", "--quick-revoke-uid", fingerprint, NEWS_UIDS[2]])
    assert keyring.add_user_ids({fingerprint: NEWS_UIDS}) == {}
    listed = run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys", fingerprint]).stdout
    assert user_ids(listed)[2] == ("r", NEWS_UIDS[2])
    assert keyring.add_user_ids({"A" * 40: NEWS_UIDS}) == {}  # a key no longer there: nothing to do
    keyring.stop_agent()


def test_gpg_runs_with_the_home_keyring_whatever_gnupghome_says(cli, news, people, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(elsewhere))
    alice = people["alice"]
    cli.ok("member", "add", news, alice.email, "--key", "-", input=alice.public_key)
    assert list(elsewhere.iterdir()) == []
    assert any(alice.fingerprint in line for line in keyring_listing(cli.home / "keys"))


def test_gpg_never_fetches_keys():
    for option in ("--no-auto-key-retrieve", "--no-auto-key-import", "--disable-dirmngr"):
        assert option in GPG_OPTIONS


def test_staged_keys_describe_themselves(cli, people, unusable_keys):
    keyring = Keyring(cli.home / "keys")
    with keyring.stage(people["sally"].public_key) as staged:
        [sally] = staged.keys
    assert sally.fingerprint == people["sally"].fingerprint
    assert sally.uids == ("Sally <sally@example.net>",)
    assert (sally.can_encrypt, sally.revoked, sally.expired, sally.secret) == (True, False, False, False)
    assert sally.problem() is None

    with keyring.stage(unusable_keys["expired"]) as staged:
        [old] = staged.keys
    assert old.expired and old.expires == "2020-01-02T00:00:00Z"
    with keyring.stage(unusable_keys["revoked"]) as staged:
        assert staged.keys[0].revoked
    with keyring.stage(unusable_keys["sign-only"]) as staged:
        assert not staged.keys[0].can_encrypt
    with keyring.stage(unusable_keys["two-keys"]) as staged:
        assert {k.fingerprint for k in staged.keys} == {people["alice"].fingerprint, people["bob"].fingerprint}
    # Nothing staged reaches the real keyring unless adopted.
    assert keyring_listing(cli.home / "keys") == []


def test_known_keys_let_a_bare_revocation_apply_and_are_described_only_when_the_data_names_them(
        cli, news, tmp_path_factory):
    """stage(known=...) copies keyring keys into the scratch keyring first: a bare revocation
    certificate then has its key to attach to, and adopting it revokes the keyring's copy."""
    base = tmp_path_factory.mktemp("k")  # short: gpg-agent's socket path must fit in 108 bytes
    carol = make_gpg_user(base, "Carol", "carol@example.org")
    dave = make_gpg_user(base, "Dave", "dave@example.org")
    cli.ok("member", "add", news, carol.email, "--key", "-", input=carol.public_key)
    keyring = Keyring(cli.home / "keys")
    certificate = (carol.home / "openpgp-revocs.d" / f"{carol.fingerprint}.rev").read_bytes()
    certificate = certificate.replace(b":-----BEGIN", b"-----BEGIN")
    with pytest.raises(KeyProblem, match="no OpenPGP public key"):
        keyring.stage(certificate)  # alone it applies to nothing
    with keyring.stage(dave.public_key, known=(carol.fingerprint,)) as staged:
        assert [key.fingerprint for key in staged.keys] == [dave.fingerprint]
    with keyring.stage(carol.public_key, known=(carol.fingerprint,)) as staged:
        assert [(key.fingerprint, key.revoked) for key in staged.keys] == [(carol.fingerprint, False)]
    assert "r" not in keyring.listed([carol.fingerprint])[0].validity
    with keyring.stage(certificate, known=(carol.fingerprint,)) as staged:
        assert [(key.fingerprint, key.revoked) for key in staged.keys] == [(carol.fingerprint, True)]
        staged.adopt([carol.fingerprint])
    assert "r" in keyring.listed([carol.fingerprint])[0].validity
    # Sent again unrevoked, the key is judged as the keyring holds it: revoked.
    with keyring.stage(carol.public_key, known=(carol.fingerprint,)) as staged:
        assert [(key.fingerprint, key.revoked) for key in staged.keys] == [(carol.fingerprint, True)]


def test_staging_refuses_too_much_data(cli, people):
    data = people["alice"].public_key
    with pytest.raises(KeyProblem, match="larger than 0 KiB"):
        Keyring(cli.home / "keys").stage(data, limit=len(data) - 1)


def test_user_ids_are_read_as_utf8(cli, news, tmp_path):
    jose = make_gpg_key(tmp_path, "José Ñandú", "jose@example.org", home="jose")
    public = jose.gpg("--export", jose.fingerprint).stdout
    with Keyring(cli.home / "keys").stage(public) as staged:
        assert staged.keys[0].uids == ("José Ñandú <jose@example.org>",)


def test_key_expires_is_when_encryption_stops_working(cli, news, tmp_path):
    """A primary key that never expires with an encryption subkey that does: the member's key
    is useless from the subkey's expiry on, and `member list` says so."""
    carol = make_gpg_key(tmp_path, "Carol", "carol@example.org", subkeys=[("cv25519", "2y", None)], home="carol")
    listing = carol.gpg("--with-colons", "--list-keys", carol.fingerprint).stdout
    [sub_expiry] = [int(r[6]) for r, _ in keys_in(listing) if r[0] == "sub"]
    public = carol.public_key
    cli.ok("member", "add", news, "carol@example.org", "--key", "-", input=public)
    [carol] = cli.json("member", "list", news)
    expected = datetime.fromtimestamp(sub_expiry, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert carol["key_expires"] == expected


def test_check_fingerprint():
    assert check_fingerprint("abcd " * 10) == "ABCD" * 10
    with pytest.raises(KeyProblem):
        check_fingerprint("ABCD")


# -- the GnuPG version check --------------------------------------------------------------

def run_listserv(tmp_path: Path, path: str, *args: str) -> subprocess.CompletedProcess:
    """The real command in a child process, with PATH as given (so a fake gpg can stand in)."""
    return subprocess.run(
        [sys.executable, "-c", "from listserv.cli import main; main()", "--home", str(tmp_path / "home"), *args],
        capture_output=True, text=True, env={"PATH": path, "LANG": "C.UTF-8"},
    )


def fake_gpg(tmp_path: Path, body: str) -> str:
    folder = tmp_path / "fakebin"
    folder.mkdir()
    script = folder / "gpg"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(folder)


def test_the_installed_gnupg_is_new_enough():
    assert gnupg_version() >= MIN_GNUPG >= (2, 2, 8)


@pytest.mark.parametrize("version", ["2.2.19", "2.1.18", "1.4.23"])
def test_an_old_gnupg_is_refused_with_a_clear_message(tmp_path, version):
    fakebin = fake_gpg(tmp_path, f'echo "cfg:version:{version}"')
    result = run_listserv(tmp_path, fakebin, "init")
    assert result.returncode == 69, result
    assert result.stderr == (f"listserv: GnuPG {version} is too old; listserv needs GnuPG "
                             f"{'.'.join(map(str, MIN_GNUPG))} or newer.\n")
    assert not (tmp_path / "home").exists()


def test_a_broken_or_missing_gnupg_is_refused(tmp_path):
    fakebin = fake_gpg(tmp_path, "echo 'gpg: fatal' >&2; exit 2")
    result = run_listserv(tmp_path, fakebin, "init")
    assert (result.returncode, result.stderr) == (
        69, "listserv: 'gpg' does not run as GnuPG; install GnuPG 2.2.20 or newer.\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_listserv(tmp_path, str(empty), "init")
    assert (result.returncode, result.stderr) == (
        69, "listserv: GnuPG is not installed; install it (Debian: apt-get install gnupg).\n")
    assert "Traceback" not in result.stderr


def test_a_gpg_run_past_its_budget_is_stopped_and_is_no_verdict(cli, news, people, monkeypatch):
    """gpg killed at its deadline: a passing problem (GpgTimeout: neither a CryptoError, which
    would quarantine a post at fan-out, nor a Refusal), so the listener answers 451 and the
    sender's server tries again."""
    keyring = Keyring(cli.home / "keys")
    list_key = keyring.export(cli.json("list", "show", news)["fingerprint"]).encode()
    raw = mf.post(people["alice"], list_key)
    armored = raw[raw.index(b"-----BEGIN PGP MESSAGE"):]
    with pytest.raises(GpgTimeout):
        keyring.decrypt(armored, max_output=1 << 20, timeout=1e-6)
    assert not issubclass(GpgTimeout, (CryptoError, Refusal))
    monkeypatch.setattr(keyring_module, "VERIFY_TIMEOUT", 1e-6)
    with pytest.raises(GpgTimeout):
        open_message(raw, keyring)


def test_a_list_keys_encryption_key_ids_are_listed_once_while_the_keyring_is_unchanged(cli, news, people,
                                                                                       monkeypatch):
    """What open_message keeps gpg to for every post: the list key's encryption subkey, by the
    key id a key packet names. Asked per message, so not a gpg run per message."""
    fingerprint = cli.json("list", "show", news)["fingerprint"]
    [sub] = [row for row in listing_fields(cli, fingerprint) if row[0] == "sub"]
    keyring = Keyring(cli.home / "keys")
    calls = []
    listed = keyring.listed
    monkeypatch.setattr(keyring, "listed", lambda *args, **kwargs: calls.append(args) or listed(*args, **kwargs))
    assert keyring.encryption_ids(fingerprint) == {sub[4]}
    assert keyring.encryption_ids(fingerprint) == {sub[4]} and len(calls) == 1
    assert keyring.encryption_ids("F" * 40) == frozenset()
    keyring.import_keys(people["mallory"].public_key)  # any change to the keyring lists it again
    assert keyring.encryption_ids(fingerprint) == {sub[4]} and len(calls) == 3


@pytest.mark.parametrize("mdc_ok", [True, False])
def test_a_literal_past_the_limit_is_too_large_only_when_the_data_is_intact(cli, news, mdc_ok):
    """A literal that says it is 2 GB long. Intact, that is a post too large (552). With a
    wrong MDC -- what gpg makes of a key packet carrying a wrong session key, whose noise can
    begin with any length (CI saw it) -- it is undecryptable, the uniform 550."""
    keyring = Keyring(cli.home / "keys")
    certificate = keyring.export_public([cli.json("list", "show", news)["fingerprint"]])
    header = bytes([0xC0 | forge.LITERAL, 0xFF]) + (0x9000_0000).to_bytes(4, "big")
    data = forge.encrypt_to(certificate, header + b"b\0\0\0\0\0" + b"x" * 200, mdc_ok=mdc_ok)
    with pytest.raises(TooLarge if mdc_ok else Unauthorized) as refusal:
        keyring.decrypt(data, max_output=1 << 16)
    assert refusal.value.reason == ("plaintext-too-large" if mdc_ok else "not-decryptable")


def test_noise_from_a_wrong_session_key_is_undecryptable_whatever_gpg_makes_of_it(cli, news):
    """A key packet anyone adds with a wrong session key makes gpg decrypt noise; what its
    status then says of the noise (a literal, a packet in a strange place, a malformed line)
    varies with the noise, one time in a dozen or so. The verdict does not: the decryption
    failed. (The noise is seeded: the same every run.)"""
    keyring = Keyring(cli.home / "keys")
    certificate = keyring.export_public([cli.json("list", "show", news)["fingerprint"]])
    noise = random.Random(13)
    reasons = set()
    for _ in range(80):
        data = forge.encrypt_to(certificate, noise.randbytes(300), mdc_ok=False)
        with pytest.raises(Unauthorized) as refusal:
            keyring.decrypt(data, max_output=1 << 20)
        reasons.add(refusal.value.reason)
    assert reasons == {"not-decryptable"}
