"""Test helpers shared by kulipa.orders and kulipa.inventory tests."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.orders.models import Order
from kulipa.orders.services import order_create
from kulipa.orders.snapshot import CheckoutSnapshot, snapshot_current
from kulipa.payments.models import PaymentAttempt

_seq = itertools.count(1)


def product_make(*, price: str = "100.00", stock: int = 10, name: str | None = None, active: bool = True) -> Product:
    n = next(_seq)
    return Product.objects.create(
        name=name or f"Produto {n}",
        slug=f"produto-{n}-{timezone.now().timestamp():.0f}",
        price=Decimal(price),
        stock_on_hand=stock,
        is_active=active,
    )


def snapshot_for(quantities: dict[int, int]) -> CheckoutSnapshot:
    """What a checkout page would show for ``quantities`` now (database prices): the ``confirmed`` snapshot of
    a customer who confirmed exactly that. Inactive or unknown products give lines not for sale (order_create
    then refuses them as unavailable); quantities that are not ints are left out (order_create refuses them
    before it compares)."""
    return snapshot_current(
        quantities={pid: qty for pid, qty in quantities.items() if isinstance(qty, int) and not isinstance(qty, bool)}
    )


def order_make(
    quantities: dict[int, int],
    *,
    token: str | None = None,
    user: Any = None,
    session_key: str | None = None,
    msisdn: str | None = None,
    confirmed: CheckoutSnapshot | None = None,
) -> Order:
    """An order of Ana Cossa (258841234567), from a session of its own unless ``session_key`` is given."""
    n = next(_seq)
    return order_create(
        quantities=quantities,
        confirmed=confirmed if confirmed is not None else snapshot_for(quantities),
        customer_name="Ana Cossa",
        msisdn=msisdn or "258841234567",
        email="",
        delivery_address="",
        user=user,
        session_key=session_key if session_key is not None else f"s{n}",
        checkout_token=token if token is not None else f"tok-{next(_seq)}-{timezone.now().timestamp()}",
    )


def attempt_make(*, order: Order, state: str = PaymentAttempt.State.AWAITING_CALLBACK) -> PaymentAttempt:
    return PaymentAttempt.objects.create(
        order=order,
        third_party_reference=f"T{next(_seq):08d}",
        msisdn=order.msisdn,
        amount=order.total,
        mode="sync",
        state=state,
    )


def age(order: Order, *, minutes: int = 1) -> None:
    """Move the order's and its reservations' expiry into the past."""
    past = timezone.now() - timedelta(minutes=minutes)
    Order.objects.filter(pk=order.pk).update(expires_at=past)
    order.reservations.update(expires_at=past)
    order.refresh_from_db()


def run_concurrently(fn: Callable[[int], Any], n: int, *, timeout: float = 60) -> list[tuple[str, Any]]:
    """Run ``fn(i)`` in ``n`` threads started together (Barrier). Returns ``("ok", value)`` or ``("error", exc)``
    per thread, in thread order. Every thread closes its own database connection."""
    barrier = threading.Barrier(n)
    results: list[tuple[str, Any]] = [("missing", None)] * n

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = ("ok", fn(i))
        except BaseException as exc:  # reported to the test
            results[i] = ("error", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return results
