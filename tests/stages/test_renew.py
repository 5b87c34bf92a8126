"""listserv.stages.renew: what key data a signed content offers, and a submission signed by an
expired pinned key judged again by the renewed copy it carries -- only when that copy is the
same key, newer, and usable now."""

from __future__ import annotations

import base64
import time

import pytest

from listserv.errors import Unauthorized
from listserv.keyring import Keyring
from listserv.model import Member
from listserv.stages.renew import offered_keys, open_with_renewal

from tests.helpers import mail as mf
from tests.helpers.keys import fingerprints, make_gpg_key, make_gpg_user

LIST = "news@example.org"


def content(*headers: str, parts: tuple[bytes, ...] = ()) -> bytes:
    text = mf.text_part("Hello.")
    if not parts:
        return mf.crlf("\r\n".join([*headers, ""]).encode()) + text
    return mf.multipart("multipart/mixed", [text, *parts], extra_headers=headers)


def autocrypt(data: bytes, name: str = "Autocrypt") -> str:
    return f"{name}: addr=a@example.org; prefer-encrypt=mutual; keydata=" + base64.b64encode(data).decode()


def test_offered_keys_are_the_attachments_and_the_autocrypt_keydata_of_the_signed_content():
    key_part = b"Content-Type: application/pgp-keys\r\n\r\n" + mf.crlf(b"ATTACHED")
    found = offered_keys(content(autocrypt(b"AUTOCRYPT"), autocrypt(b"GOSSIP", "Autocrypt-Gossip"),
                                 "Autocrypt: addr=a@example.org; keydata=***not base64***", parts=(key_part,)))
    assert found == (b"ATTACHED", b"AUTOCRYPT")  # never a gossiped key, nor one that cannot be read
    assert offered_keys(content("Subject: no keys")) == ()


@pytest.fixture(scope="module")
def expired_member(tmp_path_factory):
    """A home whose list pins Dan's key, which has just expired; Dan has renewed it at home."""
    base = tmp_path_factory.mktemp("renew")
    (base / "keys").mkdir(mode=0o700)
    keyring = Keyring(base / "keys")
    list_fpr = keyring.generate_list_key(LIST, "News")
    made = int(time.time()) - 86400 + 4
    dan = make_gpg_key(base, "Dan", "dan@example.org", expire="1d", at=f"{made}!",
                       subkeys=[("cv25519", "1d", f"{made}!")])
    keyring.import_keys(dan.public_key)
    while not held_expired(keyring, dan):
        time.sleep(0.5)
    list_key = keyring.export(list_fpr).encode()
    members = {dan.fingerprint: Member(LIST, dan.email, dan.fingerprint, "Dan")}
    return keyring, list_fpr, list_key, dan, members


def held_expired(keyring: Keyring, user) -> bool:
    with keyring.stage(user.public_key, known=(user.fingerprint,)) as staged:
        return staged.keys[0].expired


def signed_by(user, list_key: bytes, *parts: bytes, headers: dict | None = None) -> bytes:
    inner = mf.protected(user, LIST, "news", headers or {}, mf.text_part("Still me."), *parts)
    return mf.message(mf.headers(user), mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner)))


def key_file(data: bytes) -> bytes:
    return b"Content-Type: application/pgp-keys\r\n\r\n" + mf.crlf(data)


def test_an_expired_signer_is_refused_unless_the_renewed_key_it_carries_makes_the_signature_good(
        expired_member, tmp_path):
    keyring, list_fpr, list_key, dan, members = expired_member
    mallory = make_gpg_user(tmp_path, "Mallory", "mallory@example.com")
    dan.gpg("--quick-set-expire", dan.fingerprint, "1y")  # the primary only: the signing key is Dan's primary
    [subkey] = fingerprints(dan.gpg("--with-colons", "--list-keys", dan.fingerprint).stdout)[1:]
    plain = signed_by(dan, list_key)
    with pytest.raises(Unauthorized) as refused:
        open_with_renewal(plain, keyring, members, list_key=list_fpr)
    assert refused.value.reason == "key-expired"
    # Renewed but still without a usable encryption subkey: not usable now, so not taken.
    half = dan.gpg("--armor", "--export", dan.fingerprint).stdout
    with pytest.raises(Unauthorized) as refused:
        open_with_renewal(signed_by(dan, list_key, key_file(half)), keyring, members, list_key=list_fpr)
    assert refused.value.reason == "key-expired"
    # Another key attached is no renewal of Dan's.
    with pytest.raises(Unauthorized):
        open_with_renewal(signed_by(dan, list_key, key_file(mallory.public_key)), keyring, members, list_key=list_fpr)
    dan.gpg("--quick-set-expire", dan.fingerprint, "1y", subkey)
    whole = dan.gpg("--export", dan.fingerprint).stdout
    opened = open_with_renewal(signed_by(dan, list_key, headers={"Autocrypt": autocrypt(whole)[len("Autocrypt: "):]}),
                               keyring, members, list_key=list_fpr)
    assert (opened.signer, opened.decrypted_with, opened.encrypted) == (dan.fingerprint, list_fpr, True)
    # Nothing was written: the list's copy is still the expired one until the update is taken in.
    assert held_expired(keyring, dan)
    # Not a member: the expired refusal stands, whatever is attached.
    with pytest.raises(Unauthorized) as refused:
        open_with_renewal(signed_by(dan, list_key, key_file(whole)), keyring, {}, list_key=list_fpr)
    assert refused.value.reason == "key-expired"
