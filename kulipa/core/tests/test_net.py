"""``client_ip``: who sent a request, directly or through the reverse proxies we trust (table tests)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory

from kulipa.core.net import client_ip, parse_address

PROXIES = ["10.0.0.0/24", "2001:db8:ff::/48", "192.0.2.10"]


def request(remote_addr: str | None, forwarded: str | None = None) -> Any:
    req = RequestFactory().get("/")
    if forwarded is not None:
        req.META["HTTP_X_FORWARDED_FOR"] = forwarded
    if remote_addr is None:
        del req.META["REMOTE_ADDR"]
    else:
        req.META["REMOTE_ADDR"] = remote_addr
    return req


@pytest.mark.parametrize(
    ("remote_addr", "forwarded", "expected"),
    [
        # Not through a trusted proxy: the peer, whatever the header claims.
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.7", "203.0.113.5"),  # spoofed by an untrusted client
        ("203.0.113.5", "10.0.0.1", "203.0.113.5"),  # claiming to be a proxy changes nothing
        ("10.0.1.1", "198.51.100.7", "10.0.1.1"),  # just outside the trusted /24
        # Through a trusted proxy: the right-most address that is not a trusted proxy.
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", "1.1.1.1, 198.51.100.7", "198.51.100.7"),  # the client's own header stays unread
        ("10.0.0.1", "198.51.100.7, 10.0.0.2", "198.51.100.7"),  # chain: edge proxy 10.0.0.2, then 10.0.0.1
        ("10.0.0.1", "6.6.6.6,198.51.100.7 ,10.0.0.3,  192.0.2.10", "198.51.100.7"),  # three trusted hops
        ("10.0.0.1", "198.51.100.7,,10.0.0.2", "198.51.100.7"),  # empty list elements are ignored
        ("10.0.0.1", None, "10.0.0.1"),  # the proxy asking on its own behalf
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.7, 10.0.0.2", "10.0.0.7"),  # all trusted: the left-most of the chain
        # Ports and brackets as some proxies write them.
        ("10.0.0.1", "198.51.100.7:52311", "198.51.100.7"),
        ("10.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("10.0.0.1", "[2001:db8::7]", "2001:db8::7"),
        # IPv6, and IPv4 as a dual-stack socket reports it.
        ("2001:db8:ff::1", "2001:DB8:0:0::7", "2001:db8::7"),
        ("2001:db8:ff::1", "198.51.100.7, 2001:db8:ff:1::2", "198.51.100.7"),
        ("2001:db8:1::5", "198.51.100.7", "2001:db8:1::5"),  # IPv6 peer outside the trusted /48
        ("::ffff:10.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("::ffff:203.0.113.5", "198.51.100.7", "203.0.113.5"),
        ("10.0.0.1", "::ffff:198.51.100.7", "198.51.100.7"),
        # Garbage: never read past it; what the trusted chain vouches for so far.
        ("10.0.0.1", "unknown", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.7, unknown", "10.0.0.1"),  # the proxy wrote junk: the client is not guessed
        ("10.0.0.1", "198.51.100.7, junk, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "evil.example, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", "198.51.100.7:http", "10.0.0.1"),
        ("10.0.0.1", "[198.51.100.7]", "10.0.0.1"),
        ("10.0.0.1", "[2001:db8::7", "10.0.0.1"),
        ("10.0.0.1", "999.1.1.1", "10.0.0.1"),
        ("10.0.0.1", "for=198.51.100.7", "10.0.0.1"),  # RFC 7239 syntax belongs in Forwarded, not here
        ("10.0.0.1", "198.51.100.7\x00", "10.0.0.1"),
        # The server did not say.
        (None, "198.51.100.7", None),
        ("", "198.51.100.7", None),
        ("unix:/run/kulipa.sock", "198.51.100.7", None),
    ],
)
def test_client_ip(settings: Any, remote_addr: str | None, forwarded: str | None, expected: str | None) -> None:
    settings.TRUSTED_PROXIES = PROXIES
    assert client_ip(request(remote_addr, forwarded)) == expected


@pytest.mark.parametrize(
    ("remote_addr", "forwarded", "expected"),
    [
        ("10.0.0.1", "198.51.100.7", "10.0.0.1"),
        ("127.0.0.1", "198.51.100.7", "127.0.0.1"),
        ("::ffff:127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_without_trusted_proxies_the_header_is_never_read(
    settings: Any, remote_addr: str, forwarded: str | None, expected: str
) -> None:
    settings.TRUSTED_PROXIES = []
    assert client_ip(request(remote_addr, forwarded)) == expected


def test_a_proxy_given_as_ipv4_mapped_ipv6_is_trusted(settings: Any) -> None:
    settings.TRUSTED_PROXIES = ["::ffff:10.0.0.1"]
    assert client_ip(request("10.0.0.1", "198.51.100.7")) == "198.51.100.7"
    assert client_ip(request("::ffff:10.0.0.1", "198.51.100.7")) == "198.51.100.7"


@pytest.mark.parametrize("bad", [["10.0.0.300"], ["proxy.internal"], ["10.0.0.0/33"], "10.0.0.1"])
def test_a_bad_trusted_proxy_setting_is_named(settings: Any, bad: Any) -> None:
    settings.TRUSTED_PROXIES = bad
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        client_ip(request("10.0.0.1", "198.51.100.7"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:8080", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:", None),
        ("192.0.2.1:123456", None),
        ("[2001:db8::1]x", None),
        ("", None),
        ("localhost", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (str(address) if address is not None else None) == expected
