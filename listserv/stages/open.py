"""Open: check an incoming post's MIME structure, decrypt it and verify its one signature.

Accepted shapes (RFC 3156 and inline PGP):

    multipart/encrypted -> one sign+encrypt OpenPGP message    Thunderbird, Mutt, K-9, gpg -se, sq, rnp
    multipart/encrypted -> multipart/signed inside             Apple Mail with GPG Suite
    multipart/signed    -> detached signature, not encrypted   encrypted=False; a later stage decides
    text/plain          -> one armored PGP MESSAGE, or one clearsigned text

Anything a signature does not cover (a part beside the signed one, text outside the armor)
is refused, not dropped: members must never read words the signer did not sign.

gpg's [GNUPG:] status lines (from the keyring) are read here directly. python-gnupg's summary is not consulted:
its `status` reads "signature valid" after a signature by an expired or revoked key, and it
hands back plaintext, with `valid` True, when the integrity check failed (no MDC).
Membership, signature age and replay are decided later, from `signer`, `signed_at` and
`signature_id`.
"""

from __future__ import annotations

from contextvars import ContextVar

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage, MIMEPart

from .. import mime
from ..errors import CryptoError, Malformed, Refusal, TooLarge, Unauthorized
from ..keyring import Keyring

log = logging.getLogger(__name__)

MAX_PLAINTEXT = 64 * 1024 * 1024  # gpg --max-output: a compression bomb stops here

_FINGERPRINT = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")
# Set by open_message(accepted=True) for the thread that runs it (see there).
_ACCEPTED: ContextVar[bool] = ContextVar("listserv_open_accepted", default=False)
_SIGNATURE_VERDICTS = ("GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG")
_PGP_TYPES = ("multipart/encrypted", "multipart/signed", "application/pgp-encrypted",
              "application/pgp-signature")
# The armor lines of the only inline bodies accepted, in order.
_INLINE_SHAPES = (
    [b"-----BEGIN PGP MESSAGE-----", b"-----END PGP MESSAGE-----"],
    [b"-----BEGIN PGP SIGNED MESSAGE-----", b"-----BEGIN PGP SIGNATURE-----",
     b"-----END PGP SIGNATURE-----"],
)
_ARMOR_LINE = re.compile(rb"(?m)^-----(?:BEGIN|END) PGP [^\r\n]*")


@dataclass(frozen=True)
class Opened:
    content: bytes  # the signed MIME entity (with its own, protected, headers), CRLF
    signer: str  # primary-key fingerprint from gpg's VALIDSIG
    signed_at: int  # signature creation time, unix seconds
    signature_id: str  # hex digest naming this exact signature, for replay detection
    encrypted: bool  # False for a signed-only submission
    outer_subject: str | None  # for clients that do not protect headers
    in_reply_to: str | None  # from the innermost headers that have it
    references: str | None


@dataclass(frozen=True)
class _Signature:
    signer: str
    signed_at: int
    signature_id: str


class _Status:
    """gpg's status lines ([GNUPG:] KEYWORD args...) in order, and its exit code."""

    def __init__(self, lines: list[str], returncode: int):
        self.lines = [line[9:].split() for line in lines
                      if line.startswith("[GNUPG:] ") and line[9:].strip()]
        self.returncode = returncode

    def all(self, keyword: str) -> list[list[str]]:
        return [fields[1:] for fields in self.lines if fields[0] == keyword]

    def count(self, keyword: str) -> int:
        return len(self.all(keyword))

    def positions(self, keyword: str) -> list[int]:
        return [i for i, fields in enumerate(self.lines) if fields[0] == keyword]


def open_message(raw: bytes, keyring: Keyring, *, accepted: bool = False) -> Opened:
    """Decrypt and verify a submission, or raise a Refusal whose `reason` says why.

    `accepted=True` opens again a submission that passed every check when it arrived (the
    fan-out worker does): a signing key or signature that has expired since is then no
    reason to drop a post already answered with 250. A revoked key still is."""
    token = _ACCEPTED.set(accepted)
    try:
        return _open(raw, keyring)
    except Refusal:
        raise
    except Exception as exc:  # a bug must still end in a refusal, never a crashed session
        log.error("open: unexpected %s", type(exc).__name__)
        raise Unauthorized("internal-error") from None
    finally:
        _ACCEPTED.reset(token)


def _open(raw: bytes, keyring: Keyring) -> Opened:
    outer = mime.parse(raw)
    kind = outer.get_content_type()
    if kind == "multipart/encrypted":
        content, signature = _open_encrypted(outer, keyring)
        encrypted = True
    elif kind == "multipart/signed":
        content, signature = _verify_detached(raw, outer, keyring)
        encrypted = False
    elif kind == "text/plain":
        content, signature, encrypted = _open_inline(outer, keyring)
    else:
        raise Unauthorized("unsigned-part" if _holds_pgp(outer) else "no-signature")
    # Threading decides where members see a post: only the signed headers may set it.
    inner = mime.parse(content)

    return Opened(
        content=content,
        signer=signature.signer,
        signed_at=signature.signed_at,
        signature_id=signature.signature_id,
        encrypted=encrypted,
        outer_subject=mime.header(outer, "Subject"),
        in_reply_to=mime.header(inner, "In-Reply-To"),
        references=mime.header(inner, "References"),
    )


# -- the three shapes ---------------------------------------------------------

def _open_encrypted(message: EmailMessage, keyring: Keyring) -> tuple[bytes, _Signature]:
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
    data, status = _decrypt(keyring, payload.get_payload(decode=True) or b"")
    _check_decryption(status, data, required=True)
    plaintext = mime.crlf(data)
    if _signature_count(status):
        signature = _signature(status)
        if status.returncode != 0:
            raise Unauthorized("bad-signature")
        # A member signed it, so a Malformed reply tells the sender, not an outsider, the truth.
        if mime.parse(plaintext).get_content_type() == "multipart/signed":
            raise Unauthorized("multiple-signatures")
        return plaintext, signature
    if status.returncode != 0:
        raise Unauthorized("not-decryptable")
    try:
        inner = mime.parse(plaintext)
    except Malformed:
        # Unsigned: whoever sent it learns nothing about what the list made of it.
        raise Unauthorized("no-signature") from None
    if inner.get_content_type() == "multipart/signed":
        return _verify_detached(plaintext, inner, keyring)
    raise Unauthorized("unsigned-part" if _holds_pgp(inner) else "no-signature")


def _verify_detached(entity: bytes, message: EmailMessage, keyring: Keyring) -> tuple[bytes, _Signature]:
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
    signed = raw_parts[0]
    status = _verify(keyring, parts[1].get_payload(decode=True) or b"", signed)
    if status.count("PLAINTEXT"):
        raise Unauthorized("bad-signature")  # a whole signed message where a detached one belongs
    signature = _signature(status)
    if status.returncode != 0:
        raise Unauthorized("bad-signature")
    return signed, signature


def _open_inline(message: EmailMessage, keyring: Keyring) -> tuple[bytes, _Signature, bool]:
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
    data, status = _decrypt(keyring, body)
    encrypted = _check_decryption(status, data)
    signature = _signature(status)
    if status.returncode != 0:
        raise Unauthorized("bad-signature")
    return _text_entity(data, message.get_content_charset()), signature, encrypted


def _text_entity(data: bytes, charset: str | None) -> bytes:
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


# -- gpg and its status lines -------------------------------------------------

def _decrypt(keyring: Keyring, data: bytes) -> tuple[bytes, _Status]:
    try:
        output, lines, returncode = keyring.decrypt_raw(data, MAX_PLAINTEXT)
    except CryptoError as exc:
        log.warning("open: gpg decrypt failed: %s", exc)
        raise Unauthorized("gpg-error") from None
    return output, _Status(lines, returncode)


def _verify(keyring: Keyring, signature: bytes, signed: bytes) -> _Status:
    try:
        lines, returncode = keyring.verify_detached(signature, signed)
    except CryptoError as exc:
        log.warning("open: gpg verify failed: %s", exc)
        raise Unauthorized("gpg-error") from None
    return _Status(lines, returncode)


def _check_decryption(status: _Status, data: bytes, required: bool = False) -> bool:
    """True if the input was encrypted and decrypted with integrity protection; False if it
    was not encrypted at all (a Refusal if `required`); a Refusal for anything else.
    Also: exactly one literal, inside the encryption."""
    too_long = any(f and f[0].isdigit() and int(f[0]) > MAX_PLAINTEXT for f in status.all("PLAINTEXT_LENGTH"))
    if too_long or (status.returncode != 0 and len(data) > MAX_PLAINTEXT - 65536):
        raise TooLarge("plaintext-too-large")
    encrypted = any(status.count(keyword) for keyword in (
        "ENC_TO", "BEGIN_DECRYPTION", "DECRYPTION_INFO", "DECRYPTION_FAILED", "NO_SECKEY",
        "NEED_PASSPHRASE_SYM"))
    if required and not encrypted:
        raise Unauthorized("not-decryptable")  # not OpenPGP, or a signed-only message dressed as encrypted
    if status.count("PLAINTEXT") != 1:
        raise Unauthorized("not-decryptable" if encrypted else "no-signature")
    if not encrypted:
        return False
    # DECRYPTION_INFO <mdc_method> <sym_algo> [<aead_algo>]: no MDC and no AEAD is the
    # malleable old SED packet, whose plaintext gpg still writes out before failing.
    infos = status.all("DECRYPTION_INFO")
    aead = any(len(f) > 2 and f[2] != "0" for f in infos)
    if any(f and f[0] == "0" and not aead for f in infos) \
            or any(f and f[0].startswith("nomdc") for f in status.all("ERROR")):
        raise Unauthorized("no-mdc")
    _refuse_bad_signatures(status)  # gpg stops decrypting after some of these: name the cause
    if status.count("DECRYPTION_FAILED") or status.count("BADMDC") \
            or status.count("DECRYPTION_OKAY") != 1 or status.count("BEGIN_DECRYPTION") != 1 \
            or status.count("END_DECRYPTION") != 1 or not (status.count("GOODMDC") or aead):
        raise Unauthorized("not-decryptable")
    # Everything signed and every literal must lie inside the one encrypted container.
    begin, end = status.positions("BEGIN_DECRYPTION")[0], status.positions("END_DECRYPTION")[0]
    for keyword in ("PLAINTEXT", "NEWSIG", *_SIGNATURE_VERDICTS):
        if any(not begin < i < end for i in status.positions(keyword)):
            raise Unauthorized("unsigned-part")
    return True


def _signature_count(status: _Status) -> int:
    return max(status.count("NEWSIG"), sum(status.count(k) for k in _SIGNATURE_VERDICTS))


def _signature(status: _Status) -> _Signature:
    """The one good signature in `status`; Unauthorized naming the first problem otherwise."""
    if _signature_count(status) == 0:
        raise Unauthorized("no-signature")
    _refuse_bad_signatures(status)
    valid, ids = status.all("VALIDSIG"), status.all("SIG_ID")
    good = status.count("GOODSIG")
    if _ACCEPTED.get():  # gpg says EXPKEYSIG/EXPSIG instead of GOODSIG once a key has expired
        good += status.count("EXPKEYSIG") + status.count("EXPSIG")
    if good != 1 or len(valid) != 1 or len(ids) != 1:
        raise Unauthorized("bad-signature")
    # VALIDSIG <fpr> <date> <timestamp> <expires> <version> <reserved> <pkalgo> <hashalgo>
    #          <class> [<primary fpr>]; class 00 binary or 01 text: a signature over data
    fields = valid[0]
    if len(fields) < 9 or fields[8] not in ("00", "01") or not ids[0]:
        raise Unauthorized("bad-signature")
    signer = (fields[9] if len(fields) > 9 else fields[0]).upper()
    if not _FINGERPRINT.match(signer):
        raise Unauthorized("bad-signature")
    signed_at = _timestamp(fields[2])
    # SIG_ID is gpg's digest of the signature itself (class, time, signature values): the
    # same signature replayed in a new envelope or a new encryption keeps it.
    digest = hashlib.sha256(f"{signer}\n{ids[0][0]}\n{signed_at}".encode()).hexdigest()
    return _Signature(signer, signed_at, digest)


def _refuse_bad_signatures(status: _Status) -> None:
    """Unauthorized if there is more than one signature or gpg found fault with one."""
    if _signature_count(status) > 1:
        raise Unauthorized("multiple-signatures")
    for keyword, reason in (("REVKEYSIG", "key-revoked"), ("EXPKEYSIG", "key-expired"),
                            ("EXPSIG", "signature-expired"), ("BADSIG", "bad-signature")):
        if keyword in ("EXPKEYSIG", "EXPSIG") and _ACCEPTED.get():
            continue
        if status.count(keyword):
            raise Unauthorized(reason)
    for fields in status.all("ERRSIG"):
        # ERRSIG <keyid> <pkalgo> <hashalgo> <sig_class> <time> <rc> [<fpr>]; rc 9: no public key
        unknown = status.count("NO_PUBKEY") or (len(fields) > 5 and fields[5] == "9")
        raise Unauthorized("unknown-key" if unknown else "bad-signature")


def _timestamp(text: str) -> int:
    """Seconds since the epoch, or ISO 8601 basic ("20250101T120000") as gpg may print it."""
    try:
        if "T" in text:
            when = datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
            return int(when.timestamp())
        return int(text)
    except ValueError:
        raise Unauthorized("bad-signature") from None
