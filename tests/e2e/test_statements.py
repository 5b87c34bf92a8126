"""Group statements end to end: admins ask news-request@ with x-sign-this; with a quorum of 2
the list signs only once two of them sent the same text, and then each gets it signed -- a
statement anyone checks with gpg, Sequoia or `listserv verify`, which fails once altered."""

from __future__ import annotations

import email
import json
import subprocess
import time
from email import policy

import pytest

from tests.helpers import mail as mf
from tests.helpers.cli import Cli, make_site
from tests.helpers.keys import make_gpg_user
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"
STATEMENT = ("The account @news_alt_44 is not ours.\n"
             "We have never asked anyone for money. Do not send any.\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    base = tmp_path_factory.mktemp("statements")
    users = {**people, "carol": make_gpg_user(base, "Carol", "carol@example.org")}
    cli, list_key, fingerprint = make_site(base, users, {"alice": "immediate", "bob": "immediate",
                                                         "carol": "immediate", "sally": "digest"})
    for admin in ("alice", "bob", "carol"):
        cli.ok("member", "set", LIST, users[admin].email, "--role", "admin")
    cli.ok("list", "set", LIST, "statement_quorum", "2")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        yield cli, list_key, fingerprint, users, base, sink, proc


def attachment(name: str, data: bytes) -> bytes:
    head = (f'Content-Type: application/pdf; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\nContent-Transfer-Encoding: base64\r\n\r\n')
    import base64
    return head.encode() + base64.encodebytes(data).replace(b"\n", b"\r\n")


def ask(site, user, text: str, *parts: bytes) -> tuple[str, email.message.EmailMessage]:
    """x-sign-this from `user` with `text` after the commands; the reply as they read it."""
    cli, list_key, fingerprint, _, _, sink, proc = site
    before = len(sink.messages)
    body = "\n".join([f"x-list-name: {LIST}", "x-sign-this", "", text])
    inner = mf.protected(user, REQUEST, "statement", {}, mf.text_part(body), *parts)
    outer = mf.outer_subject(mf.headers(user, to=REQUEST, subject="statement"), "...")
    raw = mf.message(outer, mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner, to_self=True)))
    code, reply = submit(proc.port, REQUEST, raw)
    assert code == 250, reply
    return read(site, user, before, "Your request to")


def read(site, user, before: int, subject: str) -> tuple[str, email.message.EmailMessage]:
    _, list_key, fingerprint, _, _, sink, _ = site
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for copy in list(sink.messages)[before:]:
            if copy.rcpt_tos != (user.email,):
                continue
            inner = email.message_from_bytes(decrypt(user, encrypted_part(copy.data), list_key, fingerprint),
                                             policy=policy.default)
            if subject in str(inner["Subject"]):
                text = inner.get_body(("plain",)).get_content()
                return text, inner
        time.sleep(0.1)
    raise AssertionError(f"no '{subject}' reached {user.email}")


def files(inner) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in inner.walk() if part.get_filename()}


def gpg_verify(base, list_key: bytes, *paths) -> subprocess.CompletedProcess:
    home = base / f"reader-{time.monotonic_ns()}"
    home.mkdir(mode=0o700)
    (home / "list.asc").write_bytes(list_key)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--import", str(home / "list.asc")],
                   check=True, capture_output=True)
    return subprocess.run(["gpg", "--batch", "--homedir", str(home), "--status-fd", "1", "--verify", *map(str, paths)],
                          capture_output=True, text=True)


def sq_verify(base, list_key: bytes, path, detached=None) -> subprocess.CompletedProcess:
    (base / "list-key.asc").write_bytes(list_key)
    args = ["sq", "verify", "--signer-cert", str(base / "list-key.asc")]
    args += ["--detached", str(detached)] if detached else []
    return subprocess.run([*args, str(path)], capture_output=True, text=True)


def test_with_quorum_two_one_admin_alone_gets_nothing_signed_two_get_it_and_anyone_can_check_it(site):
    cli, list_key, fingerprint, users, base, sink, proc = site
    alice, bob = users["alice"], users["bob"]
    report = b"%PDF-1.4 the leaked memo, as evidence\n" * 50
    first, inner = ask(site, alice, STATEMENT, attachment("memo.pdf", report))
    assert "1 of 2 have asked for this statement" in first
    assert "statement.asc" not in files(inner)
    # Bob's client wrapped it differently: CRLF and trailing blanks are normalised away.
    before = len(sink.messages)
    second, inner = ask(site, bob, STATEMENT.replace("\n", "  \r\n") + "\n\n", attachment("memo.pdf", report))
    assert "Signed by the list key as a statement of news@example.org" in second and "Alice, Bob" in second
    got = files(inner)
    assert set(got) == {"statement.asc", "memo.pdf", "memo.pdf.sig"} and got["memo.pdf"] == report
    _, alices = read(site, alice, before, "is signed")  # the first asker gets it too
    assert files(alices)["statement.asc"].startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")

    (base / "statement.asc").write_bytes(got["statement.asc"])
    (base / "memo.pdf").write_bytes(report)
    (base / "memo.pdf.sig").write_bytes(got["memo.pdf.sig"])
    checked = gpg_verify(base, list_key, base / "statement.asc")
    assert checked.returncode == 0 and f"VALIDSIG {fingerprint}" in checked.stdout
    assert "NOTATION_NAME statement@example.org" in checked.stdout
    assert STATEMENT.splitlines()[0] in got["statement.asc"].decode()
    assert gpg_verify(base, list_key, base / "memo.pdf.sig", base / "memo.pdf").returncode == 0
    assert sq_verify(base, list_key, base / "statement.asc").returncode == 0
    assert sq_verify(base, list_key, base / "memo.pdf", base / "memo.pdf.sig").returncode == 0

    altered = got["statement.asc"].replace(b"never asked", b"often asked")
    (base / "altered.asc").write_bytes(altered)
    (base / "altered.pdf").write_bytes(report + b"x")
    bad = gpg_verify(base, list_key, base / "altered.asc")
    assert bad.returncode != 0 and "BADSIG" in bad.stdout
    assert gpg_verify(base, list_key, base / "memo.pdf.sig", base / "altered.pdf").returncode != 0
    assert sq_verify(base, list_key, base / "altered.asc").returncode != 0
    assert sq_verify(base, list_key, base / "altered.pdf", base / "memo.pdf.sig").returncode != 0

    # listserv verify: by the key file alone (a reader's, no home), and by the list of the home.
    reader = Cli(base / "reader-without-a-home")
    for args in (["--key", str(base / "list-key.asc")], ["--list", LIST]):
        runner = reader if args[0] == "--key" else cli
        for good in ("statement.asc", "memo.pdf", "memo.pdf.sig"):
            done = runner("verify", str(base / good), *args)
            assert done.exit_code == 0 and done.stdout.startswith(f"signed by the group {LIST} on "), done.stderr
        (base / "altered.pdf.sig").write_bytes(got["memo.pdf.sig"])
        for bad in ("altered.asc", "altered.pdf"):
            done = runner("verify", str(base / bad), *args)
            assert done.exit_code == 12 and "has been altered since it was signed" in done.stderr

    # The record holds the digest, who asked and when -- never the text.
    [round_] = [r for r in json.loads((cli.home / "data" / "listserv.json").read_text())["statements"].values()]
    assert [name for name, _ in round_["asked"]] == ["Alice", "Bob"] and round_["signed"]
    shown = cli.ok("statements", LIST).stdout
    assert "signed" in shown and "quorum 2" in shown and "asked by Alice, Bob" in shown
    assert "news_alt_44" not in shown
    for path in cli.home.rglob("*"):
        if path.is_file():
            assert b"news_alt_44" not in path.read_bytes(), path


def test_different_texts_do_not_add_up_and_a_member_may_not_ask(site):
    cli, list_key, fingerprint, users, base, sink, proc = site
    alice, carol, sally = users["alice"], users["carol"], users["sally"]
    one, _ = ask(site, alice, "We will hold a press call on Friday.")
    other, inner = ask(site, carol, "We will hold a press call on Saturday.")
    assert "1 of 2" in one and "1 of 2" in other and "statement.asc" not in files(inner)
    refused, inner = ask(site, sally, "Sally speaks for everyone.")
    assert "Only the list's admins may ask for statements (statement_signers = admins)." in refused
    assert "nothing was done" in refused.lower() and not files(inner)
    empty, _ = ask(site, carol, "")
    assert "There is no text to sign" in empty
    assert cli("statements", "tips@example.org").exit_code == 3
