"""The pure rules of the authorize stage: what the signed content names.
(End to end, with real gpg: tests/test_cross_list.py.)"""

from __future__ import annotations

import pytest

from listserv.errors import Unauthorized
from listserv.model import MailingList
from listserv.stages.authorize import SignedAddressing, require_signed_for_this_list, signed_addressing

NEWS = MailingList("news@example.org", "News", "A" * 40)
BODY = b"Content-Type: text/plain\r\n\r\nHello.\r\n"


def addressing(*headers: str) -> SignedAddressing:
    return signed_addressing("".join(f"{h}\r\n" for h in headers).encode() + BODY)


def test_to_and_cc_are_read_from_the_signed_headers_folded_and_lowercased():
    found = addressing("To: News <NEWS+URGENT@Example.org>, =?utf-8?q?Doe=2C_J?= <j@x.example>",
                       "Cc: undisclosed-recipients:;", "Bcc: tips@example.org",
                       "List-Id: Tips list <Tips.Example.org>")
    assert found.addresses == {"news@example.org", "j@x.example"}
    assert found.list_ids == ("tips.example.org",)


@pytest.mark.parametrize("headers", [
    (),  # Mutt without protected headers, inline PGP, Apple Mail: nothing to check
    ("To: news@example.org",),
    ("To: someone@else.example", "Cc: News <News@Example.ORG>"),
    ("To: news+urgent@example.org",),
    ("To: news@example.org, tips@example.org",),  # a cross-post names this list too
    ("To: undisclosed-recipients:;",),  # a group with no address names nobody
    ("List-Id: <news.example.org>",),
    ("To: news@example.org", "List-Id: News <news.example.org>"),
])
def test_signed_content_written_for_this_list_or_naming_nobody_passes(headers):
    require_signed_for_this_list(addressing(*headers), NEWS)


@pytest.mark.parametrize("headers", [
    ("To: tips@example.org",),
    ("To: tips+urgent@example.org",),
    ("To: someone@else.example",),
    ("Cc: news@example.org.evil.example",),
    ("To: news-request@example.org",),  # another of the list's addresses is not a post to it
    ("To: news@example.org", "List-Id: Tips <tips.example.org>"),
    ("List-Id: tips.example.org",),
])
def test_signed_content_written_for_another_address_is_refused(headers):
    with pytest.raises(Unauthorized) as refusal:
        require_signed_for_this_list(addressing(*headers), NEWS)
    assert refusal.value.reason == "wrong-list"
    assert refusal.value.smtp_reply == f"550 5.7.1 {Unauthorized.text}"
