"""Property tests (Hypothesis) of the status grammar, the verdict and the OpenPGP framing.

The streams mutated here are real: gpg's own status for real posts, captured at test time.
Examples are derandomized (the same ones every run, in CI too) and each property says what
must hold for *every* input: no exception but the defined ones, and never "signed by Alice"
unless gpg verified Alice's signature over exactly the content handed on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listserv import openpgp
from listserv.errors import CryptoError, Refusal, TooLarge, Unauthorized
from listserv.keyring import Keyring
from listserv.keyring.run import run as gpg_run
from listserv.keyring import status
from listserv.stages.open import open_message

from tests.helpers import forge
from tests.helpers import mail as mf
from tests.helpers.keys import User

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(PROPERTY, max_examples=40)  # each example runs gpg
DEFINED = (status.StatusError, Unauthorized, TooLarge)


@dataclass
class Streams:
    keyring: Keyring
    alice: User
    eve: forge.ForgedKey
    list_public: bytes
    eve_stream: bytes  # gpg's status for Eve's signed, encrypted post (notation, Signer's UID)
    alice_stream: bytes  # gpg's status for Alice's real post
    alice_post: bytes  # that post
    alice_content: bytes  # what Alice signed, as open_message hands it on


def status_of(keyring: Keyring, data: bytes) -> tuple[bytes, int]:
    result = gpg_run(keyring.home, [*keyring.options, "--decrypt"], data)
    return result.status, result.returncode


@pytest.fixture(scope="module")
def streams(tmp_path_factory, people) -> Streams:
    home = tmp_path_factory.mktemp("properties") / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    list_fpr = keyring.generate_list_key("news@example.org", "News")
    alice = people["alice"]
    keyring.import_keys(alice.public_key)
    eve = forge.ForgedKey(b"Eve <eve@example.com>")
    keyring.import_keys(eve.certificate())
    data = b"Content-Type: text/plain\r\n\r\nEve speaks.\r\n"
    signed = (eve.one_pass() + forge.literal(data, b"eve.txt")
              + eve.signature(data, hashed=[forge.notation(b"n@example.org", b"value"),
                                            forge.signers_uid(b"eve@example.com")]))
    eve_stream, rc = status_of(keyring, forge.encrypt_to(keyring.export_public([list_fpr]), signed))
    assert rc == 0
    public = keyring.export(list_fpr).encode()
    post = mf.post(alice, public, "Alice's own words.", style="pgpmime")
    opened = open_message(post, keyring)
    armored = post[post.index(b"-----BEGIN PGP MESSAGE-----"):post.index(b"-----END PGP MESSAGE-----") + 25]
    alice_stream, rc = status_of(keyring, armored)
    assert rc == 0
    return Streams(keyring, alice, eve, public, eve_stream, alice_stream, post, opened.content)


def judged(raw: bytes, returncode: int = 0) -> status.Judged:
    return status.judge(status.parse(raw), returncode)


# -- the grammar ----------------------------------------------------------------

@PROPERTY
@given(st.binary(max_size=400))
def test_any_bytes_parse_to_lines_or_a_status_error(raw):
    try:
        lines = status.parse(raw)
    except status.StatusError:
        return
    assert len(lines) == raw.count(b"\n")
    for line in lines:
        spec = status.GRAMMAR[line.keyword]
        assert len(spec.fields) <= len(line.args) <= len(spec.fields) + len(spec.optional)


# Lines whose last field is free text, and how many fixed fields come before it.
FREE_TEXT_LINES = {b"PLAINTEXT": 2, b"NEWSIG": 0, b"GOODSIG": 1, b"NOTATION_DATA": 0, b"NOTATION_NAME": 0}
# Anything gpg can write in a free-text field: every byte but the line end, which it escapes.
FREE_TEXT = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"%0A"))


def _replace_free_text(stream: bytes, texts: list[bytes]) -> bytes:
    out = []
    for line in stream.split(b"\n"):
        keyword, _, rest = line.removeprefix(status.PREFIX).partition(b" ")
        fixed = FREE_TEXT_LINES.get(keyword)
        if line.startswith(status.PREFIX) and fixed is not None:
            kept = rest.split(b" ")[:fixed]
            line = b" ".join([status.PREFIX + keyword, *kept, texts[len(out) % len(texts)]])
        out.append(line)
    return b"\n".join(out)


@PROPERTY
@given(st.lists(FREE_TEXT, min_size=1, max_size=6))
def test_no_free_text_makes_eve_alice(streams, texts):
    """Whatever Eve's packets make gpg write into file names, user ids, notations and the
    Signer's UID (forged status lines with any separator but the one gpg escapes), the
    verdict is Eve's signature or a refusal -- never Alice's."""
    mutated = _replace_free_text(streams.eve_stream, texts)
    try:
        result = judged(mutated)
    except DEFINED:
        return
    assert result.signature is not None and result.signature.signer == streams.eve.fingerprint


def _lines(stream: bytes) -> list[bytes]:
    return stream.rstrip(b"\n").split(b"\n")


@PROPERTY
@given(st.data())
def test_reordered_dropped_or_repeated_lines_never_yield_an_unproven_signature(streams, data):
    """Delete, repeat, move or borrow lines (from Alice's real stream) in Eve's stream: the
    verdict only ever names a signer whose GOODSIG and VALIDSIG stand together, alone, in
    the one signature of a decryption with integrity protection; nothing raises but the
    defined errors."""
    own, other = _lines(streams.eve_stream), _lines(streams.alice_stream)
    lines = list(own)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["drop", "repeat", "move", "borrow"]))
        i = data.draw(st.integers(0, len(lines) - 1))
        if action == "drop" and len(lines) > 1:
            del lines[i]
        elif action == "repeat":
            lines.insert(i, lines[i])
        elif action == "move":
            lines.insert(data.draw(st.integers(0, len(lines) - 1)), lines.pop(i))
        else:
            lines.insert(i, data.draw(st.sampled_from(other)))
    mutated = b"\n".join(lines) + b"\n"
    try:
        result = judged(mutated)
    except DEFINED:
        return
    signature = result.signature
    assert result.encrypted and signature is not None
    parsed = status.parse(mutated)
    keywords = [line.keyword for line in parsed]
    assert keywords.count("NEWSIG") == 1 and keywords.count("VALIDSIG") == 1
    assert keywords.count("PLAINTEXT") == 1 and keywords.count("DECRYPTION_OKAY") == 1
    assert sum(keywords.count(k) for k in ("GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG")) == 1
    valid = next(line for line in parsed if line.keyword == "VALIDSIG")
    good = next(line for line in parsed if line.keyword == "GOODSIG")
    assert valid.args[-1] == signature.signer and valid.args[0].endswith(good.args[0])
    begin, end = keywords.index("BEGIN_DECRYPTION"), keywords.index("END_DECRYPTION")
    assert begin < keywords.index("PLAINTEXT") < keywords.index("NEWSIG") < keywords.index("VALIDSIG") < end
    if signature.signer == streams.alice.fingerprint:
        # Only lines gpg wrote for Alice's real post can name her, and all of them had to be borrowed.
        assert set(lines) - set(own) <= set(other)


# -- the OpenPGP and MIME framing, with real gpg behind them -----------------------

@PROPERTY
@given(st.binary(max_size=600))
def test_openpgp_framing_raises_only_crypto_errors(data):
    for check in (openpgp.message_kind, openpgp.signature_count):
        try:
            check(data)
        except CryptoError:
            pass
    try:
        openpgp.read_armored(b"-----BEGIN PGP MESSAGE-----\r\n\r\n" + data + b"\r\n-----END PGP MESSAGE-----",
                             "PGP MESSAGE")
    except CryptoError:
        pass


MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.floats(0, 1), st.binary(min_size=1, max_size=8))


def _mutate(raw: bytes, mutations) -> bytes:
    out = bytearray(raw)
    for kind, where, junk in mutations:
        at = min(int(where * len(out)), len(out) - 1)
        if kind == "flip":
            out[at] ^= junk[0] or 1
        elif kind == "insert":
            out[at:at] = junk
        else:
            del out[at:at + len(junk)]
    return bytes(out)


@SLOW
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_a_mutated_member_post_is_refused_or_opens_as_exactly_what_she_signed(streams, mutations):
    """Bytes changed anywhere in Alice's real post: either a Refusal, or Alice's signature
    over exactly the content she signed (only the unsigned envelope was touched)."""
    raw = _mutate(streams.alice_post, mutations)
    try:
        opened = open_message(raw, streams.keyring)
    except Refusal:
        return
    assert opened.signer == streams.alice.fingerprint
    assert opened.content == streams.alice_content


@pytest.fixture(scope="module")
def signed_posts(streams) -> dict[str, tuple[bytes, bytes]]:
    """Alice's signed-only posts of each style, with the content each opens to."""
    made = {}
    for style in ("signed", "clearsign", "inline-signed"):
        post = mf.post(streams.alice, None, "Signed, not sealed.", style=style)
        made[style] = (post, open_message(post, streams.keyring).content)
    return made


@SLOW
@given(st.lists(MUTATION, min_size=1, max_size=3), st.sampled_from(["signed", "clearsign", "inline-signed"]))
def test_a_mutated_signed_only_post_is_refused_or_exact(streams, signed_posts, mutations, style):
    post, expected = signed_posts[style]
    try:
        opened = open_message(_mutate(post, mutations), streams.keyring)
    except Refusal:
        return
    assert (opened.signer, opened.content) == (streams.alice.fingerprint, expected)


def test_status_of_a_real_post_is_alices(streams):
    """The streams the properties start from are what they claim to be."""
    assert judged(streams.alice_stream).signature.signer == streams.alice.fingerprint
    assert judged(streams.eve_stream).signature.signer == streams.eve.fingerprint
    assert time.time() - judged(streams.alice_stream).signature.signed_at < 3600


def _with_lines(stream: bytes, keyword: bytes, replace) -> bytes:
    """`stream` with each line of `keyword` replaced by the lines `replace(line)` returns."""
    out = []
    for line in _lines(stream):
        out += replace(line) if line.startswith(status.PREFIX + keyword + b" ") else [line]
    return b"\n".join(out) + b"\n"


def test_the_verdict_names_the_key_that_opened_the_post_for_a_named_or_a_hidden_recipient(streams):
    """DECRYPTION_KEY's primary fingerprint, also when the key packet named no key (the
    wildcard id of a hidden recipient, which gpg answers by trying each secret key)."""
    list_fpr = mf.key_fingerprint(streams.list_public)
    assert judged(streams.alice_stream).decrypted_with == list_fpr
    hidden = _with_lines(streams.alice_stream, b"ENC_TO", lambda line: [
        b" ".join([status.PREFIX + b"ENC_TO", b"0" * 16, *line.split(b" ")[3:]])])
    assert hidden != streams.alice_stream
    assert judged(hidden).decrypted_with == list_fpr


def test_no_decryption_key_or_two_name_no_key(streams):
    """Then nothing says which list's key opened it, and no list takes it (authorize)."""
    dropped = _with_lines(streams.alice_stream, b"DECRYPTION_KEY", lambda line: [])
    assert judged(dropped).encrypted and judged(dropped).decrypted_with is None
    other = streams.eve.fingerprint.encode()
    doubled = _with_lines(streams.alice_stream, b"DECRYPTION_KEY", lambda line: [
        line, b" ".join([status.PREFIX + b"DECRYPTION_KEY", other, other, b"u"])])
    assert judged(doubled).decrypted_with is None
