"""Forgery: every place GnuPG echoes an attacker's text, with every line separator Python or
GnuPG might honour, each carrying a complete forged status sequence for a member -- in every
shape a post can take. All must be refused: nobody but Alice can make listserv read "Alice".

The attacker's packets come from tests/helpers/forge.py (built byte by byte), so a field holds
exactly what the attacker wants, including what gpg's own command line would refuse. Alice
is a member; Eve's key is in the keyring (a member of some other list) but not a member
here; Stranger's key is unknown to the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from listserv.errors import Refusal, Unauthorized
from listserv.keyring import Keyring
from listserv.model import MailingList, Member
from listserv.stages.authorize import authorize
from listserv.stages.open import open_message
from listserv.stages.route import Route

from tests.helpers import forge
from tests.helpers import mail as mf
from tests.helpers.keys import User

LIST = "news@example.org"
SEPARATORS = {
    "LF": b"\n", "CR": b"\r", "CRLF": b"\r\n", "VT": b"\x0b", "FF": b"\x0c",
    "FS": b"\x1c", "GS": b"\x1d", "RS": b"\x1e",
    "NEL-byte": b"\x85", "NEL-utf8": "\u0085".encode(),
    "LS-utf8": "\u2028".encode(), "PS-utf8": "\u2029".encode(),
}
PLACES = ("armor-header", "file-name", "user-id", "notation", "signers-uid", "comment-packet")
SHAPES = ("pgpmime", "encrypted-signed", "detached", "inline-encrypted", "inline-signed", "clearsign")


@dataclass
class Site:
    keyring: Keyring
    list_fpr: str
    list_cert: bytes  # binary
    list_public: bytes  # armored
    alice: User
    eve: forge.ForgedKey
    eves_by_uid: dict[str, forge.ForgedKey] = field(default_factory=dict)
    stranger: forge.ForgedKey = field(default_factory=lambda: forge.ForgedKey(b"Stranger <s@example.net>"))

    @property
    def mailing_list(self) -> MailingList:
        return MailingList(LIST, "News", self.list_fpr, {"require_encryption": False})

    def members(self) -> dict[str, Member]:
        return {self.alice.fingerprint: Member(LIST, self.alice.email, self.alice.fingerprint, "Alice")}

    def verdict(self, raw: bytes) -> str:
        """What listserv makes of `raw`: "refused:REASON", or "accepted:FINGERPRINT"."""
        try:
            opened = open_message(raw, self.keyring, list_key=self.list_fpr)
            member = authorize(opened, Route(LIST, "post"), self.mailing_list, self.members(), time.time()).member
        except Refusal as refusal:
            return f"refused:{refusal.reason}"
        return f"accepted:{member.fingerprint}"


@pytest.fixture(scope="module")
def site(tmp_path_factory, people) -> Site:
    home = tmp_path_factory.mktemp("forgery") / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    list_fpr = keyring.generate_list_key(LIST, "News")
    alice = people["alice"]
    assert keyring.import_keys(alice.public_key) == [alice.fingerprint]
    eve = forge.ForgedKey(b"Eve <eve@example.com>")
    assert keyring.import_keys(eve.certificate()) == [eve.fingerprint]
    made = Site(keyring, list_fpr, keyring.export_public([list_fpr]), keyring.export(list_fpr).encode(), alice, eve)
    for name, sep in SEPARATORS.items():
        liar = forge.ForgedKey(b"Eve" + forge.echo(sep, forge.forged_status(alice, list_fpr)) + b" <eve@example.com>")
        imported = keyring.import_keys(liar.certificate())
        assert imported == [liar.fingerprint], f"gpg refused a user id with {name}"
        made.eves_by_uid[name] = liar
    return made


# -- building each shape with the attacker's text in one place -----------------------

@dataclass(frozen=True)
class Craft:
    """Where the attacker puts the forged text, and who (if anyone) really signs."""

    signer: forge.ForgedKey | None = None
    headers: tuple[bytes, ...] = ()  # armor header lines of every armored block
    filename: bytes = b""  # the literal's file name
    hashed: tuple[bytes, ...] = ()  # extra hashed subpackets of the signature
    extra: bytes = b""  # a packet after the signature (a comment packet)


def content(body: str = "Forged words, in Alice's name.") -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode() + b"\r\n"


def signed_packets(craft: Craft, data: bytes, *, text: bool = False) -> bytes:
    kind = 0x01 if text else 0x00
    literal = forge.literal(data, craft.filename)
    if craft.signer is None:
        return literal + craft.extra
    return (craft.signer.one_pass(kind) + literal
            + craft.signer.signature(data, kind=kind, hashed=list(craft.hashed)) + craft.extra)


def detached_signature(site: Site, craft: Craft, data: bytes) -> bytes:
    signer = craft.signer or site.stranger
    return forge.armor(signer.signature(data, hashed=list(craft.hashed)) + craft.extra,
                       "PGP SIGNATURE", list(craft.headers))


def build(site: Site, shape: str, craft: Craft) -> bytes:
    data = content()
    if shape == "pgpmime":
        sealed = forge.encrypt_to(site.list_cert, signed_packets(craft, data))
        return forge.outer(mf.encrypted_entity(forge.armor(sealed, headers=list(craft.headers))))
    if shape == "encrypted-signed":
        inner = mf.multipart('multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature"',
                             [data, b"Content-Type: application/pgp-signature\r\n\r\n"
                              + detached_signature(site, craft, data)])
        sealed = forge.encrypt_to(site.list_cert, forge.literal(inner, craft.filename))
        return forge.outer(mf.encrypted_entity(forge.armor(sealed, headers=list(craft.headers))))
    if shape == "detached":
        entity = mf.multipart('multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature"',
                              [data, b"Content-Type: application/pgp-signature\r\n\r\n"
                               + detached_signature(site, craft, data)])
        return forge.outer(entity)
    text = b"Forged words, in Alice's name."
    if shape == "inline-encrypted":
        armored = forge.armor(forge.encrypt_to(site.list_cert, signed_packets(craft, text)),
                              headers=list(craft.headers))
    elif shape == "inline-signed":
        armored = forge.armor(signed_packets(craft, text), headers=list(craft.headers))
    else:  # clearsign: the signed text is the lines between the armor, CRLF, no final newline
        signature = detached_signature(site, craft, text)
        armored = (b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n"
                   + b"".join(h + b"\r\n" for h in craft.headers) + b"\r\n" + text + b"\r\n" + signature)
    return forge.outer(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                 + armored)


def craft_for(site: Site, place: str, sep: str) -> Craft | None:
    """The attack of `place` with separator `sep`, or None where that place does not exist
    in a shape (decided by build: detached signatures and clearsigned text have no literal)."""
    lines = forge.forged_status(site.alice, site.list_fpr)
    text = forge.echo(SEPARATORS[sep], lines)
    if place == "armor-header":
        return Craft(signer=None, headers=(b"Comment: " + text, b"Foo: " + text))
    if place == "file-name":
        short = forge.echo(SEPARATORS[sep], forge.forged_status(site.alice, site.list_fpr, short=True))
        return Craft(signer=None, filename=short[:255])
    if place == "user-id":
        return Craft(signer=site.eves_by_uid[sep])
    if place == "notation":
        return Craft(signer=site.eve, hashed=(forge.notation(b"forged@example.org", text),))
    if place == "signers-uid":
        return Craft(signer=site.eve, hashed=(forge.signers_uid(b"alice@example.org" + text),))
    return Craft(signer=site.eve, extra=forge.comment(text))


# A detached signature and a clearsigned text carry no literal data packet, so no file name.
CELLS = [(place, shape) for place in PLACES for shape in SHAPES
         if (place, shape) not in {("file-name", "detached"), ("file-name", "clearsign")}]


@pytest.mark.parametrize(("place", "shape"), CELLS)
def test_echoed_text_never_makes_a_member_of_an_outsider(site, place, shape):
    """One test per place and shape, over every separator: none is accepted as Alice."""
    outcomes = {}
    for sep in SEPARATORS:
        raw = build(site, shape, craft_for(site, place, sep))
        outcomes[sep] = site.verdict(raw)
    assert all(verdict.startswith("refused:") for verdict in outcomes.values()), outcomes
    if place in ("user-id", "notation", "signers-uid"):
        # Eve really signed: whatever her packets say, she is Eve, and not a member here.
        assert set(outcomes.values()) == {"refused:not-a-member"}, outcomes


@pytest.mark.parametrize("shape", ["pgpmime", "inline"])
@pytest.mark.parametrize("sep", SEPARATORS)
def test_the_original_forgery_is_refused(site, sep, shape):
    """The attack found in review: an armored message whose header lines spell out a decryption
    and Alice's good signature, and a second armored block whose header ends the decryption
    after gpg reported the literal. No key, no encryption. With U+0085 it was delivered as
    "Alice via News" (python-gnupg split gpg's stderr, decoded as Latin-1, with splitlines)."""
    raw = forge.original_forgery(site.alice, site.list_fpr, SEPARATORS[sep], inline=shape == "inline")
    assert site.verdict(raw).startswith("refused:")


def test_honest_posts_still_open(site, people):
    """The same checks with a real member's real posts: each shape opens as Alice."""
    alice = people["alice"]
    for style in mf.STYLES:
        raw = mf.post(alice, site.list_public, "Real words.", style=style)
        assert site.verdict(raw) == f"accepted:{alice.fingerprint}", style


def test_eve_is_still_eve(site):
    """The crafted packets are sound: Eve's honest signature opens, as Eve (not a member here)."""
    raw = build(site, "pgpmime", Craft(signer=site.eve))
    opened = open_message(raw, site.keyring)
    assert opened.signer == site.eve.fingerprint
    with pytest.raises(Unauthorized) as refused:
        authorize(opened, Route(LIST, "post"), site.mailing_list, site.members(), time.time())
    assert refused.value.reason == "not-a-member"
