"""listserv.rotation's codes and records, on a real store: what a member types is what was
sent, and a store written before key changes existed still loads."""

from __future__ import annotations

import json

from listserv.model import Member
from listserv.rotation import _code, _typed
from listserv.store import Store


def test_a_code_holds_128_bits_and_reads_back_however_it_is_typed():
    code = _code(b"k" * 32, "c1", "confirm")
    letters = code.replace("-", "")
    assert len(letters) == 26 and set(letters) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")  # 26 * 5 >= 128
    assert code != _code(b"k" * 32, "c1", "approve") != _code(b"k" * 32, "c2", "confirm")
    assert _typed((code.lower(),)) == code
    assert _typed(tuple(code.split("-"))) == code  # typed with spaces for the dashes
    assert _typed((code[:-1],)) != code


def test_members_stored_before_previous_fingerprints_load_with_none(tmp_path):
    path = tmp_path / "listserv.json"
    old = {"list": "news@example.org", "email": "a@example.org", "fingerprint": "A" * 40, "name": "A"}
    path.write_text(json.dumps({"lists": {"1": {"address": "news@example.org", "name": "News",
                                                "fingerprint": "B" * 40}}, "members": {"1": old}}))
    [member] = Store(path).read().members("news@example.org")
    assert member.previous_fingerprints == ()
    assert Member(**{**old, "previous_fingerprints": ["C" * 40]}).previous_fingerprints == ("C" * 40,)
    assert Store(path).read().roster("news@example.org").pending_keys == ()
