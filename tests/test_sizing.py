"""The arithmetic of copy sizes (listserv.sizing); the end-to-end proof is in test_lossless."""

from __future__ import annotations

import pytest

from listserv import sizing


@pytest.mark.parametrize("limit", [200_000, 1_000_000, 10_240_000 - sizing.RELAY_ADDS])
@pytest.mark.parametrize("envelope", [900, 5000])
def test_the_largest_inner_is_the_last_that_fits(limit, envelope):
    inner = sizing.largest_inner(limit, envelope)
    assert sizing.copy_bound(inner, envelope) <= limit < sizing.copy_bound(inner + 1, envelope)


def test_armor_and_packets_are_counted():
    # 48 bytes of packets become one 66-byte armor line (64 characters and CRLF).
    assert sizing.copy_bound(0, 0) == sizing.ARMOR_FRAME + -(-sizing.PACKETS // 48) * 66
    big = 7_000_000
    ratio = (sizing.copy_bound(big, 0) - sizing.copy_bound(0, 0)) / big
    assert 1.375 < ratio < 1.375 * (1 + 1 / 100)


def test_postfix_default_limit_leaves_the_default_post_size_room():
    """options.py: max_message_size_kb's default stays under what Postfix's default
    message_size_limit (10,240,000 bytes) can deliver, with a list's usual overhead."""
    from listserv.options import OPTIONS

    usual = sizing.Overhead(inner=1500, envelope=1000)  # measured: 1,467 and 973 for "News"
    largest = sizing.largest_post(sizing.copy_limit(10_240_000), usual)
    assert OPTIONS["max_message_size_kb"].default * 1024 < largest


def test_no_relay_means_no_limit():
    assert sizing.copy_limit(None) is None
    assert sizing.largest_post(None, sizing.Overhead(1500, 1000)) is None
    assert sizing.fits(10**9, 1000, None)
