"""The list's own message: built from an allow-list, the sender shown by pseudonym only,
the real Subject inside the encryption, threads kept without exposing outside ids."""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email import policy

import pytest

from listserv.legacy_display import shown_text
from listserv.model import MailingList, Member
from listserv.stages.compose import Post, Wrapping, compose, normalise_subject

NEWS = MailingList("news@example.org", "News", "A" * 40, {"subject_prefix": "[News]"})
ALICE = Member(NEWS.address, "alice@home.example", "B" * 40, "Alice")

SUBMITTED = (
    b'Content-Type: multipart/mixed; boundary="SUBMITTER-BOUNDARY"; protected-headers="v1"\r\n'
    b"Subject: Plans for Friday\r\n"
    b"From: Alice Realname <alice@home.example>\r\n"
    b"Message-ID: <secret-id-1@home.example>\r\n"
    b"Date: Mon, 30 Nov 2026 09:15:00 +0530\r\n"
    b"Received: from laptop.home.example ([198.51.100.7])\r\n"
    b"User-Agent: Mozilla Thunderbird 115\r\n"
    b"X-Mailer: Leaky 1.0\r\n"
    b"X-Originating-IP: [198.51.100.7]\r\n"
    b"Organization: Ministry of Examples\r\n"
    b"DKIM-Signature: v=1; d=home.example; b=abc\r\n"
    b"Autocrypt: addr=alice@home.example; keydata=AAAA\r\n"
    b"\r\n"
    b"--SUBMITTER-BOUNDARY\r\n"
    b'Content-Type: multipart/alternative; boundary="ALT-BOUNDARY"\r\n\r\n'
    b"--ALT-BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\nX-Part-Leak: yes\r\n\r\n"
    b"Meet at the usual place.\r\n"
    b"--ALT-BOUNDARY\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p>Meet at the <b>usual</b> place.</p><img src="cid:img1@home.example">\r\n'
    b"--ALT-BOUNDARY--\r\n"
    b"--SUBMITTER-BOUNDARY\r\nContent-Type: image/png\r\nContent-ID: <img1@home.example>\r\n"
    b"Content-Disposition: attachment; filename=map.png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--SUBMITTER-BOUNDARY--\r\n"
)
LEAKS = (b"SUBMITTER-BOUNDARY", b"ALT-BOUNDARY", b"alice@home.example", b"Realname", b"198.51.100.7",
         b"laptop", b"Thunderbird", b"Leaky", b"Ministry", b"DKIM", b"Autocrypt", b"secret-id-1",
         b"+0530", b"X-Part-Leak", b"img1@home.example")


def make(kind="post", in_reply_to=None, references=None):
    return compose(
        Post(SUBMITTED, kind, ALICE, in_reply_to, references), NEWS, Wrapping("-- \nNews footer\n"),
        now=datetime(2026, 11, 30, 3, 45, tzinfo=timezone(timedelta(hours=5))),
        message_id="<fresh-id@example.org>",
    )


def test_nothing_of_the_submitter_survives_inside_or_outside():
    composed = make()
    for leak in LEAKS:
        assert leak not in composed.inner, leak
        assert leak not in composed.copy(b"ARMOR"), leak


def test_inner_headers_pseudonym_subject_threading_and_list_headers():
    inner = email.message_from_bytes(make().inner, policy=policy.default)
    assert str(inner["From"]) == "Alice via News <news@example.org>"
    assert str(inner["Reply-To"]) == "News <news@example.org>"
    assert inner["Subject"] == "[News] Plans for Friday"  # the protected Subject wins
    assert inner["Message-ID"] == "<fresh-id@example.org>"
    assert inner["Date"].endswith("+0000")
    assert inner["List-Id"] == "News <news.example.org>"
    assert inner["List-Post"] == "<mailto:news@example.org>"
    assert inner["List-Unsubscribe"].startswith("<mailto:news-owner@example.org")
    assert inner["List-Help"] == "<mailto:news-request@example.org?subject=help>"
    assert inner["List-Owner"] == "<mailto:news-owner@example.org>"
    assert inner.get_param("hp") == "cipher" and inner.get_param("protected-headers") == "v1"
    assert "Subject: [...]" in inner.get_all("HP-Outer")


def test_outer_headers_are_placeholders_and_rfc3156():
    outer = email.message_from_bytes(make().copy(b"-----BEGIN PGP MESSAGE-----\r\n"), policy=policy.default)
    assert outer["Subject"] == "[...]"
    assert str(outer["From"]) == "News <news@example.org>"
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    control, data = outer.iter_parts()
    assert control.get_content_type() == "application/pgp-encrypted"
    assert data.get_content_type() == "application/octet-stream"
    assert "Plans" not in str(outer) and "Alice" not in str(outer)


def test_content_html_alternative_and_attachment_kept_with_fresh_content_ids():
    inner = email.message_from_bytes(make().inner, policy=policy.default)
    parts = list(inner.iter_parts())
    alternative, image, footer = parts
    assert alternative.get_content_type() == "multipart/alternative"
    # As a client that reads protected headers shows it: the legacy display hidden.
    assert shown_text(alternative.get_body(("plain",))).strip() == "Meet at the usual place."
    html = alternative.get_body(("html",)).get_content()
    new_cid = str(image["Content-ID"]).strip("<>")
    assert new_cid.endswith("@example.org") and f"cid:{new_cid}" in html
    assert image.get_filename() == "map.png" and image.get_content() == b"\x89PNG\r\n\x1a\n"
    assert text_of(footer) == "-- \nNews footer\n"


def test_threads_keep_only_the_lists_own_ids():
    composed = make(in_reply_to="<abc@example.org>",
                    references="<outside@elsewhere.net> <root@example.org> <abc@example.org>")
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    assert inner["In-Reply-To"] == "<abc@example.org>"
    assert inner["References"] == "<root@example.org> <abc@example.org>"
    assert b"elsewhere.net" not in composed.inner and b"elsewhere.net" not in composed.outer_prefix


def test_alert_marks_subject_and_priority_headers():
    composed = make(kind="alert")
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    assert inner["Subject"] == "URGENT: [News] Plans for Friday"
    outer = email.message_from_bytes(composed.copy(b"x"), policy=policy.default)
    assert (outer["Importance"], outer["Priority"], outer["X-Priority"]) == ("high", "urgent", "1")
    assert b"X-Priority" not in make().copy(b"x")  # an ordinary post is not marked


@pytest.mark.parametrize("kind,expected", [("post", "[News] (no subject)"),
                                            ("alert", "URGENT: [News] (no subject)")])
@pytest.mark.parametrize("head", [b"", b"Subject:  \r\n"])
def test_content_without_a_subject_shows_the_placeholder(head, kind, expected):
    """Only the signed content speaks: there is no other Subject to fall back on (the
    submission's outer one is not signed)."""
    plain = head + b"Content-Type: text/plain\r\n\r\nHi\r\n"
    composed = compose(Post(plain, kind, ALICE), NEWS, Wrapping("f\n"), message_id="<x@example.org>")
    assert email.message_from_bytes(composed.inner, policy=policy.default)["Subject"] == expected
    assert composed.subject == expected  # what the digest lists


def test_attachment_metadata_of_the_submitters_client_does_not_survive():
    """Outlook (GpgOL) dates attachments in Content-Disposition, Apple Mail adds x-unix-mode
    and x-mac-* to Content-Type: the submitter's clock, time zone and system."""
    attached = (
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the file.\r\n"
        b'--B\r\nContent-Type: application/pdf; x-unix-mode=0644; x-mac-creator=4F50494D; name="plan.pdf"\r\n'
        b'Content-Disposition: attachment; filename="plan.pdf"; size=4;\r\n'
        b' creation-date="Fri, 01 Jan 1999 09:15:00 +0530";\r\n'
        b' modification-date="Fri, 01 Jan 1999 09:16:00 +0530"; read-date="Fri, 01 Jan 1999 09:17:00 +0530"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--B--\r\n"
    )
    composed = compose(Post(attached, "post", ALICE), NEWS, Wrapping("f\n"), message_id="<x@example.org>")
    for leak in (b"+0530", b"1999", b"unix-mode", b"0644", b"mac-creator", b"4F50494D", b"size="):
        assert leak not in composed.inner, leak
    _, pdf, _ = email.message_from_bytes(composed.inner, policy=policy.default).iter_parts()
    assert (pdf.get_content_type(), pdf.get_filename(), pdf.get_content_disposition()) == \
        ("application/pdf", "plan.pdf", "attachment")
    assert pdf.get_param("name") == "plan.pdf" and pdf.get_content() == b"%PDF"


# -- the legacy display (RFC 9788): the pseudonym and Subject for clients that read no
# protected headers (Mutt shows the outer "From: News", Thunderbird the outer From too) -------

LEGACY = "From: Alice via News <news@example.org>\nSubject: [News] Plans for Friday\n\n"


def text_of(part: email.message.EmailMessage) -> str:
    return part.get_content().replace("\r\n", "\n")


def first_text(message: email.message.EmailMessage) -> email.message.EmailMessage:
    """The part a client that ignores protected headers shows first: the first text/plain."""
    return next(p for p in message.walk() if p.get_content_type() == "text/plain")


def post(content: bytes, kind="post", sender=ALICE):
    return compose(Post(content, kind, sender), NEWS,
                   Wrapping("-- \nNews footer\n", "*** URGENT ALERT ***\n" if kind == "alert" else None),
                   message_id="<x@example.org>")


def test_a_client_that_ignores_protected_headers_reads_the_pseudonym_and_subject_first():
    composed = make()
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    text = first_text(inner)
    assert text_of(text) == LEGACY + "Meet at the usual place.\n"
    assert text.get_param("hp-legacy-display") == "1"  # so an RFC 9788 client hides it
    # The HTML alternative carries the same element; either alternative shows it once.
    html = inner.get_body(("html",))
    assert html.get_param("hp-legacy-display") == "1"
    assert ('<div class="header-protection-legacy-display"><pre>From: Alice via News '
            '&lt;news@example.org&gt;\nSubject: [News] Plans for Friday</pre></div>') in text_of(html)
    assert shown_text(html).strip().startswith("<p>Meet at the")
    # Attachments and the footer are no main body part: nothing is added to them.
    _, image, footer = inner.iter_parts()
    assert image.get_param("hp-legacy-display") is None and footer.get_param("hp-legacy-display") is None
    # Nothing of it outside: the copy's own header is still the placeholder and the list.
    outer = email.message_from_bytes(composed.copy(b"ARMOR"), policy=policy.default)
    assert (outer["Subject"], str(outer["From"])) == ("[...]", "News <news@example.org>")
    assert b"Alice" not in composed.outer_prefix + composed.outer_suffix
    assert b"Plans" not in composed.outer_prefix + composed.outer_suffix


def test_an_html_only_post_gets_the_element_at_the_top_of_its_body():
    html_only = (b"Subject: Plans for Friday\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                 b"<html><head><title>t</title></head><body><p>Meet.</p></body></html>\r\n")
    inner = email.message_from_bytes(post(html_only).inner, policy=policy.default)
    html, footer = inner.iter_parts()
    content = html.get_content()
    assert content.index("<body>") < content.index("header-protection-legacy-display") < content.index("<p>Meet.")
    assert "Subject: [News] Plans for Friday</pre>" in content and html.get_param("hp-legacy-display") == "1"
    assert "header-protection-legacy-display" not in shown_text(html)


@pytest.mark.parametrize("content", [
    b"Subject: Plans for Friday\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n",
    b'Subject: Plans for Friday\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b'--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename="notes.txt"\r\n\r\n'
    b"file\r\n--B\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n--B--\r\n",
    b"Subject: Plans for Friday\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nMeet.\r\n",
], ids=["image-only", "attachment-first", "unknown-charset"])
def test_without_a_readable_text_main_part_a_leading_part_carries_the_element(content):
    inner = email.message_from_bytes(post(content).inner, policy=policy.default)
    leading, *rest = inner.iter_parts()
    assert leading.get_content_type() == "text/plain" and leading.get_param("hp-legacy-display") == "1"
    assert text_of(leading) == LEGACY
    assert shown_text(leading) == ""  # an RFC 9788 client shows nothing for it
    assert all(part.get_param("hp-legacy-display") is None for part in rest)


def test_an_alert_carries_the_element_in_its_banner_the_first_part():
    inner = email.message_from_bytes(post(b"Subject: Go\r\n\r\nNow.\r\n", kind="alert").inner,
                                     policy=policy.default)
    banner, text, _ = inner.iter_parts()
    assert text_of(banner).startswith(
        "From: Alice via News <news@example.org>\nSubject: URGENT: [News] Go\n\n*** URGENT ALERT ***")
    assert text.get_content().strip() == "Now." and text.get_param("hp-legacy-display") is None


def test_the_list_speaking_itself_repeats_only_the_subject():
    """Digests and notices come From the list, as their outer header says: only the Subject
    differs inside and out."""
    inner = email.message_from_bytes(post(b"Subject: Welcome\r\n\r\nHello.\r\n", sender=None).inner,
                                     policy=policy.default)
    assert text_of(first_text(inner)) == "Subject: [News] Welcome\n\nHello.\n"


def test_a_members_own_legacy_display_is_replaced_by_the_lists():
    """A client implementing RFC 9788 repeats its own protected fields; they may name the
    member (real name, address): the list's element replaces it, nothing of it survives."""
    theirs = (b'Subject: Plans for Friday\r\nContent-Type: multipart/alternative; boundary="A"\r\n\r\n'
              b'--A\r\nContent-Type: text/plain; charset=utf-8; hp-legacy-display="1"; hp="cipher"\r\n\r\n'
              b"Subject: Plans for Friday\r\nCc: Alice Realname <alice@home.example>\r\n\r\nMeet.\r\n"
              b'--A\r\nContent-Type: text/html; charset=utf-8; hp-legacy-display="1"\r\n\r\n'
              b'<html><body><div class="header-protection-legacy-display"><pre>Cc: Alice Realname'
              b" &lt;alice@home.example&gt;</pre></div><p>Meet.</p></body></html>\r\n--A--\r\n")
    composed = post(theirs)
    assert b"Realname" not in composed.inner and b"alice@home.example" not in composed.inner
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    assert text_of(first_text(inner)) == LEGACY + "Meet.\n"
    assert first_text(inner).get_param("hp") is None  # the client's payload marking stays behind
    html = inner.get_body(("html",)).get_content()
    assert html.count("header-protection-legacy-display") == 1 and "<p>Meet.</p>" in html


# -- the Subject: the prefix first, a reply's Re: once after it ------------------------------

@pytest.mark.parametrize("written, expected", [
    ("Plans", "[News] Plans"),
    ("Re: [News] Plans", "[News] Re: Plans"),
    ("[News] Re: Plans", "[News] Re: Plans"),
    ("RE: Re: [News] Plans", "[News] Re: Plans"),
    ("Re: [News] Re: [News] Plans", "[News] Re: Plans"),
    ("Aw: [News] Plans", "[News] Re: Plans"),  # German clients
    ("SV: [news] Plans", "[News] Re: Plans"),  # Scandinavian; the prefix in any case
    ("Re[2]: Plans", "[News] Re: Plans"),  # Outlook's count
    ("Re:[News]Plans", "[News] Re: Plans"),
    ("Re: URGENT: [News] Leave now", "[News] Re: Leave now"),  # a reply to an alert is a post
    ("Fwd: [News] Plans", "[News] Fwd: Plans"),  # a forward is no reply
    ("Remarks: Plans", "[News] Remarks: Plans"),  # a word that begins with Re
    ("[News]", "[News] (no subject)"),
])
def test_the_subject_prefix_goes_first_and_a_reply_reads_re_once(written, expected):
    assert normalise_subject(written, "[News]", urgent=False) == expected


def test_a_reply_sent_as_an_alert_is_marked_urgent_before_the_prefix():
    assert normalise_subject("Re: URGENT: [News] Leave now", "[News]", urgent=True) == \
        "URGENT: [News] Re: Leave now"


def test_the_composed_message_carries_the_normalised_subject():
    composed = post(b"Subject: RE: Re: [News] Plans for Friday\r\n\r\nYes.\r\n")
    assert email.message_from_bytes(composed.inner, policy=policy.default)["Subject"] == \
        "[News] Re: Plans for Friday"
    assert composed.subject == "[News] Re: Plans for Friday"


@pytest.mark.parametrize("kind,body", [
    ("text/plain; charset=utf-8", "Ärger über Öl\r\nZweite Zeile\r\n".encode()),
    ("application/octet-stream", bytes(range(256))),
])
def test_an_8bit_attachment_is_kept_byte_for_byte(kind, body):
    """Mutt sends UTF-8 text attachments as 8bit: such a post was accepted (250), then crashed
    compose and was quarantined. Its bytes come through, re-encoded 7-bit safe."""
    content = (b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               + "Grüße\r\n".encode() + b"--BB\r\nContent-Type: " + kind.encode()
               + b"\r\nContent-Transfer-Encoding: 8bit\r\nContent-Disposition: attachment; filename=notes\r\n\r\n"
               + body + b"\r\n--BB--\r\n")
    composed = compose(Post(content, "post", ALICE), NEWS, Wrapping("-- \nNews\n"),
                       message_id="<fresh-id@example.org>")
    assert composed.inner.isascii()
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    [attachment] = [part for part in inner.walk() if part.get_filename() == "notes"]
    assert attachment.get_payload(decode=True) == body


def test_a_forwarded_message_keeps_its_own_headers_the_parts_around_it_do_not():
    """An attached message/rfc822 is content: its From, Subject and Date are what the member
    chose to pass on. The attaching part's own headers are cut as any part's are."""
    content = (b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
               b"Content-Type: text/plain\r\n\r\nSee the memo below.\r\n--BB\r\n"
               b"Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=memo.eml\r\n"
               b"X-Client-Note: dropped\r\n\r\n"
               b"From: Director <director@agency.example>\r\nSubject: Do not forward\r\n"
               b"Date: Mon, 30 Nov 2026 09:00:00 -0500\r\nContent-Type: text/plain\r\n\r\nThe plan.\r\n--BB--\r\n")
    composed = compose(Post(content, "post", ALICE), NEWS, Wrapping("-- \nNews\n"),
                       message_id="<fresh-id@example.org>")
    inner = email.message_from_bytes(composed.inner, policy=policy.default)
    [part] = [p for p in inner.walk() if p.get_content_type() == "message/rfc822"]
    assert part.get_filename() == "memo.eml" and part["X-Client-Note"] is None
    memo = part.get_payload(0)
    assert (memo["From"], memo["Subject"]) == ("Director <director@agency.example>", "Do not forward")
    assert memo.get_content().strip() == "The plan."
