"""Where the callback listener listens and with which certificate, from the settings; checked before the server
starts so that a wrong path or port fails with a sentence, not with a worker that dies on every boot."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from kulipa.core.config import CALLBACK_PORTS
from kulipa.core.net import trusted_proxies
from kulipa.payments.conf import mpesa_str


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    host: str
    port: int
    certfile: Path
    keyfile: Path

    @property
    def bind(self) -> str:
        """gunicorn's ``bind``: ``host:port``, IPv6 hosts in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def callback_url_port() -> int | None:
    """The port of ``MPESA_CALLBACK_URL`` (``None`` when unset). Raises :class:`ImproperlyConfigured` when the URL
    is one the gateway would not call: not HTTPS, no explicit port, or a port outside 11000-19000."""
    url = mpesa_str("CALLBACK_URL")
    if not url:
        return None
    low, high = CALLBACK_PORTS[0], CALLBACK_PORTS[-1]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
    if port is None or parts.scheme != "https" or not parts.hostname or not low <= port <= high:
        raise ImproperlyConfigured(
            f"MPESA_CALLBACK_URL {url!r}: the gateway calls back only on https://host:PORT/... with PORT from "
            f"{low} to {high}"
        )
    return port


def listener_config() -> ListenerConfig:
    """The listener's address and TLS files, checked: the port is ``CALLBACK_LISTENER_PORT`` (may differ from the
    public one behind port forwarding) or else the port of ``MPESA_CALLBACK_URL``; the certificate and key must
    load together. Also checks ``TRUSTED_PROXIES``. Raises :class:`ImproperlyConfigured` saying what to set."""
    trusted_proxies()
    public_port = callback_url_port()
    port = int(settings.CALLBACK_LISTENER_PORT or 0) or public_port
    if port is None:
        raise ImproperlyConfigured(
            "the callback listener needs a port: set MPESA_CALLBACK_URL (https://host:PORT/api/mpesa/callback...) "
            "or KULIPA_CALLBACK_PORT"
        )
    if not 0 < port < 65536:
        raise ImproperlyConfigured(f"KULIPA_CALLBACK_PORT {port} is not a TCP port")
    cert, key = str(settings.CALLBACK_TLS_CERT or ""), str(settings.CALLBACK_TLS_KEY or "")
    if not cert or not key:
        raise ImproperlyConfigured(
            "the callback listener serves HTTPS only: set KULIPA_CALLBACK_TLS_CERT (certificate and chain, PEM) and "
            "KULIPA_CALLBACK_TLS_KEY (its private key, PEM)"
        )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ImproperlyConfigured(
            f"KULIPA_CALLBACK_TLS_CERT={cert} / KULIPA_CALLBACK_TLS_KEY={key} cannot be used together: {exc}"
        ) from None
    host = str(settings.CALLBACK_LISTENER_HOST or "0.0.0.0")  # noqa: S104 (the gateway must reach it)
    return ListenerConfig(host=host, port=port, certfile=Path(cert), keyfile=Path(key))
