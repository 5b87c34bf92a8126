"""x-sign-this as the ledger runs it: once per queue id, signed again on a rerun after a crash
(the signed files are never kept), the rounds in the store holding no text."""

from __future__ import annotations

import subprocess

from listserv.config import Home
from listserv.context import Context
from listserv.ledger import run_request
from listserv.stages.commands import read_request
from tests.helpers.cli import make_site

LIST = "news@example.org"


def content(text: str) -> bytes:
    body = f"x-list-name: {LIST}\r\nx-sign-this\r\n\r\n{text}\r\n".encode()
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body


def test_a_rerun_after_a_crash_signs_again_and_counts_the_asker_once(tmp_path, people):
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate"})
    cli.ok("member", "set", LIST, people["alice"].email, "--role", "admin")
    ctx = Context.open(Home(cli.home))
    ml = ctx.store.read().require_list(LIST)
    signed = content("The account @news_alt_44 is not ours.")
    request = read_request(signed, ml, ctx.roster(LIST).by_fingerprint[people["alice"].fingerprint])
    first = run_request(ctx.store, ctx.events, ctx.keyring, "0123456789ab", ml, people["alice"].fingerprint,
                        request, signed)
    again = run_request(ctx.store, ctx.events, ctx.keyring, "0123456789ab", ml, people["alice"].fingerprint,
                        request, signed)
    assert first.signed_for == again.signed_for == ("Alice",)
    assert [name for name, _, _ in again.signed] == ["statement.asc"]
    [round_] = ctx.store.read().statements(LIST)
    assert len(round_["asked"]) == 1 and round_["signed"]
    home = tmp_path / "reader"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--import"], input=list_key, check=True,
                   capture_output=True)
    checked = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--status-fd", "1", "--verify"],
                             input=again.signed[0][2], capture_output=True)
    assert f"VALIDSIG {fingerprint}".encode() in checked.stdout and checked.returncode == 0
    assert b"news_alt_44" not in (cli.home / "data" / "listserv.json").read_bytes()
