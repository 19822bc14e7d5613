"""Client configuration: credentials, environment, ports and timeouts. No global state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from mpesa.errors import ConfigurationError
from mpesa.validation import validate_short_code

DEFAULT_ORIGIN = "developer.mpesa.vm.co.mz"


class Environment(StrEnum):
    SANDBOX = "sandbox"
    LIVE = "live"

    @property
    def base_url(self) -> str:
        return {
            Environment.SANDBOX: "https://api.sandbox.vm.co.mz",
            Environment.LIVE: "https://api.vm.co.mz",
        }[self]


class Operation(StrEnum):
    C2B = "c2b"
    QUERY = "query"
    REVERSAL = "reversal"
    B2C = "b2c"
    B2B = "b2b"
    CUSTOMER_NAME = "customer_name"


ENDPOINTS: dict[Operation, tuple[str, str]] = {
    Operation.C2B: ("POST", "/ipg/v1x/c2bPayment/singleStage/"),
    Operation.QUERY: ("GET", "/ipg/v1x/queryTransactionStatus/"),
    Operation.REVERSAL: ("PUT", "/ipg/v1x/reversal/"),
    Operation.B2C: ("POST", "/ipg/v1x/b2cPayment/"),
    Operation.B2B: ("POST", "/ipg/v1x/b2bPayment/"),
    Operation.CUSTOMER_NAME: ("GET", "/ipg/v1x/queryCustomerName/"),
}
"""Method and path of each operation (reference §2.1); GET operations take query-string parameters."""


@dataclass(frozen=True, slots=True)
class Ports:
    """One TCP port per operation, the same in sandbox and production (reference §2.1)."""

    c2b: int = 18352
    query: int = 18353
    reversal: int = 18354
    b2c: int = 18345
    b2b: int = 18349
    customer_name: int = 19323

    def for_operation(self, operation: Operation) -> int:
        port: int = getattr(self, operation.value)
        return port

    def shifted(self, offset: int) -> Ports:
        """The same ports moved by ``offset``, as ``mpesa-sandbox serve --port-offset`` does."""
        return Ports(**{f.name: getattr(self, f.name) + offset for f in dataclasses.fields(self)})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. The C2B read timeout must outlast the customer's PIN window: the gateway holds the request open
    until the customer answers, and answers after more than 90 s have been measured (reference §5.1)."""

    connect: float = 10.0
    read: float = 30.0
    c2b_read: float = 150.0
    write: float = 10.0
    pool: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a client needs. ``repr`` never shows the API key or the security credential."""

    api_key: str = field(repr=False)
    public_key: str = field(repr=False)
    service_provider_code: str
    environment: Environment = Environment.SANDBOX
    base_url: str | None = None
    """Overrides the environment's host, e.g. ``http://127.0.0.1`` for the local simulator."""
    origin: str = DEFAULT_ORIGIN
    initiator_identifier: str | None = field(default=None, repr=False)
    security_credential: str | None = field(default=None, repr=False)
    ports: Ports = field(default_factory=Ports)
    timeouts: Timeouts = field(default_factory=Timeouts)
    verify: bool = True
    """Kept for clarity; ``False`` is refused. TLS checks are never switched off."""
    ca_bundle: str | None = None
    """A CA file to trust in addition to the system's, e.g. the simulator's generated certificate."""
    query_retries: int = 2
    """How many times a status or name query is retried after a transport error (never a payment)."""
    retry_backoff: float = 0.5
    user_agent: str = "kulipa-mpesa/0.1"

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ConfigurationError("api_key is required")
        if not self.verify:
            raise ConfigurationError("TLS verification cannot be disabled; pass ca_bundle to trust a test CA")
        validate_short_code(self.service_provider_code)
        if self.base_url is not None:
            parsed = urlsplit(self.base_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ConfigurationError("base_url must look like https://host (ports come from `ports`)")
            if parsed.port is not None or parsed.path.strip("/"):
                raise ConfigurationError("base_url is scheme and host only: each operation has its own port")
        if self.query_retries < 0:
            raise ConfigurationError("query_retries must be zero or more")
        object.__setattr__(self, "environment", Environment(self.environment))

    @property
    def host_url(self) -> str:
        return (self.base_url or self.environment.base_url).rstrip("/")

    def url_for(self, operation: Operation, path: str) -> str:
        return f"{self.host_url}:{self.ports.for_operation(operation)}{path}"
