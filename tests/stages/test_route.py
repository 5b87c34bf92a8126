"""Route: which list an envelope recipient names, and whether it is a post, an urgent alert, a
request, mail for the admins, a key request or a bounce; anything else is refused with 550 5.1.1 before a byte of the message is read."""

from __future__ import annotations

import pytest

from listserv.errors import UnknownRecipient
from listserv.stages.route import Route, route

LISTS = {"news@example.org", "team@lists.example.net"}


def test_a_lists_address_is_a_post_to_it():
    assert route("news@example.org", LISTS) == Route("news@example.org", "post")
    assert route("team@lists.example.net", LISTS) == Route("team@lists.example.net", "post")


def test_the_address_is_read_as_mta_give_it_angle_brackets_spaces_and_any_case():
    for written in ("<news@example.org>", " news@example.org ", "News@Example.ORG", "<NEWS@EXAMPLE.ORG>"):
        assert route(written, LISTS) == Route("news@example.org", "post"), written


def test_plus_urgent_is_an_alert_to_the_list():
    assert route("news+urgent@example.org", LISTS) == Route("news@example.org", "alert")
    assert route("<Team+Urgent@lists.example.net>", LISTS) == Route("team@lists.example.net", "alert")


def test_a_verp_return_path_is_a_bounce_carrying_its_token():
    assert route("news-bounces+abc234@example.org", LISTS) == Route("news@example.org", "bounce", "abc234")
    # The token is compared case-insensitively (verp.member_for), so it is lowered here too.
    assert route("News-Bounces+ABC234@Example.org", LISTS) == Route("news@example.org", "bounce", "abc234")
    assert route("news-bounces+@example.org", LISTS) == Route("news@example.org", "bounce", "")


def test_the_lists_own_addresses_are_requests_mail_for_the_admins_and_key_requests():
    assert route("news-request@example.org", LISTS) == Route("news@example.org", "request")
    assert route("News-Owner@example.org", LISTS) == Route("news@example.org", "owner")
    assert route("<team-sendkey@lists.example.net>", LISTS) == Route("team@lists.example.net", "sendkey")


@pytest.mark.parametrize("recipient", [
    "other@example.org",  # no such list
    "news@example.net",  # the list's local part at another domain
    "news@sub.example.org",
    "newsletter@example.org",
    "news+digest@example.org",  # only +urgent is a suffix listserv knows
    "other+urgent@example.org",  # an alert for a list that is not here
    "other-bounces+abc@example.org",  # a bounce for a list that is not here
    "other-owner@example.org",  # the admins of a list that is not here
    "news-help@example.org",  # not one of the list's own addresses
    "news",  # no domain
    "@example.org",  # no local part
    "",
    "<>",  # the null sender is never a recipient
])
def test_anything_that_is_not_a_list_here_is_refused_as_unknown(recipient):
    with pytest.raises(UnknownRecipient) as refused:
        route(recipient, LISTS)
    assert refused.value.smtp_reply == "550 5.1.1 No such list here."
    assert refused.value.reason == "unknown-recipient"


def test_no_lists_means_every_recipient_is_unknown():
    with pytest.raises(UnknownRecipient):
        route("news@example.org", set())
