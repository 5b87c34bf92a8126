"""Issue 10: listserv behind a real Postfix, set up as docs/postfix.md says, with the maps
`listserv mta postfix` makes. Postfix stands in front of `listserv serve` (the Internet's
MX) and behind it (the return path), and delivers the members' copies to Maildirs.

Needs root and the postfix package (.ci/run installs it); without them these tests fail
with a sentence saying so rather than being skipped.
"""

from __future__ import annotations

import base64
import email
import json
import os
import re
import smtplib
import tempfile
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.helpers import mail as mf
from tests.helpers.cli import Cli, write_key
from tests.helpers.keys import User, make_gpg_user
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.postfix import Postfix, cannot_run, free_port
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

TEAM, OPS = "team@lists.example.org", "ops@lists.example.org"  # no system user is called either
TEAM_KB, OPS_KB = 96, 32  # ops has the smaller limit: Postfix can only enforce the larger
DAN_INBOX = "dan.inbox@example.net"  # dan@example.org is a virtual alias of this mailbox
VICTIM = "victim@example.net"  # no member: an address a spammer puts in MAIL FROM


@dataclass
class Site:
    cli: Cli
    postfix: Postfix
    serve: ServeProcess
    members: dict[str, User]
    team_key: bytes
    team_fingerprint: str

    def inbox(self, user: User) -> str:
        return DAN_INBOX if user.name == "Dan" else user.email


def parsed(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def noise(size: int) -> str:
    """Text that no OpenPGP compression shrinks, `size` bytes or so."""
    text = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    reason = cannot_run()
    if reason:
        pytest.fail(reason, pytrace=False)
    base = tmp_path_factory.mktemp("postfix-site")
    dan = make_gpg_user(tmp_path_factory.mktemp("d"), "Dan", "dan@example.org")
    members = {k: people[k] for k in ("alice", "bob", "sally", "rita")} | {"dan": dan}
    postfix = Postfix(domains=["example.org", "example.net"],
                      mailboxes=[u.email for u in members.values() if u is not dan] + [DAN_INBOX, VICTIM],
                      aliases={dan.email: DAN_INBOX})
    try:
        postfix.configure()
        cli = Cli(base / "home")
        cli.ok("init")
        listen = f"127.0.0.1:{free_port()}"
        (cli.home / "listserv.toml").write_text(
            f'[server]\nlisten = "{listen}"\n\n[delivery]\nrelay = "127.0.0.1:{postfix.returns}"\n')
        for address, name, kb, keys in ((TEAM, "Team", TEAM_KB, members), (OPS, "Ops", OPS_KB, ["alice"])):
            cli.ok("list", "create", address, "--name", name)
            cli.ok("list", "set", address, "max_message_size_kb", str(kb))
            for key in keys:
                user = members[key]
                cli.ok("member", "add", address, user.email, "--key", write_key(base, user), "--name", user.name)
        cli.ok("member", "set", TEAM, members["bob"].email, "--role", "admin")
        cli.ok("mta", "postfix", "--write", str(postfix.maps))
        postfix.install_maps()
        postfix.start()
        team_key = cli.ok("list", "key", TEAM).stdout.encode()
        fingerprint = json.loads(cli.ok("list", "show", TEAM, "--json").stdout)["fingerprint"]
        with ServeProcess(cli.home, listen=listen) as serve:
            yield Site(cli, postfix, serve, members, team_key, fingerprint)
    finally:
        postfix.stop()


@pytest.fixture(scope="module")
def first_post(site):
    """alice's post to team@, as her own MTA hands it to the list domain's MX."""
    raw = mf.post(site.members["alice"], site.team_key, body="Through a real Postfix.", subject="Hello",
                  to=TEAM)
    code, reply = submit(site.postfix.inbound, TEAM, raw, mail_from=site.members["alice"].email)
    assert code == 250, (code, reply)
    return {key: site.postfix.wait_mail(site.inbox(user), lambda m: m["List-Id"] is not None)
            for key, user in site.members.items()}


def test_every_member_gets_a_copy_in_their_maildir_that_their_own_key_opens(site, first_post):
    for key, raw in first_post.items():
        user = site.members[key]
        plain = decrypt(user, encrypted_part(raw), site.team_key, site.team_fingerprint)
        assert b"Through a real Postfix." in plain, key
        copy = parsed(raw)
        assert copy["List-Id"] == "Team <team.lists.example.org>"
        assert copy["Return-Path"].startswith("<team-bounces+") and copy["Return-Path"].endswith("@lists.example.org>")
    # dan's copy went to dan@example.org and was delivered through his alias: the return path
    # maps addresses (no receive_override_options=no_address_mappings).
    assert parsed(first_post["dan"])["X-Original-To"] == "dan@example.org"


def test_an_alert_to_list_plus_urgent_reaches_every_member(site):
    raw = mf.post(site.members["sally"], site.team_key, body="Leave the building.", subject="Now",
                  to=TEAM.replace("@", "+urgent@"))
    code, reply = submit(site.postfix.inbound, TEAM.replace("@", "+urgent@"), raw,
                         mail_from=site.members["sally"].email)
    assert code == 250, (code, reply)
    for user in site.members.values():
        site.postfix.wait_mail(site.inbox(user), lambda m: m["Importance"] == "high")


def test_mail_to_list_owner_reaches_the_admins_encrypted_through_listserv(site):
    """Postfix hands LIST-owner@ to listserv, which re-encrypts it to each admin (bob only)."""
    message = b"From: someone@example.com\r\nSubject: For the admins\r\n\r\nPlease call me.\r\n"
    code, reply = submit(site.postfix.inbound, "team-owner@lists.example.org", message,
                         mail_from="someone@example.com")
    assert code == 250, (code, reply)
    bob = site.members["bob"]
    raw = site.postfix.wait_mail(bob.email, lambda m: str(m["From"]).endswith("<team-owner@lists.example.org>"))
    assert b"Please call me." not in raw  # it never sat in a mailbox, or in Postfix's queue, in clear
    notice = parsed(decrypt(bob, encrypted_part(raw), site.team_key, site.team_fingerprint))
    [letter] = [part.get_payload(0) for part in notice.walk() if part.get_content_type() == "message/rfc822"]
    assert letter["Subject"] == "For the admins" and "Please call me." in letter.get_content()
    for user in site.members.values():
        if user is not bob:
            assert not any("team-owner@" in str(parsed(m)["From"]) for m in site.postfix.mailbox(site.inbox(user)))


def test_a_stranger_asking_list_sendkey_gets_the_key_in_their_mailbox(site):
    ask = f"From: {VICTIM}\r\nTo: team-sendkey@lists.example.org\r\nSubject: key\r\n\r\nkey please\r\n"
    code, reply = submit(site.postfix.inbound, "team-sendkey@lists.example.org", ask.encode(), mail_from=VICTIM)
    assert code == 250, (code, reply)
    raw = site.postfix.wait_mail(VICTIM, lambda m: m["Auto-Submitted"] == "auto-replied")
    reply_ = parsed(raw)
    assert reply_.get_content_type() == "multipart/signed" and reply_["Return-Path"] == "<>"
    [key] = [p for p in reply_.walk() if p.get_content_type() == "application/pgp-keys"]
    assert f"Fingerprint: {site.team_fingerprint}" in reply_.get_payload(0).get_body(("plain",)).get_content()
    assert key.get_content().replace(b"\r\n", b"\n").strip() == site.team_key.strip()


def test_the_checks_of_the_recipe_show_what_docs_postfix_md_says(site):
    postfix = site.postfix
    # Step 3: the listserv transport, and the transport map naming it.
    entry = postfix.run("postconf", "-c", str(postfix.conf), "-M", "listserv/unix")
    assert entry.split() == ["listserv", "unix", "-", "-", "n", "-", "-", "smtp"], entry
    hop = postfix.run("postmap", "-c", str(postfix.conf), "-q", TEAM, f"hash:{postfix.maps / 'transport'}")
    assert hop == f"listserv:[127.0.0.1]:{site.serve.port}\n"
    # Step 4: the lines of limits.cf in main.cf, with spaces around the =.
    limits = [line.replace("=", " = ", 1) for line in (postfix.maps / "limits.cf").read_text().splitlines()
              if line and not line.startswith("#")]
    main_cf = (postfix.conf / "main.cf").read_text().splitlines()
    assert sorted(line for line in main_cf if "message_size_limit" in line or line.startswith("listserv_")) \
        == sorted(limits)


@pytest.mark.parametrize("address", ["nobody@lists.example.org", "team-help@lists.example.org"])
def test_addresses_listserv_does_not_take_are_refused_by_postfix_at_rcpt(site, address):
    code, reply = submit(site.postfix.inbound, address, b"Subject: x\r\n\r\nx\r\n")
    assert code == 550 and "5.1.1" in reply, (code, reply)


def test_a_bounce_from_another_server_reaches_the_verp_address_and_is_counted(site, first_post):
    rita = site.members["rita"]
    return_path = parsed(first_post["rita"])["Return-Path"].strip("<>")
    dsn = (f"From: MAILER-DAEMON@mx.example.net\r\nTo: {return_path}\r\n"
           "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/plain\r\n\r\nMailbox full.\r\n"
           "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
           f"Final-Recipient: rfc822; {rita.email}\r\nAction: failed\r\nStatus: 5.2.2\r\n--b--\r\n").encode()
    code, reply = submit(site.postfix.inbound, return_path, dsn, mail_from="")
    assert code == 250, (code, reply)
    site.serve.wait_log(rf"bounce list={TEAM} member={rita.fingerprint}")
    bounces = {m["email"]: m["bounces"] for m in json.loads(site.cli.ok("member", "list", TEAM, "--json").stdout)}
    assert bounces[rita.email] == 1 and bounces[site.members["alice"].email] == 0


def test_a_post_over_the_limit_is_refused_during_the_smtp_dialogue(site):
    alice = site.members["alice"]
    raw = mf.post(alice, site.team_key, body=noise(TEAM_KB * 1024 + 4096), to=TEAM)
    assert len(raw) > TEAM_KB * 1024
    # An MTA that declares SIZE hears 552 at MAIL FROM; one that does not, at the end of DATA.
    with smtplib.SMTP("127.0.0.1", site.postfix.inbound, timeout=60) as client:
        client.ehlo("mx.example.org")
        code, reply = client.mail(alice.email, [f"SIZE={len(raw)}"])
        assert code == 552 and b"5.3.4" in reply, (code, reply)
    code, reply = submit(site.postfix.inbound, TEAM, raw, mail_from=alice.email)
    assert code == 552 and "5.3.4" in reply, (code, reply)
    assert "list=team@lists.example.org reason=too-large" not in site.serve.log  # never reached listserv


def test_a_post_over_a_smaller_lists_limit_is_refused_by_listserv_and_bounced_to_the_poster(site):
    alice = site.members["alice"]
    ops_key = site.cli.ok("list", "key", OPS).stdout.encode()
    raw = mf.post(alice, ops_key, body=noise(OPS_KB * 1024 + 4096), to=OPS)
    assert OPS_KB * 1024 < len(raw) < TEAM_KB * 1024 - 8192  # under Postfix's limit, over ops'
    code, reply = submit(site.postfix.inbound, OPS, raw, mail_from=alice.email)
    assert code == 250, (code, reply)  # Postfix cannot know ops' own limit
    site.serve.wait_log(rf"refused ref=\S+ list={OPS} reason=too-large")
    bounce = parsed(site.postfix.wait_mail(alice.email, lambda m: "MAILER-DAEMON" in str(m["From"])))
    report = bounce.get_body(("plain",)).get_content()
    assert "552 5.3.4 The message is larger than this list accepts (at most" in " ".join(report.split())


def test_a_cross_post_to_two_lists_reaches_both_without_being_deferred(site):
    """One SMTP transaction, RCPT team@ and RCPT ops@, as the poster's MTA sends a cross-post.
    listserv takes one list per transaction; the `listserv` transport's recipient limit of 1
    makes Postfix hand each list its own transaction, so neither hears 452 and waits."""
    alice = site.members["alice"]
    ops_key = site.cli.ok("list", "key", OPS).stdout.encode()
    both = f"{TEAM}, {OPS}"
    inner = mf.protected(alice, both, "Both", {}, mf.text_part("For team and ops at once."))
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for name, key in (("team", site.team_key), ("ops", ops_key)):
            paths += ["--recipient-file", str(Path(scratch, f"{name}.asc"))]
            Path(scratch, f"{name}.asc").write_bytes(key)
        armored = mf._gpg(alice, "--armor", "--sign", "--encrypt", "--local-user", alice.fingerprint,
                          *paths, data=inner)
    raw = mf.message(mf.outer_subject(mf.headers(alice, to=both), "..."), mf.encrypted_entity(armored))
    with smtplib.SMTP("127.0.0.1", site.postfix.inbound, timeout=60) as client:
        client.ehlo("mx.example.org")
        code, reply = client.mail(alice.email)
        assert code == 250, (code, reply)
        for address in (TEAM, OPS):
            code, reply = client.rcpt(address)
            assert code == 250, (address, code, reply)
        code, reply = client.data(raw)
    assert code == 250, (code, reply)
    qid = re.search(rb"queued as (\w+)", reply).group(1).decode()
    ops_fingerprint = json.loads(site.cli.ok("list", "show", OPS, "--json").stdout)["fingerprint"]
    for key, fingerprint, list_id in ((site.team_key, site.team_fingerprint, "Team <team.lists.example.org>"),
                                      (ops_key, ops_fingerprint, "Ops <ops.lists.example.org>")):
        seen: dict[bytes, bool] = {}

        def opened(message, key=key, fingerprint=fingerprint, list_id=list_id, seen=seen) -> bool:
            if message["List-Id"] != list_id:
                return False
            raw = message.as_bytes()
            if raw not in seen:  # wait_mail asks again every 0.1 s: decrypt each copy once
                seen[raw] = b"For team and ops at once." in decrypt(alice, encrypted_part(raw), key, fingerprint)
            return seen[raw]
        site.postfix.wait_mail(alice.email, opened)
    handed = [line for line in site.postfix.log.splitlines() if f" {qid}: to=<" in line]
    assert [line for line in handed if "status=sent" in line and "to=<team@" in line], handed
    assert [line for line in handed if "status=sent" in line and "to=<ops@" in line], handed
    assert not [line for line in handed if "status=deferred" in line], handed  # never a 452 and a retry


def test_a_post_listserv_refuses_is_bounced_by_postfix_to_the_envelope_sender_whoever_that_is(site, people):
    """docs/postfix.md, "Refused posts and backscatter": Postfix's smtpd has said 250 before
    listserv sees the post, so listserv's refusal becomes Postfix's bounce to MAIL FROM --
    here a forged one. Only what Postfix refuses at RCPT or by size is refused at once."""
    raw = mf.post(people["mallory"], site.team_key, body="Not a member.", to=TEAM)
    code, reply = submit(site.postfix.inbound, TEAM, raw, mail_from=VICTIM)
    assert code == 250, (code, reply)
    site.serve.wait_log(rf"refused ref=\S+ list={TEAM} reason=unknown-key")
    bounce = parsed(site.postfix.wait_mail(VICTIM, lambda m: "MAILER-DAEMON" in str(m["From"])))
    report = " ".join(bounce.get_body(("plain",)).get_content().split())
    assert "550 5.7.1 Not accepted: this list takes only posts signed by a current member's key." in report
