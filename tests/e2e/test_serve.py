"""`listserv serve` as an operator runs it: stopping it cleanly never drops a reply."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys

from tests.helpers import mail as mf
from tests.helpers.cli import Cli, make_site
from tests.helpers.server import ServeProcess

LIST = "news@example.org"


def test_sigterm_during_a_data_check_still_answers_the_client(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate"})
    raw = mf.post(people["alice"], list_key, body=("y" * 75 + "\n") * 26_000)  # 2 MB of lines
    proc = ServeProcess(cli.home, "--relay", "127.0.0.1:9").start()
    try:
        client = smtplib.SMTP("127.0.0.1", proc.port, timeout=60)
        client.ehlo("client.test")
        client.mail("alice@example.org")
        client.rcpt(LIST)
        assert client.docmd("DATA")[0] == 354
        client.send(raw + b".\r\n")
        proc.proc.send_signal(signal.SIGTERM)  # while the server checks the post
        code, text = client.getreply()
        client.close()
    finally:
        assert proc.stop() == 0
    assert code == 250, text
    qid = text.decode().split()[-1]
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as again:
        again.wait_log(rf"qid={qid}")  # the accepted post is still there after the restart


def serve_once(home, *args: str) -> subprocess.CompletedProcess:
    """`listserv serve` that is expected to refuse at start (a timeout means it served)."""
    return subprocess.run([sys.executable, "-m", "listserv", "--home", str(home), "serve", *args],
                          capture_output=True, text=True, timeout=60)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result.stderr.splitlines()[-1]


def test_the_first_line_says_where_the_copies_go(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    with ServeProcess(cli.home) as proc:
        outbox = cli.home / "data" / "outbox"
        assert proc.wait_log("listserv listening on").string == \
            f"listserv listening on 127.0.0.1:{proc.port}; copies go to the outbox {outbox}"
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:
        assert proc.wait_log("listserv listening on").string.endswith("; copies go to relay 127.0.0.1:9")
    config = cli.home / "listserv.toml"
    config.write_text(config.read_text().replace('relay = ""', 'relay = "[::1]:10026"'))
    with ServeProcess(cli.home) as proc:
        assert proc.wait_log("listserv listening on").string.endswith("; copies go to relay [::1]:10026")


def test_a_port_in_use_is_named_with_exit_69(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_once(cli.home, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 69, result.stderr
    assert last_line(result) == f"listserv: cannot listen on 127.0.0.1:{port}: address already in use."
    assert "listening on" not in result.stderr


def test_an_address_that_is_not_this_hosts_is_named_with_exit_69(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    result = serve_once(cli.home, "--listen", "192.0.2.1:8025")  # TEST-NET-1: never local
    assert result.returncode == 69, result.stderr
    assert last_line(result) == "listserv: cannot listen on 192.0.2.1:8025: cannot assign requested address."


def test_a_misspelt_relay_stops_the_start_instead_of_filling_the_outbox(tmp_path):
    cli = Cli(tmp_path / "home")
    cli.ok("init")
    config = cli.home / "listserv.toml"
    text = config.read_text().replace('relay = ""', 'rely = "127.0.0.1:10026"')
    config.write_text(text)
    result = serve_once(cli.home, "--listen", "127.0.0.1:0")
    assert result.returncode == 78, result.stderr
    line = text.splitlines().index('rely = "127.0.0.1:10026"') + 1
    assert last_line(result) == (f"listserv: {config} line {line}: unknown key 'rely' in [delivery]; "
                                 "did you mean 'relay'?")
    assert not (cli.home / "data" / "outbox").exists() and not (cli.home / "data" / "spool").exists()
