"""Every shipped template renders with realistic data; a missing value is an error, never a
blank; an operator's HOME/templates/ overrides the shipped ones."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser

import pytest

from listserv.digest import DigestItem, render_digest
from listserv.model import MailingList, Member
from listserv.settle import Failed
from listserv.templates import TemplateError, Templates, shipped_templates

NEWS = MailingList("news@example.org", "News", "A" * 40, {"subject_prefix": "[News]"}, "2026-01-05T10:00:00Z")
ALICE = Member(NEWS.address, "alice@example.org", "B" * 40, "Alice", "digest", "admin", None, "", 3)


def test_footer_alert_welcome_and_notices_render():
    templates = Templates()
    footer = templates.render("footer.txt.j2", list=NEWS, footer="Meetings: first Monday.")
    assert "news+urgent@example.org" in footer and "Meetings: first Monday." in footer
    assert "Alice" in templates.render("alert.txt.j2", list=NEWS, sender="Alice")
    welcome = templates.render("welcome.txt.j2", list=NEWS, member=ALICE, fingerprint=NEWS.fingerprint,
                               schedule="daily 18:00", require_encryption=True)
    assert welcome.startswith("Subject: Welcome to News\n\n") and "daily 18:00" in welcome
    unusable = templates.render("notice-unusable-keys.txt.j2", list=NEWS, members=[ALICE])
    assert ALICE.fingerprint in unusable
    bounces = templates.render("notice-bounces.txt.j2", list=NEWS, member=ALICE)
    assert "3 times" in bounces
    revoked = templates.render("notice-key-revoked.txt.j2", list=NEWS, member=ALICE)
    assert revoked.startswith("Subject: A member's key was revoked on News\n\n")
    assert ALICE.fingerprint in revoked and "can no longer post" in revoked
    assert f"listserv member set {NEWS.address} {ALICE.email} --key FILE" in revoked
    removed = templates.render("notice-quarantined.txt.j2", list=NEWS, qid="abc123", reason="unknown-key")
    assert removed.startswith("Subject: A post to News was accepted but could not be sent\n\n")
    assert "(queue id abc123)" in removed and "removed from the list" in removed
    broken = templates.render("notice-quarantined.txt.j2", list=NEWS, qid="abc123", reason="internal-error")
    assert "qid=abc123" in broken and "removed" not in broken
    left = templates.render("notice-member-left.txt.j2", list=NEWS, member=ALICE)
    assert left.startswith("Subject: Alice left News\n\n") and ALICE.email not in left
    refused = templates.render("request-reply.txt.j2", list=NEWS, results=(), refused="Line 2 (x-x): no.")
    assert refused.startswith("Subject: Your request to News\n\n") and "was not carried out:\n\nLine 2 (x-x): no." in refused
    changed = templates.render("notice-admin-changes.txt.j2", list=NEWS, admin=ALICE, changes=["removed X <x@y>"])
    assert changed.startswith("Subject: Alice changed News by a signed request\n\n") and "- removed X <x@y>\n" in changed
    done = templates.render("request-reply.txt.j2", list=NEWS, results=(("x-status", "You are Alice."),), refused=None)
    assert "line by line:\n\n> x-status\nYou are Alice.\n" in done


def test_digest_renders_contents_posts_html_and_attachments():
    post = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"Bring <water> & snacks.\r\n--b\r\nContent-Type: application/pdf\r\n"
            b"Content-Disposition: attachment; filename=map.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"JVBERi0=\r\n--b\r\nContent-Type: text/plain\r\n\r\n-- \r\nfooter\r\n--b--\r\n")
    items = [DigestItem("Alice", "[News] Picnic", 1796000000.0, "post", post),
             DigestItem("Bob", "URGENT: [News] Rain", 1796003600.0, "alert",
                        b"Content-Type: text/plain\r\n\r\nIt will rain.\r\n")]
    raw = render_digest(Templates(), NEWS, 1, 7, items, datetime(2026, 11, 30, tzinfo=timezone.utc))
    digest = BytesParser(policy=policy.default).parsebytes(raw)
    assert digest["Subject"] == "News digest, Vol 1, Issue 7"
    text = digest.get_body(("plain",)).get_content()
    assert " 1. [News] Picnic" in text and " 2. [ALERT] URGENT: [News] Rain" in text
    assert "Bring <water> & snacks." in text and "footer" not in text
    assert "[attached below: map.pdf]" in text
    html = digest.get_body(("html",)).get_content()
    assert "Bring &lt;water&gt; &amp; snacks." in html  # autoescaped
    [attachment] = list(digest.iter_attachments())
    assert attachment.get_filename() == "map.pdf"


def test_a_digest_part_says_which_part_it_is_and_numbers_on():
    items = [DigestItem("Bob", "[News] Rain", 1796003600.0, "post", b"Content-Type: text/plain\r\n\r\nWet.\r\n")]
    raw = render_digest(Templates(), NEWS, 1, 7, items, datetime(2026, 11, 30, tzinfo=timezone.utc),
                        part=2, parts=3, first=5, html=False)
    digest = BytesParser(policy=policy.default).parsebytes(raw)
    assert digest["Subject"] == "News digest, Vol 1, Issue 7, part 2 of 3"
    assert digest.get_content_type() == "text/plain"  # no HTML alternative in this form
    assert " 5. [News] Rain" in digest.get_content()


UNDELIVERED = dict(qid="0123456789ab", when="2026-11-30 10:00 UTC", copies=4,
                   failed=[Failed("Rita", "C" * 40, "the relay refused the copy as too large (552-5.3.4)")],
                   reasons=["4 x the relay refused the copy as too large (552-5.3.4)"])


def test_undelivered_notices_render():
    templates = Templates()
    admins = templates.render("notice-undelivered.txt.j2", list=NEWS, kind="post", poster=ALICE, posts=0,
                              set_aside=[], **UNDELIVERED)
    assert admins.startswith("Subject: Undelivered: a post on News reached no member\n\n")
    assert ALICE.fingerprint in admins and "4 x the relay refused the copy as too large" in admins
    assert "The poster was told." in admins
    digest = templates.render("notice-undelivered.txt.j2", list=NEWS, kind="digest", poster=None, posts=3,
                              set_aside=[], **UNDELIVERED)
    assert "It was not marked sent: its posts (3) wait for the next digest" in digest
    aside = templates.render("notice-undelivered.txt.j2", list=NEWS, kind="digest", poster=None, posts=1,
                             set_aside=["Alice"], **UNDELIVERED)
    assert "The post by Alice" in aside and ".undeliverable" in aside
    poster = templates.render("notice-undelivered-poster.txt.j2", list=NEWS, kind="alert", digest=False,
                              **UNDELIVERED)
    assert poster.startswith("Subject: Your alert to News was not delivered\n\n")
    assert "reached none of the list's members" in poster and "Rita" not in poster
    partial = templates.render("notice-copies-failed.txt.j2", list=NEWS, kind="post", sent=3, **UNDELIVERED)
    assert "3 of 4 copies" in partial and "Rita  key " + "C" * 40 in partial


def welcome(require_encryption: bool) -> str:
    text = Templates().render("welcome.txt.j2", list=NEWS, member=ALICE, fingerprint=NEWS.fingerprint,
                              schedule="daily 18:00", require_encryption=require_encryption)
    return " ".join(text.split())  # the sentences, whatever the line breaks


def test_the_welcome_says_posts_must_be_encrypted_when_the_list_requires_it():
    text = welcome(require_encryption=True)
    assert "must be signed with your key" in text and "must be encrypted to the list's key" in text
    assert "a post that is not encrypted is refused" in text and "should" not in text
    assert "signed with your key and encrypted to the list." in text


def test_the_welcome_says_encryption_is_up_to_the_member_when_the_list_takes_signed_posts():
    text = welcome(require_encryption=False)
    assert "must be signed with your key" in text and "must be encrypted" not in text
    assert "Encrypting it to the list's key is up to you" in text
    assert "anyone who handles it on its way to the list can read it" in text
    assert "To post: write to news@example.org, signed with your key." in text


@pytest.mark.parametrize("count, words", [(1, ["1 message since", "1 message.", "bounced 1 time."]),
                                          (2, ["2 messages since", "2 messages.", "bounced 2 times."])])
def test_counts_read_right_in_the_singular_and_the_plural(count, words):
    items = [DigestItem("Alice", f"[News] Topic {n}", 1796000000.0, "post",
                        b"Content-Type: text/plain\r\n\r\nText.\r\n") for n in range(count)]
    raw = render_digest(Templates(), NEWS, 1, 1, items, datetime(2026, 11, 30, tzinfo=timezone.utc))
    digest = BytesParser(policy=policy.default).parsebytes(raw)
    bounces = Templates().render("notice-bounces.txt.j2", list=NEWS, member=Member(
        NEWS.address, "a@example.org", "B" * 40, "Alice", bounces=count))
    shown = " ".join([digest.get_body(("plain",)).get_content(), digest.get_body(("html",)).get_content(), bounces])
    for word in words:
        assert word in shown, word
    unusable = Templates().render("notice-unusable-keys.txt.j2", list=NEWS, members=[ALICE] * count)
    subject, _, body = unusable.partition("\n\n")
    if count == 1:
        assert subject == "Subject: A member without a usable key on News" and body.startswith("This member of")
    else:
        assert subject == "Subject: Members without a usable key on News" and body.startswith("These members of")


@pytest.mark.parametrize("origin, subject, says", [
    ("member", "Subject: Alice wrote to news-owner@example.org", "signed by their pinned key (" + "B" * 40),
    ("outside", "Subject: From outside News: a message to news-owner@example.org", "its From line is the sender's word"),
    ("sealed", "Subject: From outside News: a message to news-owner@example.org", "listserv could not read it"),
])
def test_the_admins_are_told_plainly_whether_a_member_signed_mail_to_list_owner(origin, subject, says):
    text = Templates().render("notice-owner.txt.j2", list=NEWS, origin=origin, encrypted=False,
                              signer=ALICE if origin == "member" else None)
    first, _, body = text.partition("\n\n")
    assert first == subject  # one line: the body starts after the blank line
    assert says in " ".join(body.split())
    assert ("OUTSIDE" in body) == (origin != "member")


def test_the_key_reply_names_the_fingerprint_and_says_to_check_it_another_way():
    text = Templates().render("sendkey-reply.txt.j2", list=NEWS, fingerprint=NEWS.fingerprint, address="x@example.com")
    first, _, body = text.partition("\n\n")
    assert first == "Subject: The OpenPGP key of news@example.org"
    assert f"Fingerprint: {NEWS.fingerprint}" in body and "another way" in body


def test_missing_value_is_an_error_not_a_blank():
    with pytest.raises(TemplateError):
        Templates().render("footer.txt.j2", list=NEWS)  # no `footer` value


def test_operator_templates_come_first(tmp_path):
    (tmp_path / "footer.txt.j2").write_text("Our own footer for {{ list.name }}.\n")
    assert Templates(tmp_path).render("footer.txt.j2", list=NEWS, footer="") == "Our own footer for News.\n"
    assert "URGENT" in Templates(tmp_path).render("alert.txt.j2", list=NEWS, sender="A")


def test_the_statement_notice_names_who_asked_and_how_to_check_it():
    text = Templates().render("notice-statement-signed.txt.j2", list=NEWS, asked=("Alice", "Bob"))
    first, _, body = text.partition("\n\n")
    assert first == "Subject: A statement of News is signed"
    assert "Alice, Bob asked" in " ".join(body.split())
    assert "statement@example.org=news@example.org" in body


def test_every_shipped_template_is_exercised_here():
    tested = {"footer.txt.j2", "alert.txt.j2", "welcome.txt.j2", "notice-unusable-keys.txt.j2",
              "notice-bounces.txt.j2", "notice-bounce-paused.txt.j2", "notice-key-revoked.txt.j2", "digest.txt.j2", "digest.html.j2", "digest-subject.txt.j2",
              "notice-undelivered.txt.j2", "notice-undelivered-poster.txt.j2", "notice-copies-failed.txt.j2",
              "notice-quarantined.txt.j2", "notice-member-left.txt.j2", "request-reply.txt.j2", "notice-admin-changes.txt.j2",
              "notice-owner.txt.j2", "sendkey-reply.txt.j2",
              "notice-key-expiring.txt.j2", "notice-keys-expiring.txt.j2", "notice-missed-posts.txt.j2",
              "notice-held.txt.j2", "notice-held-rejected.txt.j2", "notice-held-reminder.txt.j2",
              "notice-emergency.txt.j2", "notice-statement-signed.txt.j2", "notice-resend-refused.txt.j2",
              "notice-resend-undelivered.txt.j2",
              *KEY_CHANGE_TEMPLATES, *JOIN_TEMPLATES}
    assert {p.name for p in shipped_templates().iterdir()} == tested


def test_the_key_watch_notices_render_their_counts_and_never_an_address():
    templates = Templates()
    warned = templates.render("notice-key-expiring.txt.j2", list=NEWS, member=ALICE, fingerprint=ALICE.fingerprint,
                              until="2026-12-12T10:00:00Z", days=1, threshold=7)
    assert warned.startswith("Subject: Your key for News stops working in 1 day\n\n")
    assert f"gpg --quick-set-expire {ALICE.fingerprint} 1y '*'" in warned and "x-key-update" in warned
    soon = templates.render("notice-key-expiring.txt.j2", list=NEWS, member=ALICE, fingerprint=ALICE.fingerprint,
                            until="2026-12-12T10:00:00Z", days=0, threshold=1)
    assert soon.startswith("Subject: Your key for News stops working within a day\n\n")
    rows = [{"name": "Alice", "fingerprint": ALICE.fingerprint, "until": "2026-12-12T10:00:00Z", "days": 3,
             "stopped": False}]
    summary = templates.render("notice-keys-expiring.txt.j2", list=NEWS, rows=rows)
    assert summary.startswith("Subject: A key stops working soon on News\n\n")
    assert f"  Alice  key {ALICE.fingerprint}  stops 2026-12-12T10:00:00Z (in 3 days)\n" in summary
    assert ALICE.email not in summary
    missed = templates.render("notice-missed-posts.txt.j2", list=NEWS, count=1)
    assert "\n1 post to news@example.org could not be encrypted to your key; send an updated key.\n" in missed


KEY_CHANGE_TEMPLATES = ("key-change-challenge.txt.j2", "notice-key-change-approve.txt.j2",
                        "notice-key-changed-admins.txt.j2", "notice-key-changed-member.txt.j2",
                        "notice-key-changed-list.txt.j2")


def test_a_key_change_tells_each_what_they_need_and_the_list_only_the_pseudonym_and_date():
    from listserv.rotation import AWAITING_CODE, KeyChange

    change = KeyChange("c1", NEWS.address, "alice@example.org", "Alice", "0" * 40, "1" * 40, None, 0.0, 1.0,
                       AWAITING_CODE, "h", approved_by="Bob")
    code = "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ"
    challenge = Templates().render("key-change-challenge.txt.j2", list=NEWS, change=change, code="SECRET-CODE")
    assert "x-confirm: SECRET-CODE" in challenge and "1" * 40 in challenge
    approve = Templates().render("notice-key-change-approve.txt.j2", list=NEWS, change=change, code=code,
                                 requested="2026-01-01T00:00:00Z", confirmed="2026-01-02T00:00:00Z")
    assert f"x-approve-key: {code}" in approve and "0" * 40 in approve and "1" * 40 in approve
    assert "out of band" in approve or "channel you already" in " ".join(approve.split())
    admins = Templates().render("notice-key-changed-admins.txt.j2", list=NEWS, change=change)
    assert "Bob approved the change." in admins
    mine = Templates().render("notice-key-changed-member.txt.j2", list=NEWS, change=change)
    assert "1" * 40 in mine
    told = Templates().render("notice-key-changed-list.txt.j2", list=NEWS, change=change, date="2026-01-02")
    assert told.startswith("Subject: Alice's key changed on 2026-01-02\n\nAlice's key changed on 2026-01-02.")
    assert "alice@example.org" not in told and "0" * 40 not in told and "1" * 40 not in told


def test_the_bounce_pause_notice_names_the_member_by_pseudonym_and_says_how_delivery_resumes():
    text = Templates().render("notice-bounce-paused.txt.j2", list=NEWS, member=Member(
        NEWS.address, "a@example.org", "B" * 40, "Alice", bounce_paused=True), status="5.1.1",
        when="2026-11-30T10:00:00Z", source="verp")
    subject, _, body = text.partition("\n\n")
    assert subject.startswith("Subject: Delivery to Alice on News is paused")
    assert "5.1.1" in body and "2026-11-30T10:00:00Z" in body and "a delivery report" in body
    assert "x-resume" in body and "a@example.org" not in body


JOIN_TEMPLATES = ("join-challenge.txt.j2", "notice-join-approve.txt.j2", "notice-joined.txt.j2")


def test_an_invitation_tells_the_invitee_their_challenge_and_the_admins_only_their_own_code():
    from types import SimpleNamespace

    invitation = SimpleNamespace(fingerprint="1" * 40, by="Bob", approved_by="Bob", name="Dana",
                                 email="dana@example.org")
    challenge = Templates().render("join-challenge.txt.j2", list=NEWS, invitation=invitation, code="SECRET-CODE")
    assert "x-confirm: SECRET-CODE" in challenge and "1" * 40 in challenge
    approve = Templates().render("notice-join-approve.txt.j2", list=NEWS, invitation=invitation, code="APPROVE-CODE")
    assert "x-approve-join: APPROVE-CODE" in approve and "SECRET-CODE" not in approve
    assert "dana@example.org" in approve and "1" * 40 in approve
    joined = Templates().render("notice-joined.txt.j2", list=NEWS, invitation=invitation, member=ALICE)
    assert joined.startswith(f"Subject: {ALICE.name} joined News") and "approved by Bob" in joined


def test_the_held_notices_name_the_id_the_commands_and_the_reason_never_an_address():
    templates = Templates()
    held = templates.render("notice-held.txt.j2", list=NEWS, member=replace(ALICE, probation=True),
                            qid="0123456789ab", kind="post", reason="probation")
    assert held.startswith("Subject: A post by Alice waits for you (held 0123456789ab)\n\n")
    assert "x-approve: 0123456789ab" in held and "because they are on probation" in held
    assert ALICE.email not in held
    emergency = templates.render("notice-held.txt.j2", list=NEWS, member=ALICE, qid="0123456789ab", kind="post",
                                 reason="emergency")
    assert "because the list's emergency is on" in emergency and "probation" not in emergency
    rejected = templates.render("notice-held-rejected.txt.j2", list=NEWS, reason="off topic")
    assert "Their reason: off topic" in rejected
    reminder = templates.render("notice-held-reminder.txt.j2", list=NEWS, expired=[], waiting=[], shown=[])
    assert reminder.startswith("Subject: Held posts on news@example.org: 0 waiting, 0 discarded\n\n")


def test_the_emergency_notice_says_which_way_it_was_switched_and_where():
    on = Templates().render("notice-emergency.txt.j2", list=NEWS, on=True)
    assert on.startswith("Subject: The emergency on News is on\n\n") and "Every post is now held" in on
    off = Templates().render("notice-emergency.txt.j2", list=NEWS, on=False)
    assert off.startswith("Subject: The emergency on News is off\n\n") and "Posts go out again" in off
