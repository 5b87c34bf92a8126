"""Issue 9 end to end, against `listserv serve` on loopback: hostile messages are refused with
the documented reply while honest posts sent at the same moment are answered and delivered;
RCPT is answered while every DATA check is busy; a check that runs out of time answers 451
and keeps nothing; STARTTLS and over-long SMTP lines get a permanent code and a sentence.

No test here measures time: they assert replies, their order, the log and the spool."""

from __future__ import annotations

import json
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from listserv import mimescan

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

LIST = "news@example.org"


def spooled(home: Path) -> list[Path]:
    spool = home / "data" / "spool"
    return [entry for sub in ("incoming", "outgoing") if (spool / sub).exists()
            for entry in (spool / sub).iterdir()]


def delivered(home: Path) -> int:
    return len(list((home / "data" / "outbox" / "new").iterdir()))


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    cli, list_key, _ = make_site(tmp_path_factory.mktemp("door"), people,
                                 {"alice": "immediate", "sally": "immediate"})
    return cli, list_key


@pytest.fixture(scope="module")
def server(site):
    cli, _ = site
    with ServeProcess(cli.home) as proc:  # copies go to the outbox maildir
        yield proc


# -- the hostile messages of the issue -----------------------------------------------------------

def folded_header(people) -> bytes:
    """An outsider's message with a 5 MB header folded into short lines (SMTP allows them)."""
    fill = b"X-Fill: x" + b"\r\n x" * (5 * 1024 * 1024 // 4)
    return mf.crlf("\r\n".join(mf.headers(people["mallory"])).encode()) + b"\r\n" + fill + b"\r\n\r\nHi\r\n"


def params(count: int = 8000) -> bytes:
    return b"Content-Type: text/plain; charset=us-ascii" \
        + b"".join(b";\r\n p%d=%d" % (n, n) for n in range(count)) + b"\r\n\r\nHello.\r\n"


def outer_params(people) -> bytes:
    return mf.crlf("\r\n".join(mf.headers(people["mallory"])).encode() + b"\r\n") + params()


def signed_params(people, list_key) -> bytes:
    """A member's real post, signed and encrypted by her gpg, whose content has 8,000 parameters."""
    alice = people["alice"]
    return mf.message(mf.headers(alice), mf.encrypted_entity(mf.sign_and_encrypt(alice, list_key, params())))


def many_parts(people) -> bytes:
    parts = [b"Content-Type: text/plain\r\n\r\nx"] * 20_000
    return mf.message(mf.headers(people["mallory"]), mf.multipart("multipart/mixed", parts))


def test_hostile_messages_are_refused_while_honest_posts_sent_with_them_are_delivered(site, server, people):
    cli, list_key = site
    hostile = {
        "folded-header": (folded_header(people), (552, "5.3.4"), "header-too-long"),
        "params": (outer_params(people), (554, "5.6.0"), "too-many-params"),
        "signed-params": (signed_params(people, list_key), (554, "5.6.0"), "too-many-params"),
        "parts": (many_parts(people), (554, "5.6.0"), "too-many-parts"),
    }
    honest = [mf.post(people[who], list_key, body=f"Honest post {n} from {who}.")
              for n, who in enumerate(["alice", "sally"] * 3)]
    before = delivered(cli.home)
    with ThreadPoolExecutor(max_workers=2 * len(hostile) + len(honest)) as pool:
        # Each hostile message twice, on its own connection, interleaved with the honest ones.
        attacks = [(name, pool.submit(submit, server.port, LIST, raw))
                   for name, (raw, _, _) in hostile.items() for _ in range(2)]
        posts = [pool.submit(submit, server.port, LIST, raw) for raw in honest]
        replies = [(name, future.result()) for name, future in attacks]
        answers = [future.result() for future in posts]
    for name, (code, text) in replies:
        assert (code, text.split()[0]) == hostile[name][1], (name, code, text)
        assert "\n" not in text and "Traceback" not in text
    assert [code for code, _ in answers] == [250] * len(honest), answers
    for _, text in answers:
        server.wait_log(rf"delivered qid={text.split()[-1]} sent=2 failed=0")
    assert delivered(cli.home) - before == 2 * len(honest)  # every copy of every honest post
    assert spooled(cli.home) == []  # and nothing of the hostile ones
    reasons = [row["reason"] for row in json.loads(cli.ok("rejections", LIST, "--json").stdout)]
    for name, (_, _, reason) in hostile.items():
        assert reasons.count(reason) >= 2, (name, reasons)


def gpg_running(keys: Path) -> int:
    """gpg processes (not the agent) working on the keyring in `keys`, from /proc."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name in ("gpg", "gpg2") \
                and str(keys).encode() in b" ".join(argv):
            count += 1
    return count


def test_a_limit_inside_the_encryption_tells_only_a_signer_which_it_was(site, server, people):
    """Inside a member's signed post the reply names the limit; inside an outsider's unsigned
    one it is the one 550 for everything, so the list is no oracle for what it decrypted."""
    cli, list_key = site
    content = b"Content-Type: text/plain\r\n\r\n" + b"a" * (mimescan.MAX_LINE + 1) + b"\r\n"
    alice, mallory = people["alice"], people["mallory"]
    signed = mf.message(mf.headers(alice), mf.encrypted_entity(mf.sign_and_encrypt(alice, list_key, content)))
    unsigned = mf.message(mf.headers(mallory), mf.encrypted_entity(mf.encrypt_only(mallory, list_key, content)))
    assert submit(server.port, LIST, signed) == \
        (552, "5.3.4 A line of the message is longer than this list accepts.")
    assert submit(server.port, LIST, unsigned) == \
        (550, "5.7.1 Not accepted: this list takes only posts signed by a current member's key.")
    assert spooled(cli.home) == []


def test_rcpt_is_answered_while_every_data_check_is_busy(site, server, people):
    """Five posts whose checks each keep gpg busy (60 MB decompressed from ~100 KB) fill the
    DATA threads; another client's RCPT, sent once four gpg are at work on them, must be
    answered before any of the five."""
    cli, list_key = site
    lines = (b"0" * 70 + b"\r\n") * (60_000_000 // 72)
    bomb = mf.message(mf.headers(people["mallory"]),
                      mf.encrypted_entity(mf.encrypt_only(people["mallory"], list_key, lines)))
    assert len(bomb) < 500_000
    events: list[str] = []
    lock = threading.Lock()
    sent = threading.Barrier(6)

    def heavy() -> int:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=120) as client:
            client.ehlo("heavy.test")
            client.mail("m@example.com")
            client.rcpt(LIST)
            assert client.docmd("DATA")[0] == 354
            client.send(bomb + b".\r\n")
            sent.wait(60)
            code, _ = client.getreply()
            with lock:
                events.append("data")
            return code

    with ThreadPoolExecutor(max_workers=5) as pool:
        checks = [pool.submit(heavy) for _ in range(5)]
        with smtplib.SMTP("127.0.0.1", server.port, timeout=120) as client:
            assert client.ehlo("light.test")[0] == 250
            assert client.mail("a@example.org")[0] == 250
            sent.wait(60)  # every heavy DATA is on the wire
            for _ in range(6000):  # until four checks are decrypting at once
                if gpg_running(cli.home / "keys") >= 4:
                    break
                threading.Event().wait(0.01)
            else:
                raise AssertionError("the checks never ran four at once")
            code, _ = client.rcpt(LIST)
            with lock:
                events.append("rcpt")
            assert code == 250
            client.rset()
        assert [future.result() for future in checks] == [550] * 5
    assert events[0] == "rcpt", events


def test_a_check_out_of_time_answers_451_keeps_nothing_and_the_retry_is_delivered_once(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate"},
                                 settings="[server]\ndata_timeout = 0.001\n")
    raw = mf.post(people["alice"], list_key, body="Sent once, answered 451, sent again.")
    with ServeProcess(cli.home) as proc:
        code, text = submit(proc.port, LIST, raw)
        assert (code, text) == (451, "4.3.0 The message took too long to check; please try again later.")
        ref = proc.wait_log(r"timeout ref=(\w+) list=news@example.org stage=data").group(1)
        # The check goes on in its thread, up to the spool, which it may no longer touch.
        proc.wait_log(rf"late ref={ref} stage=data outcome=(abandoned|never-started)")
        assert spooled(cli.home) == []
    assert json.loads(cli.ok("rejections", LIST, "--json").stdout) == []  # no reply it never sent
    (cli.home / "listserv.toml").write_text("[server]\ndata_timeout = 60\n")
    with ServeProcess(cli.home) as proc:
        code, text = submit(proc.port, LIST, raw)  # the client's retry: not a replay
        assert code == 250, text
        proc.wait_log(rf"delivered qid={text.split()[-1]} sent=1 failed=0")
    assert delivered(cli.home) == 1


# -- SMTP replies of the protocol engine ---------------------------------------------------------

def test_starttls_where_it_is_not_offered_is_a_permanent_refusal(server):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        code, features = client.ehlo("client.test")
        assert code == 250 and b"STARTTLS" not in features.upper()
        code, text = client.docmd("STARTTLS")
        assert (code, text) == (502, b"5.5.1 STARTTLS is not offered here.")
        assert client.noop()[0] == 250  # the session goes on in the clear


def test_a_line_longer_than_smtp_allows_gets_a_code_and_a_sentence(site, server, people):
    _, list_key = site
    raw = mf.post(people["alice"], list_key).replace(b"MIME-Version: 1.0\r\n",
                                                     b"MIME-Version: 1.0\r\nX-Long: " + b"x" * 1200 + b"\r\n", 1)
    assert b"x" * 1200 in raw
    code, text = submit(server.port, LIST, raw)
    assert (code, text) == (500, "5.5.2 A line of the message is longer than SMTP allows (1000 characters).")


def test_either_the_first_write_or_the_451_wins_never_both():
    from listserv.errors import Abandoned
    from listserv.smtpd import _Deadline

    writing = _Deadline()
    writing.write()
    assert not writing.abandon()  # half of it may be on disk: its own reply must stand
    writing.write()
    late = _Deadline()
    assert late.abandon()
    with pytest.raises(Abandoned):
        late.write()


# -- DATA read in blocks: what aiosmtpd did line by line still holds ------------------------------

def test_dot_stuffed_lines_arrive_as_signed(site, server, people):
    """Lines that begin with a dot travel with a second one (RFC 5321 §4.5.2); the signature
    of a signed-only post covers them byte for byte, so a wrong unstuffing is a 550."""
    cli, _ = site
    cli.ok("list", "set", LIST, "require_encryption", "false")
    try:
        raw = mf.post(people["alice"], None, body=".leading dot\n..two dots\n.\nlast", style="signed")
        assert b"\r\n.leading dot\r\n" in raw
        code, text = submit(server.port, LIST, raw)
    finally:
        cli.ok("list", "set", LIST, "require_encryption", "true")
    assert code == 250, text


def raw_session(port: int, *chunks: bytes) -> list[bytes]:
    """Sends `chunks` as they are after EHLO, MAIL and RCPT; the reply lines, in order."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        stream = sock.makefile("rb")
        stream.readline()
        sock.sendall(b"EHLO client.test\r\n")
        while not stream.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<news@example.org>\r\n")
        replies = [stream.readline(), stream.readline()]
        for chunk in chunks:
            sock.sendall(chunk)
        while not replies[-1].startswith(b"221"):
            replies.append(stream.readline())
        return replies


def test_empty_data_and_commands_sent_right_after_the_end_line(server):
    replies = raw_session(server.port, b"DATA\r\n", b".\r\nNOOP\r\nQUIT\r\n")
    assert [line[:3] for line in replies] == [b"250", b"250", b"354", b"554", b"250", b"221"], replies


def test_data_over_the_servers_limit_is_read_to_its_end_and_refused(tmp_path, people):
    cli, _, _ = make_site(tmp_path, people, {"alice": "immediate"}, settings="[server]\nmax_data_kb = 64\n")
    with ServeProcess(cli.home) as proc:
        big = b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 5000  # 500 KB, sent in one go
        replies = raw_session(proc.port, b"DATA\r\n", big + b".\r\nQUIT\r\n")
    assert replies[3].decode().strip() == "552 5.3.4 The message is larger than this server accepts."
    assert replies[4].startswith(b"221")
