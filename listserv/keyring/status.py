"""GnuPG's status protocol: a grammar for each line, and the verdict over a whole run.

    parse(raw) -> (Line, ...)          every line checked against its keyword's grammar
    judge(lines, ...) -> Judged        what a decryption/verification run proved, or Unauthorized

The status bytes come from a channel that carries nothing else (keyring.run). They are cut
at b"\\n" only -- never with str.splitlines(), which also breaks at \\r, \\v, \\f, \\x1c-\\x1e,
U+0085, U+2028 and U+2029 -- and each line must be `[GNUPG:] KEYWORD ARGS` with a keyword
this module knows and arguments of the shape GnuPG's doc/DETAILS gives that keyword. Free
text (user ids, file names, notations) is only ever the last field of its line and is never
interpreted. Anything else is a StatusError: a run that says something unexpected proves
nothing.

`judge` is a small state machine over the lines of one `gpg --decrypt` or `gpg --verify`:

    run        := key-lines* [decryption] | key-lines* content
    decryption := BEGIN_DECRYPTION DECRYPTION_INFO content (DECRYPTION_OKAY GOODMDC?) END_DECRYPTION
    content    := PLAINTEXT PLAINTEXT_LENGTH? signature*      (no PLAINTEXT for a detached --verify)
    signature  := NEWSIG [SIG_ID] verdict [VALIDSIG] info*

and it accepts exactly: at most one decryption, with integrity protection (MDC or AEAD),
exactly one literal inside it, at most one signature, inside it, whose verdict is GOODSIG
(or EXPKEYSIG/EXPSIG when `allow_expired`) followed by a VALIDSIG for the same key, a SIG_ID
with the same time, a signature over data (class 00 or 01), and the exit code 0.

It also says which key opened the message: gpg writes DECRYPTION_KEY <subkey> <primary>
<trust> once, before the decryption, for the key whose packet gave the session key. The
ENC_TO lines are not reported: they only repeat what the key packets claim, and anyone can
add a key packet naming any key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import CryptoError, TooLarge, Unauthorized

PREFIX = b"[GNUPG:] "
_LINE = re.compile(rb"\[GNUPG:\] ([A-Z][A-Z0-9_]*)(?: (.*))?\Z", re.S)

# Field shapes. Free text is TEXT and may only come last.
HEX = re.compile(r"[0-9A-Fa-f]+\Z")
KEYID = re.compile(r"[0-9A-F]{16}\Z|[0-9A-F]{40}\Z|[0-9A-F]{64}\Z")
FPR = re.compile(r"[0-9A-F]{40}\Z|[0-9A-F]{64}\Z")
INT = re.compile(r"-?[0-9]+\Z")
TIME = re.compile(r"[0-9]+\Z|[0-9]{8}T[0-9]{6}\Z")  # seconds, or ISO 8601 basic
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z|[0-9]{8}T[0-9]{6}\Z|[0-9]+\Z")
WORD = re.compile(r"[!-~]+\Z")  # one printable ASCII token
B64 = re.compile(r"[A-Za-z0-9+/=]+\Z")
TEXT = None


@dataclass(frozen=True)
class Spec:
    fields: tuple  # required fields, in order
    optional: tuple = ()  # fields that may follow


def _s(*fields, optional=()) -> Spec:
    return Spec(tuple(fields), tuple(optional))


# The keywords gpg 2.2 and 2.4 write for the operations listserv runs (doc/DETAILS).
GRAMMAR: dict[str, Spec] = {
    # decryption
    "ENC_TO": _s(KEYID, INT, INT),
    "KEY_CONSIDERED": _s(FPR, INT),
    "DECRYPTION_KEY": _s(FPR, FPR, WORD),
    "NO_SECKEY": _s(KEYID),
    "BEGIN_DECRYPTION": _s(),
    "END_DECRYPTION": _s(),
    "DECRYPTION_COMPLIANCE_MODE": _s(WORD, optional=(WORD, WORD)),
    "DECRYPTION_INFO": _s(INT, INT, optional=(INT,)),
    "DECRYPTION_OKAY": _s(),
    "DECRYPTION_FAILED": _s(),
    "GOODMDC": _s(),
    "BADMDC": _s(),
    "SESSION_KEY": _s(WORD),
    "NEED_PASSPHRASE_SYM": _s(INT, INT, INT),
    "NEED_PASSPHRASE": _s(KEYID, KEYID, INT, INT),
    "USERID_HINT": _s(KEYID, optional=(TEXT,)),
    "PINENTRY_LAUNCHED": _s(INT, optional=(WORD, WORD, WORD, WORD, WORD)),
    "CANCELED_BY_USER": _s(),
    "MISSING_PASSPHRASE": _s(),
    "BAD_PASSPHRASE": _s(KEYID),
    "INQUIRE_MAXLEN": _s(INT),
    # the literal data
    "PLAINTEXT": _s(HEX, TIME, optional=(TEXT,)),
    "PLAINTEXT_LENGTH": _s(INT),
    # signatures
    "NEWSIG": _s(optional=(TEXT,)),
    "SIG_ID": _s(B64, DATE, TIME),
    "GOODSIG": _s(KEYID, optional=(TEXT,)),
    "EXPSIG": _s(KEYID, optional=(TEXT,)),
    "EXPKEYSIG": _s(KEYID, optional=(TEXT,)),
    "REVKEYSIG": _s(KEYID, optional=(TEXT,)),
    "BADSIG": _s(KEYID, optional=(TEXT,)),
    "ERRSIG": _s(KEYID, INT, INT, HEX, TIME, INT, optional=(WORD,)),
    "VALIDSIG": _s(FPR, DATE, TIME, TIME, INT, INT, INT, INT, HEX, optional=(FPR,)),
    "NO_PUBKEY": _s(KEYID),
    "KEYEXPIRED": _s(TIME),
    "KEYREVOKED": _s(),
    "SIGEXPIRED": _s(optional=(TIME,)),
    "TRUST_UNDEFINED": _s(optional=(WORD, WORD)),
    "TRUST_NEVER": _s(optional=(WORD, WORD)),
    "TRUST_MARGINAL": _s(optional=(WORD, WORD)),
    "TRUST_FULLY": _s(optional=(WORD, WORD)),
    "TRUST_ULTIMATE": _s(optional=(WORD, WORD)),
    "NOTATION_NAME": _s(TEXT),
    "NOTATION_FLAGS": _s(INT, INT),
    "NOTATION_DATA": _s(TEXT),
    "POLICY_URL": _s(TEXT),
    "VERIFICATION_COMPLIANCE_MODE": _s(WORD, optional=(WORD, WORD)),
    # signing, encrypting, keys
    "BEGIN_SIGNING": _s(optional=(WORD,)),
    "SIG_CREATED": _s(WORD, INT, INT, HEX, TIME, FPR),
    "BEGIN_ENCRYPTION": _s(INT, INT, optional=(INT,)),
    "END_ENCRYPTION": _s(),
    "INV_RECP": _s(INT, optional=(TEXT,)),
    "INV_SGNR": _s(INT, optional=(TEXT,)),
    "NO_RECP": _s(INT),
    "NO_SGNR": _s(INT),
    "KEY_CREATED": _s(WORD, FPR, optional=(TEXT,)),
    "KEY_NOT_CREATED": _s(optional=(TEXT,)),
    "PROGRESS": _s(optional=(TEXT,)),
    "IMPORTED": _s(KEYID, optional=(TEXT,)),
    "IMPORT_OK": _s(INT, optional=(FPR,)),
    "IMPORT_PROBLEM": _s(INT, optional=(WORD,)),
    "IMPORT_CHECK": _s(KEYID, optional=(WORD, TEXT)),
    "IMPORT_RES": _s(*([INT] * 13), optional=(INT, INT, INT)),
    "EXPORTED": _s(FPR),
    "EXPORT_RES": _s(INT, INT, INT),
    "DELETE_PROBLEM": _s(INT),
    # generic
    "NODATA": _s(INT),
    "UNEXPECTED": _s(INT),
    "ERROR": _s(WORD, INT, optional=(TEXT,)),
    "WARNING": _s(WORD, INT, optional=(TEXT,)),
    "FAILURE": _s(WORD, INT),
    "SUCCESS": _s(optional=(WORD,)),
    "FILE_START": _s(INT, optional=(TEXT,)),
    "FILE_DONE": _s(),
    "BEGIN_STREAM": _s(),
    "END_STREAM": _s(),
}


class StatusError(CryptoError):
    """A status line GnuPG would not write: nothing in that run counts."""


_GAVE_UP = re.compile(rb"(?m)^\[GNUPG:\] (?:DECRYPTION_FAILED|BADMDC)$")


def decryption_failed(raw: bytes) -> bool:
    """Whether a run's raw status says, on a line of its own, that the decryption failed. A
    key packet with a wrong session key (anyone can add one) makes gpg decrypt noise, and its
    status about that noise may be anything; this line is what it says of the data."""
    return bool(_GAVE_UP.search(raw))


@dataclass(frozen=True)
class Line:
    keyword: str
    args: tuple[str, ...]

    def __getitem__(self, index: int) -> str:
        return self.args[index]


def parse(raw: bytes) -> tuple[Line, ...]:
    """Every status line of one run, checked against GRAMMAR; StatusError for anything else."""
    if not raw:
        return ()
    if not raw.endswith(b"\n"):
        raise StatusError("GnuPG's status ends inside a line.")
    return tuple(parse_line(line) for line in raw[:-1].split(b"\n"))


def parse_line(raw: bytes) -> Line:
    match = _LINE.match(raw)
    if match is None or b"\r" in raw or b"\0" in raw:
        raise StatusError("GnuPG's status holds a line that is not a status line.")
    keyword = match.group(1).decode("ascii")
    spec = GRAMMAR.get(keyword)
    if spec is None:
        raise StatusError(f"GnuPG's status holds the unknown keyword {keyword}.")
    shapes = spec.fields + spec.optional
    rest = match.group(2)
    if rest is None:
        parts: list[bytes] = []
    elif shapes and shapes[-1] is TEXT:
        parts = rest.split(b" ", len(shapes) - 1)  # free text: the rest of the line, spaces and all
    else:
        parts = rest.split(b" ")
    if not len(spec.fields) <= len(parts) <= len(shapes):
        raise StatusError(f"GnuPG's status line {keyword} has {len(parts)} fields.")
    values = []
    for part, shape in zip(parts, shapes):
        if shape is TEXT:
            values.append(part.decode("utf-8", "replace"))  # shown to nobody, decided on by nothing
        elif part.isascii() and shape.match(part.decode("ascii")):
            values.append(part.decode("ascii"))
        else:
            raise StatusError(f"GnuPG's status line {keyword} has a malformed field.")
    return Line(keyword, tuple(values))


def timestamp(text: str) -> int:
    """Seconds since the epoch, or ISO 8601 basic ("20250101T120000") as gpg may print it."""
    if "T" in text:
        when = datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        return int(when.timestamp())
    return int(text)


# -- the verdict over one decryption or verification run -----------------------

_VERDICTS = ("GOODSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "BADSIG", "ERRSIG")
# Lines that say something about a key or an operation but decide nothing here.
_KEY_INFO = frozenset({"KEY_CONSIDERED", "KEYEXPIRED", "KEYREVOKED", "SIGEXPIRED", "PROGRESS",
                       "PINENTRY_LAUNCHED", "INQUIRE_MAXLEN", "USERID_HINT"})
_BEFORE_DECRYPTION = frozenset({"ENC_TO", "DECRYPTION_KEY", "NO_SECKEY", "NEED_PASSPHRASE",
                                "NEED_PASSPHRASE_SYM", "CANCELED_BY_USER", "MISSING_PASSPHRASE",
                                "BAD_PASSPHRASE"}) | _KEY_INFO
_SIGNATURE_INFO = frozenset({"TRUST_UNDEFINED", "TRUST_NEVER", "TRUST_MARGINAL", "TRUST_FULLY",
                             "TRUST_ULTIMATE", "NOTATION_NAME", "NOTATION_FLAGS", "NOTATION_DATA",
                             "POLICY_URL", "VERIFICATION_COMPLIANCE_MODE", "NO_PUBKEY"}) | _KEY_INFO
# What ends a run without a result: gpg found no data, or failed.
_FAILURES = frozenset({"NODATA", "UNEXPECTED", "FAILURE", "ERROR", "BADMDC", "DECRYPTION_FAILED"})


@dataclass(frozen=True)
class Signature:
    """One good signature, as gpg proved it."""

    signer: str  # primary-key fingerprint (VALIDSIG's last field)
    signing_key: str  # the (sub)key that made it
    signed_at: int  # creation time, unix seconds
    sig_id: str  # gpg's digest of the signature itself (SIG_ID)


@dataclass(frozen=True)
class Judged:
    encrypted: bool  # the input was encrypted (and decrypted with integrity protection)
    signature: Signature | None  # None: no signature at all (the caller decides if that will do)
    literal_length: int | None  # PLAINTEXT_LENGTH when gpg gave one
    decrypted_with: str | None  # primary fingerprint of the key that opened it; None: none, or two


@dataclass
class _Sig:
    sig_id: Line | None = None
    verdict: Line | None = None
    valid: Line | None = None
    errors: int = 0


@dataclass
class _State:
    decryption: str = "none"  # none -> open -> closed
    info: Line | None = None
    okay: int = 0
    mdc: int = 0
    literals: int = 0
    literal_outside: bool = False
    literal_length: int | None = None
    signature_outside: bool = False
    signatures: list[_Sig] | None = None
    failures: list[Line] | None = None
    no_seckey: bool = False
    symmetric: bool = False
    encrypted_to: int = 0
    decryption_keys: list[str] = field(default_factory=list)  # DECRYPTION_KEY's primary fingerprints


def judge(lines: tuple[Line, ...], returncode: int, *, detached: bool = False,
          allow_expired: bool = False, max_output: int | None = None, truncated: bool = False) -> Judged:
    """What one `gpg --decrypt` (or, `detached`, `gpg --verify SIG -`) run proved.

    Returns a Judged with at most one good signature, or raises Unauthorized whose reason
    names the first problem found, or TooLarge when the plaintext is past `max_output` (or
    gpg stopped writing it: `truncated`) and the data was intact. `allow_expired` counts a
    signature by a key or with a signature that expired since (the post was checked when it
    arrived) as good.
    """
    state = _walk(lines)
    encrypted = state.decryption != "none" or state.encrypted_to > 0 or state.no_seckey or state.symmetric
    too_large = truncated or (max_output is not None and state.literal_length is not None
                              and state.literal_length > max_output)
    # Size is a verdict only over data gpg found intact: with a wrong session key (anyone can
    # add a key packet) gpg decrypts noise, and noise may begin with any literal length.
    if too_large and not (encrypted and (state.failures or state.okay != 1)):
        raise TooLarge("plaintext-too-large")
    if encrypted:
        _check_decryption(state)
    elif detached:
        if state.literals:
            raise Unauthorized("bad-signature")  # a whole signed message where a detached one belongs
    elif state.literals != 1:
        raise Unauthorized("no-signature")
    signature = _check_signatures(state, allow_expired)
    if encrypted and (state.failures or state.okay != 1):
        raise Unauthorized("not-decryptable")
    if returncode != 0 or state.failures:
        raise Unauthorized("bad-signature" if signature or state.signatures else
                           ("not-decryptable" if encrypted else "no-signature"))
    opened_by = set(state.decryption_keys)
    return Judged(encrypted, signature, state.literal_length, opened_by.pop() if len(opened_by) == 1 else None)


def _walk(lines: tuple[Line, ...]) -> _State:
    """One pass in order; a line in a place gpg never writes it is a StatusError."""
    state = _State(signatures=[], failures=[])
    current: _Sig | None = None
    for line in lines:
        keyword = line.keyword
        if keyword == "BEGIN_DECRYPTION":
            if state.decryption != "none" or current is not None or state.literals:
                raise StatusError("GnuPG's status has a decryption in an unexpected place.")
            state.decryption = "open"
        elif keyword == "END_DECRYPTION":
            if state.decryption != "open":
                raise StatusError("GnuPG's status ends a decryption it never began.")
            state.decryption, current = "closed", None
        elif keyword == "DECRYPTION_INFO":
            if state.decryption != "open" or state.info is not None or state.literals:
                raise StatusError("GnuPG's status has DECRYPTION_INFO in an unexpected place.")
            state.info = line
        elif keyword in ("DECRYPTION_OKAY", "GOODMDC"):
            if state.decryption != "open":
                raise StatusError(f"GnuPG's status has {keyword} outside a decryption.")
            current = None
            if keyword == "DECRYPTION_OKAY":
                state.okay += 1
            else:
                state.mdc += 1
        elif keyword in ("DECRYPTION_COMPLIANCE_MODE", "SESSION_KEY"):
            if state.decryption != "open":
                raise StatusError("GnuPG's status has a compliance line outside a decryption.")
        elif keyword in _BEFORE_DECRYPTION - _KEY_INFO:
            if state.decryption != "none" and keyword not in ("CANCELED_BY_USER", "MISSING_PASSPHRASE"):
                raise StatusError(f"GnuPG's status has {keyword} after the decryption began.")
            state.encrypted_to += keyword == "ENC_TO"
            if keyword == "DECRYPTION_KEY":
                state.decryption_keys.append(line[1])
            state.no_seckey |= keyword == "NO_SECKEY"
            state.symmetric |= keyword == "NEED_PASSPHRASE_SYM"
        elif keyword == "PLAINTEXT":
            if current is not None:
                raise StatusError("GnuPG's status has literal data inside a signature.")
            state.literals += 1
            state.literal_outside |= state.decryption != "open"
        elif keyword == "PLAINTEXT_LENGTH":
            if not state.literals or current is not None or state.literal_length is not None:
                raise StatusError("GnuPG's status has PLAINTEXT_LENGTH in an unexpected place.")
            state.literal_length = int(line[0])
        elif keyword == "NEWSIG":
            current = _Sig()
            state.signatures.append(current)
            state.signature_outside |= state.decryption not in ("none", "open")
        elif keyword == "SIG_ID":
            if current is None or current.sig_id is not None or current.verdict is not None:
                raise StatusError("GnuPG's status has SIG_ID in an unexpected place.")
            current.sig_id = line
        elif keyword in _VERDICTS:
            if current is None or current.verdict is not None:
                raise StatusError(f"GnuPG's status has {keyword} outside a signature.")
            current.verdict = line
        elif keyword == "VALIDSIG":
            if current is None or current.verdict is None or current.valid is not None:
                raise StatusError("GnuPG's status has VALIDSIG in an unexpected place.")
            current.valid = line
        elif keyword in _SIGNATURE_INFO:
            if keyword not in _KEY_INFO and current is None:
                raise StatusError(f"GnuPG's status has {keyword} outside a signature.")
        elif keyword in _FAILURES:
            state.failures.append(line)
        else:
            raise StatusError(f"GnuPG's status has {keyword} in a decryption or verification.")
    if state.decryption == "open":
        if not state.failures:  # gpg gives up inside a decryption only after saying why
            raise StatusError("GnuPG's status ends inside a decryption.")
        state.decryption = "closed"
    return state


def _check_decryption(state: _State) -> None:
    # NO_SECKEY for some other key is normal: clients also encrypt to the sender's own key
    # (Thunderbird always does) and a cross-post to every list named. What counts is that one
    # key opened it: gpg then reports DECRYPTION_INFO; with no key (or only a passphrase) it
    # reports none.
    if state.decryption == "none" or state.info is None:
        raise Unauthorized("not-decryptable")
    info = state.info
    # DECRYPTION_INFO <mdc_method> <sym_algo> [<aead_algo>]: no MDC and no AEAD is the
    # malleable old SED packet, whose plaintext gpg still writes out before failing.
    aead = info is not None and len(info.args) > 2 and info[2] != "0"
    if (info[0] == "0" and not aead) \
            or any(f.keyword == "ERROR" and f[1:2] and f.args[0].startswith("nomdc") for f in state.failures):
        raise Unauthorized("no-mdc")
    if any(f.keyword in ("BADMDC", "DECRYPTION_FAILED") for f in state.failures):
        raise Unauthorized("not-decryptable")  # what gpg made of the data then is noise
    if state.literal_outside or state.signature_outside:
        raise Unauthorized("unsigned-part")
    if state.literals != 1:
        raise Unauthorized("not-decryptable")
    if not (state.mdc == 1 or aead) and not state.failures:
        raise Unauthorized("not-decryptable")


def _check_signatures(state: _State, allow_expired: bool) -> Signature | None:
    signatures = state.signatures or []
    if not signatures:
        return None
    if len(signatures) > 1:
        raise Unauthorized("multiple-signatures")
    [sig] = signatures
    verdict = sig.verdict
    if verdict is None:
        raise Unauthorized("bad-signature")
    keyword = verdict.keyword
    if keyword == "ERRSIG":
        # ERRSIG <keyid> <pkalgo> <hashalgo> <sig_class> <time> <rc> [<fpr>]; rc 9: no public key
        raise Unauthorized("unknown-key" if verdict[5] == "9" else "bad-signature")
    expired = {"EXPKEYSIG": "key-expired", "EXPSIG": "signature-expired"}
    if keyword == "REVKEYSIG":
        raise Unauthorized("key-revoked")
    if keyword in expired and not allow_expired:
        raise Unauthorized(expired[keyword])
    if keyword == "BADSIG":
        raise Unauthorized("bad-signature")
    valid, sig_id = sig.valid, sig.sig_id
    if valid is None or sig_id is None:
        raise Unauthorized("bad-signature")
    # VALIDSIG <fpr> <date> <timestamp> <expires> <version> <reserved> <pkalgo> <hashalgo>
    #          <class> [<primary fpr>]; class 00 binary or 01 text: a signature over data
    signing_key = valid[0]
    signer = valid[9] if len(valid.args) > 9 else signing_key
    claimed = verdict[0]
    if valid[8] not in ("00", "01") or not signing_key.endswith(claimed) \
            or sig_id[2] != valid[2]:
        raise Unauthorized("bad-signature")
    return Signature(signer, signing_key, timestamp(valid[2]), sig_id[0])
