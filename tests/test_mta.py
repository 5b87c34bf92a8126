"""`listserv mta postfix`: the maps for every list, printed or written. (A real Postfix reads
them in tests/e2e/test_postfix.py; this file checks what they say.)"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys

import pytest

from listserv.errors import UnknownRecipient
from listserv.options import OPTIONS
from listserv.postfix import FILES, POST_HEADROOM
from listserv.stages.route import route

from tests.helpers.cli import Cli, assert_refused, write_key
from tests.helpers.postfix import DOC, doc_block

TEAM, NEWS = "team@lists.example.org", "news@example.net"


def entries(text: str) -> list[tuple[str, str]]:
    """A Postfix table's lookup keys and values, comments and blank lines left out."""
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def files(cli: Cli, tmp_path) -> dict[str, str]:
    out = tmp_path / "maps"
    cli.ok("mta", "postfix", "--write", str(out))
    return {name: (out / name).read_text() for name in FILES}


@pytest.fixture
def site(cli: Cli, tmp_path, people) -> Cli:
    (cli.home / "listserv.toml").write_text('[server]\nlisten = "127.0.0.1:8125"\n')
    for address, name in ((TEAM, "Team"), (NEWS, "News")):
        cli.ok("list", "create", address, "--name", name)
    for key in ("alice", "bob", "sally"):
        cli.ok("member", "add", TEAM, people[key].email, "--key", write_key(tmp_path, people[key]))
    cli.ok("member", "set", TEAM, people["bob"].email, "--role", "admin")
    cli.ok("member", "set", TEAM, people["sally"].email, "--role", "admin")
    return cli


def test_the_transport_map_sends_every_address_of_every_list_to_listserv(site, tmp_path):
    transport = entries(files(site, tmp_path)["transport"])
    assert transport == [(a, "listserv:[127.0.0.1]:8125") for a in (
        "news@example.net", "news+urgent@example.net", "news-bounces@example.net", "news-request@example.net",
        "news-owner@example.net", "news-sendkey@example.net",
        "team@lists.example.org", "team+urgent@lists.example.org", "team-bounces@lists.example.org",
        "team-request@lists.example.org", "team-owner@lists.example.org", "team-sendkey@lists.example.org")]


def test_every_address_in_the_maps_is_one_listserv_takes_and_no_other(site, tmp_path):
    maps = files(site, tmp_path)
    lists = {TEAM, NEWS}
    recipients = [key for key, value in entries(maps["relay_recipients"])]
    assert recipients == [key for key, _ in entries(maps["transport"])]
    taken = set()
    for address in recipients:
        # LIST-bounces@ stands for LIST-bounces+TOKEN@, as Postfix's recipient_delimiter reads it.
        local, domain = address.split("@")
        probe = f"{local}+abcdefghijklmnop@{domain}" if local.endswith("-bounces") else address
        taken.add((route(probe, lists).list, route(probe, lists).kind))
    assert taken == {(ml, kind) for ml in lists
                     for kind in ("post", "alert", "bounce", "request", "owner", "sendkey")}
    for other in ("nobody@lists.example.org", "team-help@lists.example.org"):
        assert other not in recipients
        with pytest.raises(UnknownRecipient):
            route(other, lists)


def test_the_listserv_transport_is_an_smtp_client_with_one_recipient_per_delivery(site, tmp_path):
    """The transport map names the `listserv` service; service.cf makes it, for postconf -M -e."""
    maps = files(site, tmp_path)
    assert {value.split(":")[0] for _, value in entries(maps["transport"])} == {"listserv"}
    [(service, entry)] = [line.split("=", 1) for line in maps["service.cf"].splitlines()
                          if line and not line.startswith("#")]
    assert service == "listserv/unix" and entry.split() == ["listserv", "unix", "-", "-", "n", "-", "-", "smtp"]
    assert "listserv_destination_recipient_limit=1\n" in maps["limits.cf"]


def test_relay_domains_names_each_list_domain_once(site, tmp_path):
    assert entries(files(site, tmp_path)["relay_domains"]) == [("example.net", "OK"), ("lists.example.org", "OK")]


def test_no_map_names_a_member_so_list_owner_mail_never_passes_postfix_in_plaintext(site, tmp_path, people):
    maps = files(site, tmp_path)
    assert entries(maps["virtual"]) == []  # LIST-owner@ goes to listserv, which re-encrypts it
    for person in people.values():
        assert all(person.email not in text for text in maps.values())


def test_the_size_limits_follow_the_largest_list_limit(site, tmp_path):
    site.ok("list", "set", TEAM, "max_message_size_kb", "2048")
    site.ok("list", "set", NEWS, "max_message_size_kb", "512")
    limits = dict(line.split("=") for line in files(site, tmp_path)["limits.cf"].splitlines()
                  if line and not line.startswith("#"))
    assert limits == {"message_size_limit": str(2 * 2048 * 1024),
                      "listserv_post_size_limit": str(2048 * 1024 - POST_HEADROOM),
                      "listserv_destination_recipient_limit": "1"}


def test_the_size_limits_stop_at_the_servers_own_data_limit(site, tmp_path):
    config = site.home / "listserv.toml"
    config.write_text(config.read_text() + "max_data_kb = 1000\n")
    limits = files(site, tmp_path)["limits.cf"]
    assert f"listserv_post_size_limit={1000 * 1024 - POST_HEADROOM}\n" in limits


def test_printing_shows_the_same_files_as_writing(site, tmp_path):
    written = files(site, tmp_path)
    printed = site.ok("mta", "postfix").stdout
    for name in FILES:
        assert f"# ==> {name} <==\n{written[name]}" in printed


def test_writing_replaces_each_file_whole_and_leaves_nothing_else(site, tmp_path):
    out = tmp_path / "maps"
    out.mkdir()
    (out / "transport").write_text("stale@example.org smtp:[192.0.2.1]:25\n")
    result = site.ok("mta", "postfix", "--write", str(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary file left
    assert "stale@" not in (out / "transport").read_text()
    for name in FILES:
        assert f"wrote {out / name}" in result.stdout
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
    site.ok("list", "delete", NEWS, "--yes")
    site.ok("mta", "postfix", "--write", str(out))
    assert "news@" not in (out / "transport").read_text()


def test_a_wildcard_listen_address_is_reached_on_loopback(cli, tmp_path):
    (cli.home / "listserv.toml").write_text('[server]\nlisten = "0.0.0.0:2525"\n')
    cli.ok("list", "create", TEAM, "--name", "Team")
    assert entries(files(cli, tmp_path)["transport"])[0] == (TEAM, "listserv:[127.0.0.1]:2525")


def test_refusals(cli, tmp_path):
    (cli.home / "listserv.toml").write_text('[server]\nlisten = "127.0.0.1:0"\n')
    assert_refused(cli("mta", "postfix"), 2, "port 0")
    (cli.home / "listserv.toml").write_text("")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_refused(cli("mta", "postfix", "--write", str(blocker / "maps")), 74, str(blocker / "maps"))
    assert_refused(Cli(tmp_path / "nowhere")("mta", "postfix"), 69, "listserv home")


def test_a_home_with_no_lists_gives_empty_maps(cli, tmp_path):
    maps = files(cli, tmp_path)
    for name in ("transport", "relay_domains", "relay_recipients", "virtual"):
        assert entries(maps[name]) == []
        assert re.search(r"do not edit", maps[name])


def test_what_docs_postfix_md_shows_is_what_a_home_at_the_defaults_gets(cli, tmp_path):
    """The figures a reader copies from docs/postfix.md: the default post limit, the transport
    map of team@ and limits.cf for lists at the default size, from the code itself."""
    cli.ok("list", "create", "team@lists.example.org", "--name", "Team")
    maps = files(cli, tmp_path)
    assert doc_block("transport", "output") + "\n" == "".join(
        line + "\n" for line in maps["transport"].splitlines() if line and not line.startswith("#"))
    body = [line for line in maps["limits.cf"].splitlines() if line and not line.startswith("#")]
    assert doc_block("limits.cf", "output").splitlines() == body
    [stated] = re.findall(r"<!-- default: max_message_size_kb -->(\d+)<!-- /default -->", DOC.read_text())
    assert int(stated) == OPTIONS["max_message_size_kb"].default


@pytest.mark.parametrize("args", [["mta", "postfix"], ["lists"], ["list", "show", TEAM, "--json"],
                                  ["--help"], ["mta", "postfix", "--help"], ["--version"]])
def test_output_into_a_pipe_whose_reader_has_gone_ends_quietly_with_sigpipes_status(site, args):
    """`listserv mta postfix | grep -m1 ...` once grep has exited: a real pipe with no reader.
    Like coreutils: status 141 (128 + SIGPIPE), nothing on stderr, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "listserv", "--home", str(site.home), *args],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, ""), (args, done.returncode, done.stderr)


def test_mta_postfix_into_grep_m1_prints_the_line_and_nothing_else(site):
    command = shlex.join([sys.executable, "-m", "listserv", "--home", str(site.home), "mta", "postfix"])
    done = subprocess.run(["bash", "-c", f"{command} | grep -m1 urgent; echo \"status=${{PIPESTATUS[0]}}\""],
                          capture_output=True, text=True, timeout=60)
    line, status = done.stdout.splitlines()
    assert line.startswith("news+urgent@example.net") and done.stderr == ""
    assert status in ("status=0", "status=141")  # 0 when listserv had written everything before grep left
