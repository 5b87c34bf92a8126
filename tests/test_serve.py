"""`listserv serve` as an operator runs it: stopping it cleanly never drops a reply."""

from __future__ import annotations

import signal
import smtplib

from . import mail_factory as mf
from .conftest import make_site
from .server import ServeProcess

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
