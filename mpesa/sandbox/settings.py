"""Settings of the simulator: what it is started with (:class:`SandboxSettings`, frozen) and what the control API
may change while it runs (:class:`RuntimeConfig`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mpesa.config import Ports

DEFAULT_API_KEY = "kulipa-sandbox-api-key-000000001"
"""The sandbox's API key (32 characters, like the portal's). Public on purpose: it guards nothing."""
DEFAULT_SERVICE_PROVIDER_CODE = "171717"
DEFAULT_INITIATOR_IDENTIFIER = "MPesa2018"
DEFAULT_SECURITY_CREDENTIAL = "Mpesa2019"
B2B_SANDBOX_RECEIVER = "979797"
CALLBACK_PORT_RANGE = (11000, 19000)
_SHORT_CODE = re.compile(r"^[0-9]{5,6}$")


class SandboxConfigError(ValueError):
    """A setting the simulator refuses, with a message that says what to do instead."""


def validate_callback_url(url: str, *, allow_insecure: bool) -> str:
    """Return ``url`` when the gateway would accept it as a result URL, else raise :class:`SandboxConfigError`.

    The rule enforced is HTTPS on an explicit port in 11000–19000 (reference §5.2 lists it as unconfirmed; the
    simulator applies it so integrations are built for the strict case). ``allow_insecure`` lifts it for local
    development: any ``http(s)://host:port`` URL is then accepted.
    """
    if not isinstance(url, str):
        raise SandboxConfigError("callback_url must be a string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SandboxConfigError(f"callback_url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SandboxConfigError(f"callback_url {url!r} must be an absolute http(s) URL")
    if allow_insecure:
        return url
    low, high = CALLBACK_PORT_RANGE
    if parts.scheme != "https" or port is None or not low <= port <= high:
        raise SandboxConfigError(
            f"callback_url {url!r} refused: the gateway only calls HTTPS URLs with an explicit port between "
            f"{low} and {high} (pass --allow-insecure-callbacks / allow_insecure_callbacks for local development)"
        )
    return url


@dataclass(slots=True)
class RuntimeConfig:
    """Delays in seconds and callback settings; changed by ``PUT /sandbox/config``, restored by reset."""

    answer_delay: float = 3.0
    push_window: float = 60.0
    long_wait: float = 95.0
    callback_url: str | None = None
    allow_insecure_callbacks: bool = False
    callback_attempts: int = 5
    """Deliveries tried per callback before giving up."""
    callback_backoff: float = 1.0
    """Wait before the first retry; doubled after each failure."""
    callback_backoff_max: float = 30.0
    callback_timeout: float = 10.0
    """Seconds one delivery attempt may take."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> RuntimeConfig:
        """A copy with ``changes`` applied, checked; raises :class:`SandboxConfigError` naming the bad field."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise SandboxConfigError(f"unknown config fields: {', '.join(unknown)}")
        new = dataclasses.replace(self, **changes)
        new.check()
        return new

    def check(self) -> None:
        for name in ("answer_delay", "push_window", "long_wait", "callback_backoff", "callback_backoff_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SandboxConfigError(f"{name} must be a number of seconds >= 0")
            setattr(self, name, float(value))
        if (
            isinstance(self.callback_timeout, bool)
            or not isinstance(self.callback_timeout, int | float)
            or self.callback_timeout <= 0
        ):
            raise SandboxConfigError("callback_timeout must be a number of seconds > 0")
        self.callback_timeout = float(self.callback_timeout)
        attempts = self.callback_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
            raise SandboxConfigError("callback_attempts must be an integer from 1 to 100")
        if not isinstance(self.allow_insecure_callbacks, bool):
            raise SandboxConfigError("allow_insecure_callbacks must be true or false")
        if self.callback_url is not None:
            validate_callback_url(self.callback_url, allow_insecure=self.allow_insecure_callbacks)


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """How a simulator is started. Every field has a default that works for local development.

    ``port_offset=None`` picks a random free block of ports (tests); ``private_key_path=None`` uses a key kept in
    memory, generated once per process; ``state_dir`` holds the TLS files when there is no key file to sit next
    to (a temporary directory when ``None``).
    """

    host: str = "127.0.0.1"
    port_offset: int | None = 0
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    private_key_path: Path | None = None
    service_provider_code: str = DEFAULT_SERVICE_PROVIDER_CODE
    initiator_identifier: str = field(default=DEFAULT_INITIATOR_IDENTIFIER, repr=False)
    security_credential: str = field(default=DEFAULT_SECURITY_CREDENTIAL, repr=False)
    merchant_name: str = "Sandbox Merchant"
    tls: bool = False
    state_dir: Path | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    callback_ca_file: Path | None = None
    """Extra CA certificate(s) to trust when delivering callbacks to an HTTPS receiver."""
    shutdown_timeout: float = 0.5
    """Seconds ``close()`` lets in-flight requests finish before cutting them off."""

    def __post_init__(self) -> None:
        if not self.api_key:
            raise SandboxConfigError("api_key must not be empty")
        if not _SHORT_CODE.fullmatch(self.service_provider_code):
            raise SandboxConfigError("service_provider_code must be 5 or 6 digits")
        if self.port_offset is not None:
            ports = all_ports(Ports().shifted(self.port_offset))
            if min(ports) < 1 or max(ports) > 65535:
                raise SandboxConfigError(f"port offset {self.port_offset} puts ports outside 1-65535")
        self.runtime.check()


def all_ports(ports: Ports) -> list[int]:
    """Every port of ``ports``, C2B first."""
    return [getattr(ports, f.name) for f in dataclasses.fields(ports)]
