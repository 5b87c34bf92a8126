"""`listserv wkd export`: the lists' keys as a Web Key Directory, checked against GnuPG's own
WKD tools (gpg-wks-client's hashes and URLs) and read back by a fresh gpg."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from listserv import wkd

from tests.helpers.cli import Cli, add_old_list, assert_refused
from tests.helpers.keys import GPG_BATCH, primary_fingerprints, run, user_ids


def wks_client() -> str:
    """gpg-wks-client where gpg keeps it (Debian package gpg-wks-client; .ci/run installs it)."""
    libexec = run(["gpgconf", "--list-dirs", "libexecdir"]).stdout.decode().strip()
    path = Path(libexec) / "gpg-wks-client"
    assert path.is_file(), f"{path} is missing: apt-get install gpg-wks-client"
    return str(path)


def wks(*args: str) -> list[str]:
    return run([wks_client(), *args]).stdout.decode("utf-8").splitlines()


ADDRESSES = ["Joe.Doe@Example.ORG", "news@example.org", "news-request@example.org",
             "Mixed.Case+Tag@Lists.Example.net", "a+b+c@x.org", "list2024.v2@x.org", "0123456789@x.org",
             "ÄÖü.Ab@example.org"]


def test_the_hash_of_every_address_is_gpg_wks_clients():
    printed = wks("--print-wkd-hash", *ADDRESSES)
    assert [line.split(" ", 1)[0] for line in printed] == [wkd.wkd_hash(a) for a in ADDRESSES]
    assert wkd.wkd_hash("Joe.Doe@Example.ORG") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"  # the draft's own example
    # Only ASCII is lowercased: "Ä" is not "ä" (a full str.lower() would hash another name).
    assert wkd.wkd_hash("Äb@x.org") != wkd.wkd_hash("äb@x.org")


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_advanced_url_is_the_one_gpg_asks(address):
    [printed] = wks("--print-wkd-url", address)
    assert wkd.url(address, wkd.ADVANCED).split("?")[0] == printed.split("?")[0]


def test_zbase32_of_known_values():
    assert wkd.zbase32(b"") == ""
    assert wkd.zbase32(b"\x00") == "yy"  # 8 bits: two characters, the last three bits zero
    assert wkd.zbase32(b"\xff" * 5) == "9" * 8
    assert len(wkd.zbase32(bytes(20))) == 32


# -- the export ---------------------------------------------------------------------------------

LISTS = {"news@example.org": "News", "Board@Lists.Example.NET": "Board"}


@pytest.fixture
def site(cli: Cli) -> dict[str, str]:
    """Two lists on two domains: address -> fingerprint."""
    made = {}
    for address, name in LISTS.items():
        cli.ok("list", "create", address, "--name", name)
        shown = cli.json("list", "show", address)
        made[shown["address"]] = shown["fingerprint"]
    return made


def own_addresses(address: str) -> list[str]:
    local, domain = address.split("@")
    return [address, f"{local}-request@{domain}", f"{local}-owner@{domain}"]


def expected_files(lists: dict[str, str], method: str) -> set[str]:
    keys = {str(wkd.key_path(a, method)) for address in lists for a in own_addresses(address)}
    domains = {address.split("@")[1] for address in lists}
    policies = {f".well-known/openpgpkey/{d}/policy" if method == "advanced" else f"{d}/.well-known/openpgpkey/policy"
                for d in domains}
    return keys | policies | {wkd.MARKER}


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def read_back(tmp_path: Path, data: bytes) -> tuple[list[str], list[tuple[str, str]], str]:
    """Import `data` into a fresh GNUPGHOME: (primary fingerprints, user ids, key capabilities)."""
    home = Path(tempfile.mkdtemp(prefix="gnupghome-", dir=tmp_path))
    run([*GPG_BATCH, "--no-autostart", "--homedir", str(home), "--import"], input=data)
    listing = run(["gpg", "--no-autostart", "--homedir", str(home), "--with-colons", "--list-keys"]).stdout
    pub = next(line for line in listing.decode().splitlines() if line.startswith("pub:"))
    return primary_fingerprints(listing), user_ids(listing), pub.split(":")[11]


@pytest.mark.parametrize("method", wkd.METHODS)
def test_each_address_of_each_list_gets_its_key_with_its_own_user_id_alone(cli, site, tmp_path, method):
    out = tmp_path / "wkd"
    result = cli.ok("wkd", "export", str(out), "--method", method)
    files = tree(out)
    assert set(files) == expected_files(site, method)
    for address, fingerprint in site.items():
        name = LISTS["news@example.org" if address.startswith("news") else "Board@Lists.Example.NET"]
        for own in own_addresses(address):
            [printed] = wks("--print-wkd-hash", own)
            hashed = printed.split(" ")[0]
            domain = own.split("@")[1]
            where = (f".well-known/openpgpkey/{domain}/hu/{hashed}" if method == "advanced"
                     else f"{domain}/.well-known/openpgpkey/hu/{hashed}")
            data = files[where]
            assert not data.startswith(b"-----BEGIN")  # binary, as the draft requires
            fingerprints, uids, capabilities = read_back(tmp_path, data)
            assert fingerprints == [fingerprint]
            assert [uid for _, uid in uids] == [f"{name} <{own}>"]
            assert "E" in capabilities  # a client can encrypt to it
            assert own in result.stdout and wkd.url(own, method) in result.stdout
    for domain in {a.split("@")[1] for a in site}:
        policy = (f".well-known/openpgpkey/{domain}/policy" if method == "advanced"
                  else f"{domain}/.well-known/openpgpkey/policy")
        assert files[policy] == b""
    if method == "advanced":  # the paths are the ones gpg asks for
        for address in site:
            [url] = wks("--print-wkd-url", address)
            assert url.split("?")[0].split("/", 3)[3] in files
    modes = {p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert modes == {0o755, 0o644}  # a web server running as another user can read it
    assert result.stdout.splitlines()[-1] == f"wrote 6 keys of 2 lists on 2 domains into {out} ({method} method)"


def test_a_second_export_replaces_the_first_and_a_deleted_lists_files_go(cli, site, tmp_path):
    out = tmp_path / "wkd"
    cli.ok("wkd", "export", str(out))
    board = own_addresses("board@lists.example.net")
    assert all(str(wkd.key_path(a, "advanced")) in tree(out) for a in board)
    cli.ok("list", "delete", "board@lists.example.net", "--yes")
    cli.ok("wkd", "export", str(out))
    files = tree(out)
    assert set(files) == expected_files({"news@example.org": site["news@example.org"]}, "advanced")
    assert not (out / ".well-known" / "openpgpkey" / "lists.example.net").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".wkd")) == []  # no sibling left
    cli.ok("wkd", "export", str(out), "--method", "direct")  # another method: the tree changes whole
    assert set(tree(out)) == expected_files({"news@example.org": site["news@example.org"]}, "direct")


def test_without_the_kernels_exchange_the_export_is_replaced_by_two_renames(cli, site, tmp_path, monkeypatch):
    """Where renameat2 cannot exchange two names (another C library, another filesystem)."""
    from listserv import durable

    out = tmp_path / "wkd"
    cli.ok("wkd", "export", str(out))
    cli.ok("list", "delete", "board@lists.example.net", "--yes")
    monkeypatch.setattr(durable, "_exchange", lambda first, second: False)
    cli.ok("wkd", "export", str(out))
    assert set(tree(out)) == expected_files({"news@example.org": site["news@example.org"]}, "advanced")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "wkd"]


def test_a_failed_export_leaves_the_previous_one_as_it_was(cli, site, tmp_path):
    out = tmp_path / "wkd"
    cli.ok("wkd", "export", str(out))
    before = tree(out)
    # The board's key vanishes from the keyring behind listserv's back: the export cannot be made.
    keys = str(cli.home / "keys")
    run([*GPG_BATCH, "--homedir", keys, "--yes", "--delete-secret-and-public-key", site["board@lists.example.net"]])
    result = cli("wkd", "export", str(out), "--method", "direct")
    assert_refused(result, 5, site["board@lists.example.net"], "not in the keyring")
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_older_list_key_gets_its_request_and_owner_user_ids_before_the_export(cli, tmp_path):
    fingerprint = add_old_list(cli)
    out = tmp_path / "wkd"
    cli.ok("wkd", "export", str(out))
    files = tree(out)
    for own in own_addresses("news@example.org"):
        fingerprints, uids, _ = read_back(tmp_path, files[str(wkd.key_path(own, "advanced"))])
        assert fingerprints == [fingerprint] and [uid for _, uid in uids] == [f"News <{own}>"]


def test_a_revoked_user_id_is_not_published_and_the_operator_is_told(cli, site, tmp_path):
    fingerprint = site["news@example.org"]
    keys = str(cli.home / "keys")
    run([*GPG_BATCH, "--homedir", keys, "--quick-revoke-uid", fingerprint, "News <news-owner@example.org>"])
    out = tmp_path / "wkd"
    result = cli.ok("wkd", "export", str(out))
    assert result.stderr == ("listserv: warning: news-owner@example.org is not published: "
                             "the list's key has no valid user id for it.\n")
    files = tree(out)
    assert str(wkd.key_path("news-owner@example.org", "advanced")) not in files
    assert str(wkd.key_path("news-request@example.org", "advanced")) in files
    assert "wrote 5 keys of 2 lists" in result.stdout


def test_a_dir_that_is_a_file_is_refused_in_one_sentence_and_nothing_changes(cli, site, tmp_path):
    target = tmp_path / "a-file"
    target.write_bytes(b"keep me")
    assert_refused(cli("wkd", "export", str(target)), 2, str(target), "is a file")
    assert target.read_bytes() == b"keep me"


def test_a_dir_holding_other_files_is_refused_and_kept(cli, site, tmp_path):
    site_root = tmp_path / "www"
    site_root.mkdir()
    (site_root / "index.html").write_text("the group's web site")
    assert_refused(cli("wkd", "export", str(site_root)), 2, "no listserv export wrote")
    assert tree(site_root) == {"index.html": b"the group's web site"}


def test_a_dir_whose_parent_is_missing_is_refused(cli, site, tmp_path):
    assert_refused(cli("wkd", "export", str(tmp_path / "no" / "such")), 2, "does not exist")
    assert not (tmp_path / "no").exists()


def test_an_empty_dir_is_taken(cli, site, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    cli.ok("wkd", "export", str(out))
    assert set(tree(out)) == expected_files(site, "advanced")


def test_an_unknown_method_is_a_usage_error(cli, site, tmp_path):
    result = cli("wkd", "export", str(tmp_path / "wkd"), "--method", "keyserver")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "wkd").exists()
