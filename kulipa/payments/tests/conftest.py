"""Fixtures for payment tests: the REAL simulator (mpesa.sandbox) on real sockets, one per test session, reset
before each test; the shop configured to talk to it; huey in immediate mode (tasks run inline, the push engine
runs in its own thread as in the worker)."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from huey.contrib.djhuey import HUEY

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.models import Product
from kulipa.orders.models import Order
from kulipa.payments import gateway, services, tasks
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tasks import engine as get_engine
from mpesa.sandbox import RuntimeConfig, ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings

PUSH_WINDOW = 2.0

_T = TypeVar("_T")


class Simulator:
    """The running simulator and its control API (``/sandbox/...``)."""

    def __init__(self, sandbox: ThreadedSandbox) -> None:
        self.sandbox = sandbox
        self.http = httpx.Client(base_url=sandbox.control_url, timeout=10)

    def reset(self) -> None:
        self.http.post("/reset").raise_for_status()

    def configure(self, **changes: Any) -> dict[str, Any]:
        response = self.http.put("/config", json=changes)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        return config

    def faults(self, **changes: Any) -> dict[str, Any]:
        response = self.http.put("/faults", json=changes)
        response.raise_for_status()
        faults: dict[str, Any] = response.json()
        return faults

    def transactions(self, **query: str) -> list[dict[str, Any]]:
        response = self.http.get("/transactions", params=query)
        response.raise_for_status()
        return list(response.json()["transactions"])

    def transaction(self, third_party_reference: str) -> dict[str, Any] | None:
        return next((t for t in self.transactions() if t["third_party_reference"] == third_party_reference), None)

    def known_transaction(self, third_party_reference: str) -> dict[str, Any]:
        """:meth:`transaction`, failing the test when the simulator has none with that reference."""
        tx = self.transaction(third_party_reference)
        if tx is None:
            raise AssertionError(f"the simulator has no transaction {third_party_reference}")
        return tx

    def callbacks(self) -> list[dict[str, Any]]:
        return list(self.http.get("/callbacks").json()["deliveries"])

    def prompts(self, msisdn: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"/phone/{msisdn}/prompts").json()["prompts"])

    def answer(self, msisdn: str, conversation_id: str, *, approve: bool) -> dict[str, Any]:
        action = "approve" if approve else "decline"
        response = self.http.post(f"/phone/{msisdn}/prompts/{conversation_id}/{action}", json={"pin": "1234"})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="session")
def sandbox() -> Iterator[ThreadedSandbox]:
    runtime = RuntimeConfig(
        answer_delay=0.0,
        push_window=PUSH_WINDOW,
        long_wait=PUSH_WINDOW,
        allow_insecure_callbacks=True,
        callback_backoff=0.01,
        callback_backoff_max=0.05,
        callback_timeout=10.0,
    )
    with run_in_thread(fast_settings(runtime=runtime)) as running:
        yield running
        gateway.reset()


def shop_mpesa_settings(sandbox: ThreadedSandbox, **overrides: Any) -> dict[str, Any]:
    values = {
        **django_settings.MPESA,
        "ENVIRONMENT": "simulator",  # the local simulator (asked for explicitly)
        "API_KEY": "",  # the simulator's own public key
        "PUBLIC_KEY": sandbox.public_key,
        "BASE_URL": sandbox.base_url,
        "PORT_OFFSET": sandbox.port_offset,
        "SERVICE_PROVIDER_CODE": sandbox.service_provider_code,
        "MODE": "sync",
        "CALLBACK_PATH_TOKEN": "",
        "CALLBACK_ALLOWED_IPS": [],
        "PUSH_WINDOW_SECONDS": PUSH_WINDOW,
        "RECONCILE_MARGIN_SECONDS": 1,
        "RECONCILE_BACKOFF_SECONDS": 0.05,
        "RECONCILE_BACKOFF_MAX_SECONDS": 0.2,
        "CALLBACK_GRACE_SECONDS": 0.2,
        "SANDBOX_PHONE_URL": f"{sandbox.control_url}/phone/",
    }
    values.update(overrides)
    return values


@pytest.fixture
def sim(sandbox: ThreadedSandbox, settings: Any, transactional_db: None) -> Iterator[Simulator]:
    """A reset simulator, the shop pointed at it, huey immediate. Waits for the push engine after the test."""
    simulator = Simulator(sandbox)
    simulator.reset()
    settings.MPESA = shop_mpesa_settings(sandbox)
    was_immediate = HUEY.immediate
    HUEY.immediate = True
    try:
        yield simulator
    finally:
        assert get_engine().wait_idle(30), "push engine still busy after the test"
        simulator.reset()
        get_engine().wait_idle(10)
        HUEY.immediate = was_immediate
        simulator.http.close()


def wait_for(
    predicate: Callable[[], _T | None], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> _T:
    """Poll ``predicate`` until it returns something truthy (so never ``None``); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def reconcile_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Run the periodic sweep (as the worker's cron would) until ``predicate`` holds."""

    def step() -> Any:
        get_engine().wait_idle(5)
        tasks.sweep()
        return predicate()

    return wait_for(step, timeout=timeout, interval=0.1, what=what)


def product(*, price: str = "125.50", stock: int = 10) -> Product:
    from decimal import Decimal

    n = secrets.token_hex(4)
    return Product.objects.create(
        name=f"Produto {n}", slug=f"produto-{n}", price=Decimal(price), stock_on_hand=stock, is_active=True
    )


_customers = itertools.count(1)


def place(
    quantities: dict[int, int], *, msisdn: str | None = None, token: str | None = None, push: bool = True
) -> tuple[Order, PaymentAttempt]:
    """Checkout without HTTP (``checkout_place``), then queue the push unless ``push`` is False. Each call is its
    own customer (session, and a number of its own ending in 01, "pays at once", unless ``msisdn`` is given), so
    the abuse limits per session and per number only meet the tests that ask for them."""
    from kulipa.orders.tests.factories import snapshot_for

    n = next(_customers)
    msisdn = msisdn or f"25884{n % 100_000:05d}01"

    order, attempt = services.checkout_place(
        quantities=quantities,
        confirmed=snapshot_for(quantities),
        customer_name="Ana Cossa",
        msisdn=msisdn,
        email="",
        delivery_address="",
        user=None,
        session_key=f"place-{n}",
        checkout_token=token or secrets.token_urlsafe(16),
    )
    assert attempt is not None
    if push:
        tasks.dispatch_payment(attempt.pk)
    return order, attempt


def checkout(client: Client, quantities: dict[int, int], *, msisdn: str) -> Order:
    """Buy over HTTP: cart in the session, GET /checkout/ (for the signed snapshot of what it shows), POST it,
    follow to the order page. Returns the order."""
    session = client.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in quantities.items()}
    session.save()
    page = client.get(reverse("orders:checkout"))
    assert page.status_code == 200, page.content[:500]
    response = client.post(
        reverse("orders:checkout"),
        {
            "customer_name": "Ana Cossa",
            "msisdn": msisdn,
            "email": "",
            "delivery_address": "Av. Julius Nyerere 100, Maputo",
            "checkout_token": secrets.token_urlsafe(24),
            "snapshot": page.context["snapshot"],
        },
    )
    assert response.status_code in (302, 303), response.content[:500]
    public_id = response["Location"].rstrip("/").split("/")[-1]
    return Order.objects.get(public_id=public_id)


def status(client: Client, order: Order) -> dict[str, Any]:
    response = client.get(reverse("payments:status", kwargs={"public_id": order.public_id}))
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def wait_status(client: Client, order: Order, *, timeout: float = 15.0, **expected: Any) -> dict[str, Any]:
    """Poll the JSON status endpoint (like the page does) until it shows ``expected``."""
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        last = status(client, order)
        return all(last.get(k) == v for k, v in expected.items())

    try:
        wait_for(check, timeout=timeout, what=f"status {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {last}") from None
    return last
