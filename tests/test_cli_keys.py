"""`listserv keys check`: each member's key and when it stops encrypting, read from the keyring
as GnuPG, Sequoia and RNP made it -- an encryption subkey that ends before its primary key
counts, as does a key updated since it was pinned."""

from __future__ import annotations

import time

from listserv.model import parse_iso

from tests.helpers.cli import write_key
from tests.helpers.keys import make_gpg_key, run

LIST = "news@example.org"
DAY = 86400


def days_from_now(text: str) -> float:
    return (parse_iso(text).timestamp() - time.time()) / DAY


def test_keys_check_reads_each_tools_expiry_and_the_earlier_subkey_end(cli, news, people, tmp_path):
    sq_user = people["sally"]
    sq_key = tmp_path / "sq.pgp"
    run(["sq", "key", "generate", "--userid", "Sam <sam@example.net>", "--expires-in", "20d", "--export", str(sq_key)])
    (tmp_path / "sam.asc").write_bytes(run(["sq", "key", "extract-cert", str(sq_key)]).stdout)
    rnp_home = tmp_path / "rnp"
    rnp_home.mkdir(mode=0o700)
    run(["rnpkeys", "--homedir", str(rnp_home), "--generate-key", "--userid", "Rob <rob@example.net>",
         "--password", "", "--expiration", "30d"])
    (tmp_path / "rob.asc").write_bytes(run(["rnpkeys", "--homedir", str(rnp_home), "--export-key",
                                            "rob@example.net"]).stdout)
    # The case a check of the primary key alone misses: it never expires, its encryption subkey does.
    wes = make_gpg_key(tmp_path, "Wes", "wes@example.org", expire="never", subkeys=[("cv25519", "5d", None)])
    for name, email, path in [("Sam", "sam@example.net", str(tmp_path / "sam.asc")),
                              ("Rob", "rob@example.net", str(tmp_path / "rob.asc")),
                              ("Wes", wes.email, write_key(tmp_path, wes)),
                              ("Sally", sq_user.email, write_key(tmp_path, sq_user))]:
        cli.ok("member", "add", news, email, "--key", path, "--name", name)
    rows = {row["name"]: row for row in cli.json("keys", "check", news)}
    assert set(rows) == {"Sam", "Rob", "Wes", "Sally"}
    assert 19.9 < days_from_now(rows["Sam"]["usable_until"]) <= 20 and rows["Sam"]["days_left"] == 19
    assert 29.9 < days_from_now(rows["Rob"]["usable_until"]) <= 30 and rows["Rob"]["status"] == "ok"
    assert 4.9 < days_from_now(rows["Wes"]["usable_until"]) <= 5
    assert (rows["Wes"]["status"], rows["Wes"]["days_left"]) == ("expiring", 4)
    assert rows["Wes"]["fingerprint"] == wes.fingerprint and "email" not in rows["Wes"]
    # Extended in the member's own gpg and the key imported again: the check reads it afresh.
    wes.gpg("--quick-set-expire", wes.fingerprint, "1y", "*")
    run(["gpg", "--homedir", str(cli.home / "keys"), "--import"], input=wes.gpg("--export", wes.fingerprint).stdout)
    [again] = [row for row in cli.json("keys", "check", news) if row["name"] == "Wes"]
    assert again["status"] == "ok" and again["days_left"] >= 364
    table = cli.ok("keys", "check", news).stdout
    assert table.splitlines()[0].split() == ["pseudonym", "status", "usable", "until", "(UTC)", "days", "fingerprint"]
    assert any(line.split()[:2] == ["Sam", "ok"] and line.split()[-1] == rows["Sam"]["fingerprint"]
               for line in table.splitlines())
    assert "sam@example.net" not in table


def test_keys_check_shows_expired_and_revoked_keys_and_refuses_an_unknown_list(cli, news, people, unusable_keys):
    from listserv.config import Home
    from listserv.keyring import Keyring
    from listserv.model import Member, iso
    from listserv.store import Store

    # An expired key cannot be pinned; it is a key that was pinned and has since expired.
    imported = Keyring(Home(cli.home).keys).import_keys(unusable_keys["expired"])
    with Store(Home(cli.home).database).transaction() as tx:
        tx.add_member(Member(news, "old@example.org", imported[0], "Old", added=iso()))
    [row] = cli.json("keys", "check", news)
    assert (row["status"], row["days_left"]) == ("expired", None) and row["usable_until"].startswith("2020-01-02")
    result = cli("keys", "check", "nobody@example.org")
    assert result.exit_code == 3 and "There is no list nobody@example.org." in result.stderr
    result = cli("keys", "check", "not an address")
    assert result.exit_code == 2
