"""The shop's M-Pesa clients, built from ``settings.MPESA``. One per process, created on first use.

Configuration (all in ``settings.MPESA``, filled from the environment in ``kulipa/settings.py``):

* ``API_KEY`` / ``PUBLIC_KEY`` (``MPESA_API_KEY`` / ``MPESA_PUBLIC_KEY``): the portal's credentials.
  ``PUBLIC_KEY`` may also be the path of a file holding the key.
* ``ENVIRONMENT`` ``simulator`` means **the local simulator** (``mpesa.sandbox``), and only that (a missing API key
  never does; ``kulipa/settings.py`` picks the simulator by default in development only): base URL
  ``http://127.0.0.1`` (or ``BASE_URL``), the real ports moved by ``PORT_OFFSET``, the simulator's public API key
  (``mpesa.sandbox.DEFAULT_API_KEY``) unless ``API_KEY`` is set. Its public key changes with its private key, so
  whoever starts the simulator (the run command) passes it on in ``MPESA_PUBLIC_KEY`` (the simulator prints it and
  serves it at ``GET /sandbox``). ``sandbox`` and ``live`` are Vodacom's gateways.
* ``BASE_URL``: overrides the environment's host (``ENVIRONMENT`` sandbox/live) for a real gateway too.
* ``C2B_READ_TIMEOUT_SECONDS``: how long a push may be held open; never below :data:`MIN_C2B_READ_TIMEOUT`
  because answers after more than 90 s have been measured (reference §5.1).
* ``INITIATOR_IDENTIFIER`` / ``SECURITY_CREDENTIAL``: needed for reversals (the simulator's defaults are used
  when talking to the local simulator and these are empty).

The sync :class:`mpesa.Client` (status queries, reversals from the worker) is shared by the process. The
:class:`mpesa.AsyncClient` is per event loop: the push engine asks for it from its own loop. Clients are cached per
configuration, so changed settings (tests use ``override_settings``) get new ones.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from kulipa.core.config import LIVE, MPESA_ENVIRONMENTS, SANDBOX, SIMULATOR, read_public_key
from kulipa.payments.conf import MIN_C2B_READ_TIMEOUT
from mpesa import AsyncClient, Client, Config, Environment, MpesaError, Outcome, Ports, QueryResult, Result, Timeouts
from mpesa.config import Operation

logger = logging.getLogger(__name__)

SANDBOX_HOST = "http://127.0.0.1"
SANDBOX_API_KEY = "kulipa-sandbox-api-key-000000001"
"""= ``mpesa.sandbox.DEFAULT_API_KEY`` (public on purpose); repeated so the web process need not import aiohttp."""
SANDBOX_INITIATOR_IDENTIFIER = "MPesa2018"
SANDBOX_SECURITY_CREDENTIAL = "Mpesa2019"
MAX_CONNECTIONS = 6000
"""Connection pool of the async client: above the push engine's limit, so a push never waits for the pool."""

_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

_lock = threading.Lock()
_sync_clients: dict[Config, Client] = {}
_async_clients: dict[tuple[int, Config], tuple[asyncio.AbstractEventLoop, AsyncClient]] = {}


def new_reference(prefix: str) -> str:
    """A random alphanumeric reference: ``prefix`` + 15 characters (75 bits), 16 characters in all.

    Used for ThirdPartyReferences of pushes ("K…"), status queries ("Q…") and reversals ("R…"). Never derived from
    the order: a new attempt always gets a new, unguessable reference.
    """
    return prefix + "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(15))


def uses_local_sandbox() -> bool:
    """Whether payments go to the local simulator: ``MPESA_ENVIRONMENT=simulator``, never because a key is missing."""
    return str(settings.MPESA.get("ENVIRONMENT", "")).lower() == SIMULATOR


def build_config() -> Config:
    """The :class:`mpesa.Config` the current settings describe. Raises ``ImproperlyConfigured`` when incomplete."""
    mpesa: dict[str, Any] = settings.MPESA
    local = uses_local_sandbox()
    environment = SANDBOX if local else str(mpesa.get("ENVIRONMENT", "")).lower()
    if environment not in (SANDBOX, LIVE):
        raise ImproperlyConfigured(f"MPESA_ENVIRONMENT must be one of {', '.join(MPESA_ENVIRONMENTS)}")
    public_key = read_public_key(str(mpesa.get("PUBLIC_KEY", "")))
    if not public_key:
        raise ImproperlyConfigured(
            "MPESA_PUBLIC_KEY is empty. With real credentials paste the portal's public key; with the local "
            "simulator pass the key it prints (or GET /sandbox on its C2B port)."
        )
    read = float(mpesa.get("C2B_READ_TIMEOUT_SECONDS", 150))
    if read < MIN_C2B_READ_TIMEOUT:
        logger.warning("C2B_READ_TIMEOUT_SECONDS=%s is too short for the PIN window; using %s", read, 120)
        read = MIN_C2B_READ_TIMEOUT
    base_url = mpesa.get("BASE_URL") or (SANDBOX_HOST if local else None)
    initiator = mpesa.get("INITIATOR_IDENTIFIER") or (SANDBOX_INITIATOR_IDENTIFIER if local else None)
    credential = mpesa.get("SECURITY_CREDENTIAL") or (SANDBOX_SECURITY_CREDENTIAL if local else None)
    return Config(
        api_key=mpesa["API_KEY"] or (SANDBOX_API_KEY if local else ""),
        public_key=public_key,
        service_provider_code=mpesa.get("SERVICE_PROVIDER_CODE", "171717"),
        environment=Environment(environment),
        base_url=base_url,
        origin=mpesa.get("ORIGIN", "developer.mpesa.vm.co.mz"),
        initiator_identifier=initiator,
        security_credential=credential,
        ports=Ports().shifted(int(mpesa.get("PORT_OFFSET", 0))),
        timeouts=Timeouts(c2b_read=read),
        ca_bundle=mpesa.get("CA_BUNDLE") or None,
    )


class NetworkInTransaction(RuntimeError):
    """M-Pesa was called while this thread holds a database transaction (and so, perhaps, row locks)."""


def refuse_in_transaction() -> None:
    """Raise :class:`NetworkInTransaction` when any database connection of this thread is inside ``atomic()``.

    No row lock is ever held across a call to M-Pesa (docs/concurrency.md): every call goes through this check.
    """
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            raise NetworkInTransaction("M-Pesa must not be called inside transaction.atomic()")


def query_transaction_status(*, query_reference: str, third_party_reference: str) -> QueryResult:
    """Ask what happened to a payment or reversal. Never raises for a gateway or configuration problem: those
    come back as an ``UNKNOWN`` result (the caller asks again later)."""
    refuse_in_transaction()
    try:
        return client().query_transaction_status(
            query_reference=query_reference, third_party_reference=third_party_reference
        )
    except (MpesaError, ImproperlyConfigured) as exc:
        return QueryResult(operation=Operation.QUERY, outcome=Outcome.UNKNOWN, error=f"{type(exc).__name__}: {exc}")


def reversal(*, transaction_id: str, third_party_reference: str, amount: Decimal | None) -> Result:
    """Send a reversal (once: the library never retries it). Refused before sending → ``INVALID_REQUEST``."""
    refuse_in_transaction()
    try:
        return client().reversal(
            transaction_id=transaction_id, third_party_reference=third_party_reference, amount=amount
        )
    except (MpesaError, ImproperlyConfigured) as exc:
        return Result(
            operation=Operation.REVERSAL,
            outcome=Outcome.INVALID_REQUEST,
            description="refused before sending",
            error=f"{type(exc).__name__}: {exc}"[:500],
            sent=False,
        )


def client() -> Client:
    """The process's blocking client (thread-safe). Used for status queries and reversals, never for pushes."""
    config = build_config()
    with _lock:
        existing = _sync_clients.get(config)
        if existing is None:
            existing = _sync_clients[config] = Client(config)
        return existing


def async_client() -> AsyncClient:
    """The async client of the running event loop (the push engine's). Call from that loop only.

    It allows :data:`MAX_CONNECTIONS` connections: thousands of pushes are held open at once, and a push
    must never time out waiting for a pooled connection (that would be recorded as an unknown outcome).
    """
    loop = asyncio.get_running_loop()
    config = build_config()
    key = (id(loop), config)
    with _lock:
        entry = _async_clients.get(key)
        if entry is None:
            entry = _async_clients[key] = (loop, AsyncClient(config, max_connections=MAX_CONNECTIONS))
        return entry[1]


def reset(*, timeout: float = 5.0) -> None:
    """Close and forget every client; the next call builds new ones from the settings.

    Async clients are closed on their own loop (their connections belong to it); a loop that no longer runs has
    taken its connections with it.
    """
    with _lock:
        old_sync = list(_sync_clients.values())
        old_async = list(_async_clients.values())
        _sync_clients.clear()
        _async_clients.clear()
    for sync_client in old_sync:
        sync_client.close()
    for loop, async_client_ in old_async:
        if loop.is_running() and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(async_client_.aclose(), loop).result(timeout)
