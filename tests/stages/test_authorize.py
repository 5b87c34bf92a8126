"""The pure rules of the authorize stage: which key opened a submission, what the signed
content names, and when a signature seen before is a replay. (End to end, with real gpg:
tests/e2e/test_cross_list.py.)"""

from __future__ import annotations

import pytest

from listserv.errors import Unauthorized
from listserv.model import Kind, MailingList, Member
from listserv.stages.authorize import (
    SignedAddressing, authorize, encrypted_to_list, home_replay_window, replay_window, replayed,
    require_signed_for_this_list, signed_addressing,
)
from listserv.stages.open import Opened
from listserv.stages.route import Route

NEWS = MailingList("news@example.org", "News", "A" * 40)
TIPS = MailingList("tips@example.org", "Tips", "B" * 40, {"max_signature_age": "30d"})
BODY = b"Content-Type: text/plain\r\n\r\nHello.\r\n"
ALICE = Member(NEWS.address, "alice@example.org", "C" * 40, "Alice")
NOW = 1_800_000_000


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


BOTH = frozenset({NEWS.address, TIPS.address})


@pytest.mark.parametrize("earlier,addressed,is_replay", [
    (frozenset(), frozenset(), False),  # the first time anywhere
    (frozenset({NEWS.address}), frozenset(), True),  # the same list again
    (frozenset({NEWS.address}), BOTH, True),  # even a cross-post only once per list
    (frozenset({TIPS.address}), frozenset(), True),  # names nobody: once in the whole home
    (frozenset({TIPS.address}), frozenset({NEWS.address}), True),  # tips took it, yet it names news only
    (frozenset({TIPS.address}), BOTH, False),  # a cross-post naming both
    (frozenset({TIPS.address, "leaks@example.org"}), BOTH, True),  # taken where it names nobody
])
def test_a_signature_is_taken_once_in_the_home_and_once_per_list_a_cross_post_names(earlier, addressed, is_replay):
    assert replayed(earlier, NEWS, addressed) is is_replay


def test_records_are_kept_for_the_longest_window_of_any_list():
    """A record made by news@ (7 days) must still exist while tips@ (30 days) accepts the
    signature."""
    assert replay_window(TIPS) > replay_window(NEWS)
    assert home_replay_window([NEWS, TIPS]) == replay_window(TIPS)


def opened(encrypted: bool, decrypted_with: str | None) -> Opened:
    return Opened(BODY, ALICE.fingerprint, NOW, "d" * 64, encrypted, None, None, decrypted_with)


@pytest.mark.parametrize("encrypted,decrypted_with,taken", [
    (True, NEWS.fingerprint, True),  # opened by the list's own key, named or a hidden recipient
    (True, TIPS.fingerprint, False),  # encrypted to another list of the home only
    (True, "E" * 40, False),  # a member's key: no list key ever opened it
    (True, None, False),  # gpg named no key, or two: nothing proves it was this list's
    (False, None, True),  # signed only: require_encryption decides
])
def test_an_encrypted_submission_counts_only_when_the_lists_own_key_opened_it(encrypted, decrypted_with, taken):
    assert encrypted_to_list(opened(encrypted, decrypted_with), NEWS) is taken


@pytest.mark.parametrize("kind", [Kind.POST, Kind.REQUEST])
def test_a_post_or_request_encrypted_to_another_list_is_refused_with_the_one_sentence(kind):
    route = Route(NEWS.address, kind)
    with pytest.raises(Unauthorized) as refusal:
        authorize(opened(True, TIPS.fingerprint), route, NEWS, {ALICE.fingerprint: ALICE}, NOW)
    assert (refusal.value.reason, refusal.value.signer) == ("not-encrypted-to-list", ALICE.fingerprint)
    assert refusal.value.smtp_reply == f"550 5.7.1 {Unauthorized.text}"
    assert authorize(opened(True, NEWS.fingerprint), route, NEWS, {ALICE.fingerprint: ALICE}, NOW).member == ALICE
