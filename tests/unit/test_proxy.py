"""Client IP resolution behind proxies."""

from __future__ import annotations

import pytest

from smilingsteps.platform.proxy import parse_networks, resolve_client_ip

TRUSTED = parse_networks(["10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.2", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.2", "1.1.1.1, 203.0.113.5", "203.0.113.5"),
        ("10.0.0.2", "203.0.113.5, 10.9.9.9", "203.0.113.5"),
        ("10.0.0.2", "10.1.1.1, 10.2.2.2", "10.1.1.1"),
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),
        ("10.0.0.2", "garbage, 203.0.113.5", "203.0.113.5"),
        ("10.0.0.2", "203.0.113.5, garbage", "10.0.0.2"),
        ("10.0.0.2", None, "10.0.0.2"),
        ("::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_right_most_untrusted_hop_is_the_client(peer: str, forwarded: str | None, client: str) -> None:
    assert resolve_client_ip(peer, forwarded, TRUSTED) == client


def test_no_trusted_proxies_means_forwarded_for_is_ignored() -> None:
    assert resolve_client_ip("10.0.0.2", "203.0.113.5", ()) == "10.0.0.2"
