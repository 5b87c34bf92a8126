"""gpg's key listing (`--with-colons`, doc/DETAILS "Format of the colon listings"), read.

Cut at b"\\n" only; user ids come back from gpg's C-style escapes (\\x3a for ':', every
control character likewise), so no byte of a user id can start a record of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# gpg's es_write_sanitized: \n \r \f \v \b \0 \\ for those, \xHH for ':' and other control bytes.
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[nrfvb0\\])")
_NAMED = {b"n": b"\n", b"r": b"\r", b"f": b"\f", b"v": b"\v", b"b": b"\b", b"0": b"\0", b"\\": b"\\"}


@dataclass(frozen=True)
class Subkey:
    keyid: str
    fingerprint: str
    validity: str  # field 2: "e" expired, "r" revoked, "i" invalid, "d" disabled, ...
    capabilities: str  # field 12, lower case for a subkey: e, s, a
    created: int
    expires: int | None


@dataclass(frozen=True)
class Listed:
    fingerprint: str
    keyid: str
    validity: str
    capabilities: str  # field 12: upper case letters are the whole key's usable capabilities
    created: int
    expires: int | None
    secret: bool
    uids: tuple[str, ...]
    subkeys: tuple[Subkey, ...]


def _unescape(field: bytes) -> str:
    def one(match: re.Match) -> bytes:
        code = match.group(1)
        return _NAMED[code] if code in _NAMED else bytes([int(code[1:], 16)])
    return _ESCAPE.sub(one, field).decode("utf-8", "replace")


def _int(field: bytes) -> int:
    return int(field) if field.isdigit() else 0


def parse(output: bytes) -> list[Listed]:
    keys: list[Listed] = []
    primary: dict | None = None
    subkey: dict | None = None

    def finish() -> None:
        nonlocal primary, subkey
        if subkey is not None and primary is not None:
            primary["subkeys"].append(Subkey(**subkey))
        subkey = None
        if primary is not None:
            primary["subkeys"] = tuple(primary["subkeys"])
            primary["uids"] = tuple(primary["uids"])
            keys.append(Listed(**primary))
        primary = None

    for line in output.split(b"\n"):
        fields = line.split(b":")
        kind = fields[0]
        fields += [b""] * (20 - len(fields))
        if kind in (b"pub", b"sec"):
            finish()
            primary = {"fingerprint": "", "keyid": fields[4].decode("ascii", "replace"),
                       "validity": fields[1].decode("ascii", "replace"),
                       "capabilities": fields[11].decode("ascii", "replace"),
                       "created": _int(fields[5]), "expires": _int(fields[6]) or None,
                       "secret": kind == b"sec", "uids": [], "subkeys": []}
        elif primary is None:
            continue
        elif kind in (b"sub", b"ssb"):
            if subkey is not None:
                primary["subkeys"].append(Subkey(**subkey))
            subkey = {"keyid": fields[4].decode("ascii", "replace"), "fingerprint": "",
                      "validity": fields[1].decode("ascii", "replace"),
                      "capabilities": fields[11].decode("ascii", "replace"),
                      "created": _int(fields[5]), "expires": _int(fields[6]) or None}
        elif kind == b"fpr":
            value = fields[9].decode("ascii", "replace")
            target = subkey if subkey is not None else primary
            if not target["fingerprint"]:
                target["fingerprint"] = value
        elif kind == b"uid" and subkey is None:
            primary["uids"].append(_unescape(fields[9]))
    finish()
    return [key for key in keys if key.fingerprint]
