"""What `listserv serve` writes to its log: listserv's own lines only, each saying a thing once."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

LIST = "news@example.org"
# "2026-05-01 12:00:00,123 INFO listserv.deliver delivered ..." (cli/serve.py's format)
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (?P<logger>\S+) ")


def test_a_refused_relay_connection_is_named_once(tmp_path: Path, people):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate"})
    with ServeProcess(cli.home, "--relay", "127.0.0.1:9") as proc:  # nothing listens there
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        line = proc.wait_log(r"deferred qid=\S+ copy=\d+ attempts=1 reason=.*").group(0)
    assert line.endswith("reason=connect-ConnectionRefusedError"), line  # one word: the journal's reason code
    assert "connect: connect:" not in proc.log


def test_the_log_holds_listservs_own_lines_only(tmp_path: Path, people):
    """No third party's logger gets through: python-gnupg's "WARNING gnupg ..." lines are gone
    with python-gnupg, and aiosmtpd's would name every client's address."""
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate", "bob": "digest"})
    with ServeProcess(cli.home) as proc:
        assert submit(proc.port, LIST, mf.post(people["alice"], list_key))[0] == 250
        assert submit(proc.port, LIST, b"Subject: not signed\r\n\r\nHello.\r\n")[0] == 550
        proc.wait_log(r"delivered qid=\S+ sent=1")
        cli.ok("digest", "send", LIST)
        proc.wait_log(r"delivered qid=\S+ sent=1 ", timeout=30)
    records = [_RECORD.match(line) for line in proc.lines]
    loggers = {record.group("logger") for record in records if record}
    assert loggers and all(name.startswith("listserv.") for name in loggers), loggers
    assert not any(name.startswith("gnupg") for name in loggers)
