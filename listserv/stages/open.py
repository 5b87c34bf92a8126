"""Open: check an incoming post's MIME structure, decrypt it and verify its one signature.

Accepted shapes (RFC 3156 and inline PGP):

    multipart/encrypted -> one sign+encrypt OpenPGP message    Thunderbird, Mutt, K-9, gpg -se, sq, rnp
    multipart/encrypted -> multipart/signed inside             Apple Mail with GPG Suite
    multipart/signed    -> detached signature, not encrypted   encrypted=False; a later stage decides
    text/plain          -> one armored PGP MESSAGE, or one clearsigned text

Anything a signature does not cover (a part beside the signed one, text outside the armor)
is refused, not dropped: members must never read words the signer did not sign.

Before gpg sees anything, the OpenPGP framing is checked here (listserv.openpgp): exactly
one armored block of the expected kind, its header lines dropped, and a packet sequence of a
shape real clients send. What gpg proved -- decrypted with integrity protection, exactly one
good signature by primary fingerprint F -- is the keyring's verdict (Keyring.decrypt and
Keyring.verify_detached, which read gpg's status from a channel of its own); this stage only
decides what each MIME shape requires of it. Membership, signature age and replay are
decided later, from `signer`, `signed_at` and `signature_id`.

Every list's secret key is in the one keyring, so gpg would open a message encrypted to list B
as readily at list A's address. Given `list_key`, gpg gets only the message's key packets for
that key (openpgp.only_to): a cross-post encrypted to A and B is then opened with A's key at
A, and `decrypted_with` says which list key opened it, for authorize to check.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, replace
from email.message import EmailMessage, MIMEPart

from .. import mime, openpgp
from ..errors import CryptoError, Malformed, Refusal, Unauthorized
from ..keyring import Decrypted, GpgTimeout, Keyring, Signature

log = logging.getLogger(__name__)

MAX_PLAINTEXT = 64 * 1024 * 1024  # gpg --max-output: a compression bomb stops here

_PGP_TYPES = ("multipart/encrypted", "multipart/signed", "application/pgp-encrypted",
              "application/pgp-signature")
# The armor lines of the only inline bodies accepted, in order.
_INLINE_SHAPES = (
    [b"-----BEGIN PGP MESSAGE-----", b"-----END PGP MESSAGE-----"],
    [b"-----BEGIN PGP SIGNED MESSAGE-----", b"-----BEGIN PGP SIGNATURE-----",
     b"-----END PGP SIGNATURE-----"],
)
_ARMOR_LINE = re.compile(rb"(?m)^-----(?:BEGIN|END) PGP [^\r\n]*")
# An inline signed or encrypted message inside signed text (a key block may be quoted freely).
_INLINE_START = re.compile(rb"(?m)^-----BEGIN PGP (?:SIGNED )?MESSAGE-----")


@dataclass(frozen=True)
class Opened:
    content: bytes  # the signed MIME entity (with its own, protected, headers), CRLF
    signer: str  # primary-key fingerprint from gpg's VALIDSIG
    signed_at: int  # signature creation time, unix seconds
    signature_id: str  # hex digest naming this exact signature, for replay detection
    encrypted: bool  # False for a signed-only submission
    in_reply_to: str | None  # from the signed content's own headers only
    references: str | None
    decrypted_with: str | None  # primary fingerprint of the key that opened it; None: not encrypted, or unknown


def open_message(raw: bytes, keyring: Keyring, *, list_key: str | None = None, accepted: bool = False) -> Opened:
    """Decrypt and verify a submission, or raise a Refusal whose `reason` says why.

    `list_key` (a list's fingerprint) keeps gpg to that key where the message has a key
    packet for it (see the module docstring). `accepted=True` opens again a submission that
    passed every check when it arrived (the fan-out worker does): a signing key or signature
    that has expired since is then no reason to drop a post already answered with 250. A
    revoked key still is."""
    try:
        return _Opener(keyring, list_key, accepted).open(raw)
    except (Refusal, GpgTimeout):  # a timeout is a passing problem: the sender may try again
        raise
    except Exception as exc:  # a bug must still end in a refusal, never a crashed session
        log.error("open: unexpected %s", type(exc).__name__)
        raise Unauthorized("internal-error") from None


@dataclass(frozen=True)
class _Shape:
    """What one MIME shape yielded: the signed content and how it was signed and encrypted."""

    content: bytes
    signature: Signature
    decrypted_with: str | None = None  # None: not encrypted
    encrypted: bool = False


def open_renewed(raw: bytes, keyring: Keyring, renewed: Keyring, *, list_key: str | None = None) -> Opened:
    """Open a submission as `open_message` does, but judge its signature by the keys in
    `renewed` (a scratch keyring holding the signer's key as a key update renews it,
    listserv.stages.renew): `keyring` only decrypts, and gives its session key to `renewed`."""
    return _Opener(keyring, list_key, False, renewed).open(raw)


class _Opener:
    def __init__(self, keyring: Keyring, list_key: str | None, accepted: bool, renewed: Keyring | None = None):
        self.keyring = keyring
        self.list_key = list_key
        self.accepted = accepted
        self.judge = renewed or keyring  # whose keys a signature is judged by
        self.renewed = renewed

    def open(self, raw: bytes) -> Opened:
        outer = mime.parse(raw)
        kind = outer.get_content_type()
        if kind == "multipart/encrypted":
            shape = self._encrypted(outer)
        elif kind == "multipart/signed":
            shape = _Shape(*self._detached(raw, outer))
        elif kind == "text/plain":
            shape = self._inline(outer)
        else:
            raise Unauthorized("unsigned-part" if _holds_pgp(outer) else "no-signature")
        content, signature = shape.content, shape.signature
        inner = mime.parse(content)
        _refuse_nested_signatures(inner)

        # SIG_ID is gpg's digest of the signature itself (class, time, signature values): the
        # same signature replayed in a new envelope or a new encryption keeps it.
        digest = hashlib.sha256(f"{signature.signer}\n{signature.sig_id}\n{signature.signed_at}".encode())
        return Opened(
            content=content,
            signer=signature.signer,
            signed_at=signature.signed_at,
            signature_id=digest.hexdigest(),
            encrypted=shape.encrypted,
            # Threading decides where members see a post: only the signed headers may set it.
            in_reply_to=mime.header(inner, "In-Reply-To"),
            references=mime.header(inner, "References"),
            decrypted_with=shape.decrypted_with,
        )

    # -- the three shapes -------------------------------------------------------

    def _encrypted(self, message: EmailMessage) -> _Shape:
        """RFC 3156 §4: a version part and one OpenPGP message, signed inside or wrapping multipart/signed."""
        if (message.get_param("protocol") or "").lower() != "application/pgp-encrypted":
            raise Malformed("bad-pgp-mime")
        parts = message.get_payload()
        if len(parts) > 2:
            raise Unauthorized("unsigned-part")
        if len(parts) != 2:
            raise Malformed("bad-pgp-mime")
        control, payload = parts
        if control.get_content_type() != "application/pgp-encrypted" \
                or (control.get_payload(decode=True) or b"").split() != [b"Version:", b"1"] \
                or payload.get_content_type() != "application/octet-stream":
            raise Malformed("bad-pgp-mime")
        decrypted = self._decrypt(self._packets(payload.get_payload(decode=True) or b"", "encrypted"))
        if not decrypted.encrypted:
            raise Unauthorized("not-decryptable")  # a signed-only message dressed as encrypted
        plaintext = mime.crlf(decrypted.content)
        if decrypted.signature is not None:
            return _Shape(plaintext, decrypted.signature, decrypted.decrypted_with, True)
        try:
            inner = mime.parse(plaintext)
        except Malformed:
            # Unsigned: whoever sent it learns nothing about what the list made of it.
            raise Unauthorized("no-signature") from None
        if inner.get_content_type() == "multipart/signed":
            return _Shape(*self._detached(plaintext, inner), decrypted.decrypted_with, True)
        raise Unauthorized("unsigned-part" if _holds_pgp(inner) else "no-signature")

    def _detached(self, entity: bytes, message: EmailMessage) -> tuple[bytes, Signature]:
        """RFC 3156 §5: the first part's bytes as transmitted, signed by the second part."""
        if (message.get_param("protocol") or "").lower() != "application/pgp-signature":
            raise Unauthorized("no-signature")
        parts = message.get_payload()
        if len(parts) > 2:
            raise Unauthorized("unsigned-part")
        if len(parts) != 2 or parts[1].get_content_type() != "application/pgp-signature":
            raise Malformed("bad-pgp-mime")
        raw_parts = mime.body_parts(entity, message.get_boundary() or "")
        if len(raw_parts) != len(parts):
            raise Malformed("ambiguous-structure")
        try:
            blocks = openpgp.read_armored(parts[1].get_payload(decode=True) or b"", "PGP SIGNATURE")
            count = sum(openpgp.signature_count(block) for block in blocks)
        except CryptoError:
            raise Unauthorized("bad-signature") from None  # e.g. a whole signed message in its place
        if count != 1:
            raise Unauthorized("multiple-signatures")
        try:
            signature = self.judge.verify_detached(blocks[0], raw_parts[0], allow_expired=self.accepted)
        except GpgTimeout:
            raise
        except CryptoError as exc:
            log.warning("open: gpg verify failed: %s", type(exc).__name__)
            raise Unauthorized("gpg-error") from None
        return raw_parts[0], signature

    def _inline(self, message: EmailMessage) -> _Shape:
        """One armored block filling a text/plain body; only whitespace may surround it."""
        body = (message.get_payload(decode=True) or b"").strip(b" \t\r\n")
        armor = [line.rstrip() for line in _ARMOR_LINE.findall(body)]
        expected = next((shape for shape in _INLINE_SHAPES if body.startswith(shape[0])), None)
        if expected is None:
            # An armored message behind some other text is unsigned text; anything else is no post.
            starts = {shape[0] for shape in _INLINE_SHAPES}
            raise Unauthorized("unsigned-part" if starts & set(armor) else "no-signature")
        if armor != expected or not body.endswith(expected[-1]):
            raise Unauthorized("unsigned-part")
        if expected is _INLINE_SHAPES[0]:
            data = self._packets(body, "signed")
        else:
            _clearsigned_signature(body)
            data = body  # the cleartext framework: gpg reads the armor itself
        decrypted = self._decrypt(data)
        if decrypted.signature is None:
            raise Unauthorized("no-signature")
        return _Shape(text_entity(decrypted.content, message.get_content_charset()), decrypted.signature,
                      decrypted.decrypted_with, decrypted.encrypted)

    def _packets(self, payload: bytes, expect: str) -> bytes:
        """The binary message in `payload`, with only the list key's key packets if it has any."""
        data = message_packets(payload, expect)
        if self.list_key is None:
            return data
        try:
            return openpgp.only_to(data, self.keyring.encryption_ids(self.list_key))
        except GpgTimeout:
            raise
        except CryptoError as exc:
            log.warning("open: gpg listing failed: %s", type(exc).__name__)
            raise Unauthorized("gpg-error") from None

    def _decrypt(self, data: bytes) -> Decrypted:
        try:
            if self.renewed is not None and _encrypted_packets(data):
                session, opened_by = self.keyring.session_key_of(data, max_output=MAX_PLAINTEXT)
                decrypted = self.renewed.decrypt(data, max_output=MAX_PLAINTEXT, session_key=session)
                return replace(decrypted, decrypted_with=opened_by)
            return self.judge.decrypt(data, max_output=MAX_PLAINTEXT, allow_expired=self.accepted)
        except GpgTimeout:
            raise
        except CryptoError as exc:
            log.warning("open: gpg decrypt failed: %s", type(exc).__name__)
            raise Unauthorized("gpg-error") from None


def message_packets(payload: bytes, expect: str) -> bytes:
    """The binary OpenPGP message an armored payload carries, if it has a shape real clients
    send. `expect` names the reason a refusal gives for a payload that is none at all."""
    try:
        [data] = openpgp.read_armored(payload, "PGP MESSAGE")
        openpgp.message_kind(data)
    except (CryptoError, ValueError):
        raise Unauthorized("not-decryptable" if expect == "encrypted" else "no-signature") from None
    return data


def _encrypted_packets(data: bytes) -> bool:
    try:
        return openpgp.message_kind(data) == "encrypted"
    except CryptoError:
        return False  # a cleartext-signed text: armor, not packets


def _clearsigned_signature(body: bytes) -> None:
    """The signature block of a cleartext-signed text holds signatures only."""
    start = body.rindex(b"-----BEGIN PGP SIGNATURE-----")
    try:
        for block in openpgp.read_armored(body[start:], "PGP SIGNATURE"):
            openpgp.signature_count(block)
    except CryptoError:
        raise Unauthorized("bad-signature") from None


def _refuse_nested_signatures(content: EmailMessage) -> None:
    """Signed content must not itself hold a signed entity: whoever signed the inner one
    (maybe no member at all) would be read as speaking in the outer signer's name."""
    for part in content.walk():
        if part.get_content_type() in ("multipart/signed", "application/pgp-signature",
                                       "multipart/encrypted", "application/pgp-encrypted"):
            raise Unauthorized("multiple-signatures")
        if part.get_content_maintype() == "text" and not part.is_multipart() \
                and _INLINE_START.search(part.get_payload(decode=True) or b""):
            raise Unauthorized("multiple-signatures")


def text_entity(data: bytes, charset: str | None) -> bytes:
    """A text/plain entity holding the verified text, re-encoded as UTF-8."""
    entity = MIMEPart(policy=mime.POLICY)
    entity.set_content(_decode(data, charset), charset="utf-8")
    return entity.as_bytes()


def _decode(data: bytes, charset: str | None) -> str:
    for codec in ("utf-8", charset or "utf-8"):
        try:
            return data.decode(codec)
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("latin-1")


def _holds_pgp(message: EmailMessage) -> bool:
    """Whether any part is OpenPGP: then what lies beside it is unsigned, not just unsigned mail."""
    for part in message.walk():
        if part.get_content_type() in _PGP_TYPES:
            return True
        if part.get_content_maintype() == "text" and not part.is_multipart() \
                and _ARMOR_LINE.search(part.get_payload(decode=True) or b""):
            return True
    return False
