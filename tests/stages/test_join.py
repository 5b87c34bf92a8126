"""listserv.stages.join: a request to join, signed by a key the list does not hold, is opened by
the one key it carries -- only when that key made the signature and the request holds nothing
but x-join; anything else keeps the outsider's `unknown-key` refusal."""

from __future__ import annotations

import pytest

from listserv.errors import Unauthorized
from listserv.keyring import Keyring
from listserv.model import Kind
from listserv.stages.join import open_request, signed_from
from tests.helpers import mail as mf
from tests.helpers.keys import make_gpg_user

LIST, REQUEST = "news@example.org", "news-request@example.org"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    base = tmp_path_factory.mktemp("join")
    (base / "keys").mkdir(mode=0o700)
    keyring = Keyring(base / "keys")
    list_fpr = keyring.generate_list_key(LIST, "News")
    ivy = make_gpg_user(base, "Ivy", "ivy@example.net")
    other = make_gpg_user(base, "Otto", "otto@example.net")
    return keyring, list_fpr, keyring.export(list_fpr).encode(), ivy, other


def join_request(user, list_key: bytes, key: bytes, lines: str = "x-join: CODE") -> bytes:
    body = mf.text_part(f"x-list-name: {LIST}\n{lines}\n")
    inner = mf.protected(user, REQUEST, "join", {}, body, b"Content-Type: application/pgp-keys\r\n\r\n" + mf.crlf(key))
    return mf.message(mf.headers(user, to=REQUEST), mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner)))


def test_a_join_signed_by_the_key_it_carries_is_opened_by_that_key(home):
    keyring, list_fpr, list_key, ivy, _ = home
    opened = open_request(join_request(ivy, list_key, ivy.public_key), keyring, {}, list_fpr, Kind.REQUEST)
    assert opened.signer == ivy.fingerprint and opened.decrypted_with == list_fpr
    assert signed_from(opened.content) == ivy.email
    assert ivy.fingerprint not in {k.fingerprint for k in keyring.listed()}  # staged, never adopted


@pytest.mark.parametrize("case", ["another key attached", "more than x-join", "a post, not a request"])
def test_anything_else_by_an_unknown_key_keeps_the_outsiders_refusal(home, case):
    keyring, list_fpr, list_key, ivy, other = home
    key = other.public_key if case == "another key attached" else ivy.public_key
    lines = "x-join: CODE\nx-status" if case == "more than x-join" else "x-join: CODE"
    kind = Kind.POST if case == "a post, not a request" else Kind.REQUEST
    with pytest.raises(Unauthorized) as refused:
        open_request(join_request(ivy, list_key, key, lines), keyring, {}, list_fpr, kind)
    assert refused.value.reason == "unknown-key"
