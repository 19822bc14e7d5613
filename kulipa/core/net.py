"""Who is asking: the client address of a request.

Every caller that limits, allows or logs by address (the callback allow-list, the abuse limits) asks here, so that
running behind a reverse proxy is one setting and not a change in each caller.

Behind a reverse proxy the TCP peer (``REMOTE_ADDR``) is the proxy; the client is in ``X-Forwarded-For``, to which
every proxy appends the address it received the request from. Anyone can send that header, so it is believed only
as far as proxies we trust wrote it (``settings.TRUSTED_PROXIES``, env ``KULIPA_TRUSTED_PROXIES``):

* the peer is not a trusted proxy → the peer, whatever the header says (a client cannot spoof its way in);
* the peer is a trusted proxy → the header read from the right, skipping trusted proxies: the first address that
  is not one is the client. Everything left of it was written by the client or its side and is never read.
* every address is a trusted proxy, or the next one to the left cannot be read (``unknown``, a name, junk) → the
  left-most address of the unbroken trusted chain: what our own proxies vouch for, never what the client wrote.

Addresses come back in canonical form, IPv4-mapped IPv6 (``::ffff:192.0.2.1``, what a dual-stack socket reports
for an IPv4 client) as plain IPv4, so allow-lists and limits compare like with like.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_PORT = re.compile(r":[0-9]{1,5}")


def client_ip(request: HttpRequest) -> str | None:
    """The address of the client that sent ``request`` (see the module docstring for proxies); ``None`` when the
    server did not say (no ``REMOTE_ADDR``, or one that is not an IP address, e.g. a UNIX socket)."""
    peer = parse_address(request.META.get("REMOTE_ADDR", ""))
    if peer is None:
        return None
    proxies = trusted_proxies()
    if not is_trusted(peer, proxies):
        return str(peer)
    client = peer
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address, proxies):
            break
    return str(client)


def parse_address(text: str) -> Address | None:
    """An IP address as proxies and servers write one, else ``None``: ``192.0.2.1``, ``192.0.2.1:443``,
    ``2001:db8::1``, ``[2001:db8::1]``, ``[2001:db8::1]:443``. IPv4-mapped IPv6 becomes IPv4."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _PORT.fullmatch(rest)):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _PORT.fullmatch(f":{port}"):
            return None
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if text.startswith("[") and address.version != 6:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address, proxies: Iterable[Network]) -> bool:
    """Whether ``address`` is one of ``proxies`` (addresses and networks)."""
    return any(address in network for network in proxies)


def trusted_proxies() -> tuple[Network, ...]:
    """``settings.TRUSTED_PROXIES`` parsed (read on each call: tests override it); a bad entry is a configuration
    error that names it."""
    entries = getattr(settings, "TRUSTED_PROXIES", ())
    if isinstance(entries, str):
        raise ImproperlyConfigured("TRUSTED_PROXIES must be a list of addresses or networks, not a string")
    return _networks(tuple(entries))


@functools.lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES (KULIPA_TRUSTED_PROXIES): {entry!r} is not an IP address or network (CIDR)"
            ) from None
        mapped = network.network_address.ipv4_mapped if isinstance(network, IPv6Network) else None
        if mapped is not None and network.prefixlen >= 96:  # peers are compared as IPv4 (parse_address)
            network = IPv4Network((mapped, network.prefixlen - 96))
        networks.append(network)
    return tuple(networks)
