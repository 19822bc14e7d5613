"""Sync and async M-Pesa clients over one request/response model (``mpesa._protocol``).

Contract, for both faces:

* Arguments are validated before anything is sent; bad input raises :class:`~mpesa.errors.ValidationError`.
* Gateway answers are returned, never raised: every call gives a :class:`~mpesa.results.Result` whose
  ``outcome`` tells whether the money moved. A timeout or dropped connection is ``Outcome.UNKNOWN``.
* Payments (C2B, B2C, B2B) and reversals are sent exactly once. Only status and name queries are retried after
  transport errors, with exponential backoff.
* The bearer token is computed once per client. TLS is always verified; connections are pooled per host:port.
* Logs carry the operation, references, masked MSISDN, outcome and timing; never the token or credentials.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from decimal import Decimal
from types import TracebackType
from typing import Self, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport

from mpesa import _protocol as protocol
from mpesa.config import Config, Operation
from mpesa.results import CustomerNameResult, QueryResult, Result
from mpesa.token import encrypt_api_key, load_public_key

logger = logging.getLogger("mpesa")

R = TypeVar("R", bound=Result)
Amount = Decimal | int | str


def _ssl_context(config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.ca_bundle:
        context.load_verify_locations(cafile=config.ca_bundle)
    return context


class _Base:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._headers = {
            "Authorization": f"Bearer {encrypt_api_key(config.api_key, load_public_key(config.public_key))}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Origin": config.origin,
            "User-Agent": config.user_agent,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.host_url} spc={self.config.service_provider_code}>"

    def _retry_delay(self, request: protocol.PreparedRequest, attempt: int, failure: Result) -> float | None:
        """Seconds to wait before sending ``request`` again after transport failure number ``attempt`` (from 0),
        or ``None`` to give up. Only operations that move no money are ever sent again."""
        retries = self.config.query_retries if request.operation in protocol.RETRYABLE else 0
        if attempt >= retries:
            return None
        self._log(request, failure)
        return float(self.config.retry_backoff * 2**attempt)

    @staticmethod
    def _parsed(request: protocol.PreparedRequest, response: httpx.Response, started: float) -> Result:
        return protocol.parse_response(
            request.operation,
            status_code=response.status_code,
            content=response.content,
            elapsed=time.monotonic() - started,
        )

    def _finished(self, request: protocol.PreparedRequest, result: Result, kind: type[R]) -> R:
        self._log(request, result)
        assert isinstance(result, kind)
        return result

    def _log(self, request: protocol.PreparedRequest, result: Result) -> None:
        logger.info(
            "mpesa %s outcome=%s code=%s http=%s elapsed=%.3fs %s",
            request.operation.value,
            result.outcome.value,
            result.code,
            result.http_status,
            result.elapsed,
            " ".join(f"{k}={v}" for k, v in request.log_context.items()),
            extra={"mpesa_operation": request.operation.value, "mpesa_outcome": result.outcome.value},
        )


class Client(_Base):
    """Blocking client. Thread-safe; share one per process and close it (or use ``with``)."""

    def __init__(self, config: Config, *, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(config)
        self._http = httpx.Client(
            headers=self._headers,
            verify=_ssl_context(config),
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: protocol.PreparedRequest, kind: type[R]) -> R:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = self._http.request(
                    request.method, request.url, timeout=request.timeout, **request.httpx_arguments()
                )
            except httpx.TransportError as exc:
                result = protocol.transport_failure(request.operation, exc, elapsed=time.monotonic() - started)
                delay = self._retry_delay(request, attempt, result)
                if delay is not None:
                    time.sleep(delay)
                    attempt += 1
                    continue
            else:
                result = self._parsed(request, response, started)
            return self._finished(request, result, kind)

    def c2b_payment(
        self, *, amount: Amount, msisdn: str, transaction_reference: str, third_party_reference: str
    ) -> Result:
        """Push a payment prompt to the customer's phone and wait for the answer (up to the C2B read timeout).

        Never retried: on ``UNKNOWN`` ask :meth:`query_transaction_status` with ``third_party_reference``.
        """
        return self._send(
            protocol.prepare_payment(
                self.config,
                Operation.C2B,
                amount=amount,
                msisdn=msisdn,
                transaction_reference=transaction_reference,
                third_party_reference=third_party_reference,
            ),
            Result,
        )

    def query_transaction_status(self, *, query_reference: str, third_party_reference: str) -> QueryResult:
        """What happened to a transaction, by its TransactionID, ThirdPartyReference or ConversationID."""
        return self._send(
            protocol.prepare_query(
                self.config, query_reference=query_reference, third_party_reference=third_party_reference
            ),
            QueryResult,
        )

    def reversal(self, *, transaction_id: str, third_party_reference: str, amount: Amount | None = None) -> Result:
        """Give money back: the whole transaction, or ``amount`` of it. Never retried."""
        return self._send(
            protocol.prepare_reversal(
                self.config,
                transaction_id=transaction_id,
                third_party_reference=third_party_reference,
                amount=amount,
            ),
            Result,
        )

    def b2c_payment(
        self, *, amount: Amount, msisdn: str, transaction_reference: str, third_party_reference: str
    ) -> Result:
        """Pay a customer from the merchant's account. Never retried."""
        return self._send(
            protocol.prepare_payment(
                self.config,
                Operation.B2C,
                amount=amount,
                msisdn=msisdn,
                transaction_reference=transaction_reference,
                third_party_reference=third_party_reference,
            ),
            Result,
        )

    def b2b_payment(
        self,
        *,
        amount: Amount,
        receiver_party_code: str,
        transaction_reference: str,
        third_party_reference: str,
    ) -> Result:
        """Pay another business's short code. Never retried."""
        return self._send(
            protocol.prepare_b2b(
                self.config,
                amount=amount,
                receiver_party_code=receiver_party_code,
                transaction_reference=transaction_reference,
                third_party_reference=third_party_reference,
            ),
            Result,
        )

    def query_customer_name(self, *, msisdn: str, third_party_reference: str) -> CustomerNameResult:
        """The (masked) name registered to an M-Pesa number."""
        return self._send(
            protocol.prepare_customer_name(self.config, msisdn=msisdn, third_party_reference=third_party_reference),
            CustomerNameResult,
        )


class AsyncClient(_Base):
    """The same operations as :class:`Client`, as coroutines. One per event loop; ``async with`` closes it.

    Thousands of C2B requests can be pending at once (each waits for a PIN). httpx's own async pool rescans
    every connection for every request (encode/httpx#3215) and falls to tens of calls per second at 100
    concurrent requests, so by default requests go through aiohttp's connector via ``httpx-aiohttp``; the
    httpx interface (timeouts, headers, exceptions) stays the same. ``max_connections`` bounds sockets per client.
    """

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 10_000,
    ) -> None:
        super().__init__(config)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=100)
        self._http = httpx.AsyncClient(
            headers=self._headers,
            transport=transport or AiohttpTransport(verify=_ssl_context(config), limits=limits),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: protocol.PreparedRequest, kind: type[R]) -> R:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = await self._http.request(
                    request.method, request.url, timeout=request.timeout, **request.httpx_arguments()
                )
            except httpx.TransportError as exc:
                result = protocol.transport_failure(request.operation, exc, elapsed=time.monotonic() - started)
                delay = self._retry_delay(request, attempt, result)
                if delay is not None:
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
            else:
                result = self._parsed(request, response, started)
            return self._finished(request, result, kind)

    async def c2b_payment(
        self, *, amount: Amount, msisdn: str, transaction_reference: str, third_party_reference: str
    ) -> Result:
        """See :meth:`Client.c2b_payment`."""
        return await self._send(
            protocol.prepare_payment(
                self.config,
                Operation.C2B,
                amount=amount,
                msisdn=msisdn,
                transaction_reference=transaction_reference,
                third_party_reference=third_party_reference,
            ),
            Result,
        )

    async def query_transaction_status(self, *, query_reference: str, third_party_reference: str) -> QueryResult:
        """See :meth:`Client.query_transaction_status`."""
        return await self._send(
            protocol.prepare_query(
                self.config, query_reference=query_reference, third_party_reference=third_party_reference
            ),
            QueryResult,
        )

    async def reversal(
        self, *, transaction_id: str, third_party_reference: str, amount: Amount | None = None
    ) -> Result:
        """See :meth:`Client.reversal`."""
        return await self._send(
            protocol.prepare_reversal(
                self.config,
                transaction_id=transaction_id,
                third_party_reference=third_party_reference,
                amount=amount,
            ),
            Result,
        )

    async def b2c_payment(
        self, *, amount: Amount, msisdn: str, transaction_reference: str, third_party_reference: str
    ) -> Result:
        """See :meth:`Client.b2c_payment`."""
        return await self._send(
            protocol.prepare_payment(
                self.config,
                Operation.B2C,
                amount=amount,
                msisdn=msisdn,
                transaction_reference=transaction_reference,
                third_party_reference=third_party_reference,
            ),
            Result,
        )

    async def b2b_payment(
        self,
        *,
        amount: Amount,
        receiver_party_code: str,
        transaction_reference: str,
        third_party_reference: str,
    ) -> Result:
        """See :meth:`Client.b2b_payment`."""
        return await self._send(
            protocol.prepare_b2b(
                self.config,
                amount=amount,
                receiver_party_code=receiver_party_code,
                transaction_reference=transaction_reference,
                third_party_reference=third_party_reference,
            ),
            Result,
        )

    async def query_customer_name(self, *, msisdn: str, third_party_reference: str) -> CustomerNameResult:
        """See :meth:`Client.query_customer_name`."""
        return await self._send(
            protocol.prepare_customer_name(self.config, msisdn=msisdn, third_party_reference=third_party_reference),
            CustomerNameResult,
        )
