"""OpenPGP framing against what GnuPG writes and what GnuPG, Sequoia and RNP read."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from listserv import openpgp
from listserv.errors import CryptoError

from tests.helpers.keys import User, make_gpg_user, run


@pytest.fixture(scope="module")
def sender(tmp_path_factory: pytest.TempPathFactory, people: dict[str, User]) -> User:
    """A GnuPG user who can sign and encrypt to herself and to Bob (ed25519 and RSA-3072)."""
    user = make_gpg_user(tmp_path_factory.mktemp("openpgp"), "Sender", "sender@example.org")
    user.gpg("--import", input=people["bob"].public_key)
    yield user
    subprocess.run(["gpgconf", "--homedir", str(user.home), "--kill", "all"], capture_output=True)


def encrypt(sender: User, plaintext: bytes, *recipients: str) -> bytes:
    args = ["--trust-model", "always", "--sign", "--encrypt"]
    for fingerprint in recipients:
        args += ["--recipient", fingerprint]
    return sender.gpg(*args, input=plaintext).stdout


def listed_key_ids(data: bytes) -> list[str]:
    """The PKESK key ids as `gpg --list-packets` reads them: an independent parser."""
    out = run(["gpg", "--batch", "--list-packets"], input=data, check=False).stdout.decode()
    return re.findall(r":pubkey enc packet: version 3, algo \d+, keyid ([0-9A-F]{16})", out)


@pytest.mark.parametrize("size", [100, 10 * 1024, 1024 * 1024], ids=["100B", "10KB", "1MB"])
def test_gpg_output_splits_into_packets_and_rejoins_byte_identical(
    sender: User, people: dict[str, User], size: int,
) -> None:
    plaintext = os.urandom(size)  # incompressible: the SEIPD is as large as the post
    data = encrypt(sender, plaintext, sender.fingerprint, people["bob"].fingerprint)

    packets = openpgp.parse(data)

    assert b"".join(packet.raw for packet in packets) == data
    assert [packet.tag for packet in packets] == [openpgp.PKESK, openpgp.PKESK, openpgp.SEIPD]
    assert [openpgp.pkesk_key_id(packet) for packet in packets[:2]] == listed_key_ids(data)
    seipd = packets[-1]
    assert seipd.new_format and seipd.body[0] == 1  # SEIPD version 1, as gpg 2.2 writes
    if size > 8192:
        assert seipd.partial
        assert len(seipd.body) > size
    # gpg reads a stream rebuilt from the parsed packets, and the PKESK alone plus the SEIPD.
    copy = packets[0].raw + seipd.raw
    out = sender.gpg("--decrypt", input=copy)
    assert out.stdout == plaintext


def test_old_format_headers_from_gpg_keep_their_length_octets(sender: User, people: dict[str, User]) -> None:
    data = encrypt(sender, b"short", sender.fingerprint, people["bob"].fingerprint)
    ed25519, rsa, _ = openpgp.parse(data)
    assert not ed25519.new_format and ed25519.raw[0] & 0x03 == 0  # one length octet (96 bytes)
    assert not rsa.new_format and rsa.raw[0] & 0x03 == 1  # two length octets (~399 bytes)
    assert len(rsa.body) == int.from_bytes(rsa.raw[1:3], "big")


CONTENT = os.urandom(3000)


def literal(content: bytes) -> bytes:
    return b"b\x00" + b"\x00\x00\x00\x00" + content  # binary, no file name, no date


def header_forms() -> dict[str, bytes]:
    """One literal-data packet (tag 11) in every header form RFC 9580 §4.2 allows."""
    body = literal(CONTENT)
    n = len(body)
    rest = n - 1536
    return {
        "new 1-octet": bytes([0xCB, 100]) + body[:100],
        "new 2-octet": bytes([0xCB, ((n - 192) >> 8) + 192, (n - 192) & 0xFF]) + body,
        "new 5-octet": bytes([0xCB, 0xFF]) + n.to_bytes(4, "big") + body,
        "new partial": (bytes([0xCB, 0xE9]) + body[:512] + bytes([0xEA]) + body[512:1536]
                        + bytes([((rest - 192) >> 8) + 192, (rest - 192) & 0xFF]) + body[1536:]),
        "old 1-octet": bytes([0xAC, 100]) + body[:100],
        "old 2-octet": bytes([0xAD]) + n.to_bytes(2, "big") + body,
        "old 4-octet": bytes([0xAE]) + n.to_bytes(4, "big") + body,
    }


@pytest.mark.parametrize("form", list(header_forms()))
def test_every_header_form_parses_to_the_body_gpg_reads(tmp_path: Path, form: str) -> None:
    packet_bytes = header_forms()[form]
    (packet,) = openpgp.parse(packet_bytes)
    assert packet.tag == 11
    assert packet.raw == packet_bytes
    content = CONTENT[:94] if "1-octet" in form else CONTENT
    assert packet.body == literal(content)
    assert packet.partial == (form == "new partial")
    # gpg prints a bare literal packet's content: an independent reading of the same header.
    assert run(["gpg", "--batch", "--homedir", str(tmp_path), "--decrypt"], input=packet_bytes).stdout == content


def test_a_stream_of_all_header_forms_rejoins_byte_identical() -> None:
    stream = b"".join(header_forms().values())
    packets = openpgp.parse(stream)
    assert len(packets) == len(header_forms())
    assert b"".join(packet.raw for packet in packets) == stream


def test_old_format_indeterminate_length_runs_to_the_end() -> None:
    body = literal(b"to the end")
    (packet,) = openpgp.parse(bytes([0xAF]) + body)
    assert packet.body == body


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"\x00\x01", "bit 7 clear"),
    (bytes([0xC0, 1, 0]), "reserved tag 0"),
    (bytes([0xCB, 10]) + b"short", "truncated body"),
    (bytes([0xCB, 0xFF, 0, 0]), "truncated 5-octet length"),
    (bytes([0xCB, 0xC5]), "truncated 2-octet length"),
    (bytes([0xAD, 0x01]), "truncated old length"),
    (bytes([0xC2, 0xE9]) + bytes(512) + bytes([1, 0]), "partial length on a signature"),
    (bytes([0xCB, 0xE8]) + bytes(256) + bytes([1, 0]), "first partial shorter than 512"),
])
def test_malformed_streams_raise_crypto_error(data: bytes, why: str) -> None:
    with pytest.raises(CryptoError):
        openpgp.parse(data)


def test_pkesk_key_id_refuses_other_packets() -> None:
    (literal_packet,) = openpgp.parse(bytes([0xCB, 8]) + literal(b"ab"))
    with pytest.raises(CryptoError):
        openpgp.pkesk_key_id(literal_packet)
    (v6,) = openpgp.parse(bytes([0xC1, 12, 6]) + bytes(11))
    with pytest.raises(CryptoError):
        openpgp.pkesk_key_id(v6)


def crc24_bitwise(data: bytes) -> int:
    crc = 0xB704CE
    for octet in data:
        crc ^= octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def test_crc24_matches_the_rfc_definition() -> None:
    for size in [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 100, 1000, 4096, 4099, 12345]:
        data = os.urandom(size)
        assert openpgp.crc24(data) == crc24_bitwise(data), size


@pytest.mark.parametrize("size", [0, 1, 2, 3, 47, 48, 49, 3000, 3001, 3002])
def test_armor_is_read_back_by_gpg_sq_and_rnp(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    armored = openpgp.armor(data)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\n\n")
    assert re.search(rb"\n=[A-Za-z0-9+/]{4}\n-----END PGP MESSAGE-----\n$", armored)  # GnuPG T7071
    assert all(len(line) <= 64 for line in armored.splitlines())
    assert openpgp.dearmor(armored) == data
    assert run(["gpg", "--batch", "--dearmor"], input=armored).stdout == data
    if size:  # sq and rnp refuse an empty armored block
        assert run(["sq", "dearmor"], input=armored).stdout == data
        source = tmp_path / "in.asc"
        source.write_bytes(armored)
        target = tmp_path / "out.bin"  # rnp deletes its --output on failure: never a path we need
        run(["rnp", "--homedir", str(tmp_path), "--dearmor", str(source), "--output", str(target)])
        assert target.read_bytes() == data


def test_armor_lines_match_gpg_enarmor() -> None:
    data = os.urandom(5000)
    theirs = run(["gpg", "--batch", "--enarmor"], input=data).stdout.decode().splitlines()
    ours = openpgp.armor(data).decode().splitlines()
    assert ours[2:-1] == theirs[3:-1]  # same base64 lines and checksum; no Comment header


def test_dearmor_reads_gpg_armor_with_headers_and_crlf(sender: User) -> None:
    binary = encrypt(sender, b"hello", sender.fingerprint)
    armored = sender.gpg("--armor", "--comment", "a comment", "--enarmor", input=binary).stdout
    assert openpgp.dearmor(armored.replace(b"\n", b"\r\n"), label="PGP ARMORED FILE") == binary
    assert openpgp.dearmor(armored.decode(), label=None) == binary


@pytest.mark.parametrize("residue", [0, 1, 2])
def test_our_armor_of_gpg_output_decrypts_whatever_its_length(sender: User, residue: int) -> None:
    # GnuPG T7071: without the checksum line gpg fails when the length is a multiple of 3.
    for size in range(3000, 3030):
        plaintext = os.urandom(size)
        data = encrypt(sender, plaintext, sender.fingerprint)
        if len(data) % 3 == residue:
            break
    else:
        pytest.fail("no output length in the wanted residue class")
    result = sender.gpg("--decrypt", input=openpgp.armor(data))
    assert result.stdout == plaintext


def test_shared_armor_equals_armor_of_the_whole() -> None:
    shared = os.urandom(20_000)
    armorer = openpgp.SharedArmor(shared)
    for head_size in [0, 1, 2, 47, 48, 96, 271, 398, 399, 400]:
        head = os.urandom(head_size)
        assert armorer.armor(head) == openpgp.armor(head + shared), head_size
        assert armorer.armor(head) == openpgp.armor(head + shared), head_size  # from the cache


def test_dearmor_rejects_damage() -> None:
    armored = openpgp.armor(os.urandom(100))
    lines = armored.split(b"\n")
    bad_crc = b"\n".join(lines[:-3] + [b"=AAAA"] + lines[-2:])
    with pytest.raises(CryptoError, match="checksum"):
        openpgp.dearmor(bad_crc)
    flipped = bytearray(armored)
    flipped[40] = ord("A") if flipped[40] != ord("A") else ord("B")
    with pytest.raises(CryptoError):
        openpgp.dearmor(bytes(flipped))
    for damaged in [
        armored.replace(b"-----END PGP MESSAGE-----", b""),
        armored[:40] + b"*" + armored[41:],
        b"no armor here",
        armored.replace(b"PGP MESSAGE", b"PGP SIGNATURE"),
    ]:
        with pytest.raises(CryptoError):
            openpgp.dearmor(damaged)


def key_packet(key_id: str, version: int = 3) -> bytes:
    """A PKESK naming `key_id`; the encrypted session key is filler (nothing decrypts it here)."""
    return bytes([0xC1, 12, version]) + bytes.fromhex(key_id) + bytes([18, 1, 0])


OURS, THEIRS, MEMBER = "A1" * 8, "B2" * 8, "C3" * 8
SEIPD = bytes([0xD2, 5, 1]) + b"data"
SKESK = bytes([0xC3, 4, 4, 9, 0, 2])


def test_only_the_lists_key_packets_and_hidden_ones_reach_gpg() -> None:
    data = key_packet(MEMBER) + key_packet(THEIRS) + key_packet(OURS) + SKESK + key_packet("00" * 8) + SEIPD
    kept = openpgp.only_to(data, frozenset({OURS, "D4" * 8}))
    assert kept == key_packet(OURS) + key_packet("00" * 8) + SEIPD
    assert openpgp.message_kind(kept) == "encrypted"


def test_a_message_with_no_key_packet_for_the_list_is_left_as_it_is() -> None:
    """gpg then opens it with whichever key it holds, and says which (authorize refuses it)."""
    for data in (key_packet(THEIRS) + key_packet(MEMBER) + SEIPD, SKESK + SEIPD, bytes([0xCB, 8]) + literal(b"ab"),
                 key_packet(OURS, version=6) + SEIPD):
        assert openpgp.only_to(data, frozenset({OURS})) == data


def test_a_key_packet_of_unknown_version_is_dropped_beside_the_lists() -> None:
    data = key_packet(OURS, version=6) + key_packet(OURS) + SEIPD
    assert openpgp.only_to(data, frozenset({OURS})) == key_packet(OURS) + SEIPD
