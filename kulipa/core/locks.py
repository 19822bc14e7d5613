"""Every row lock of the shop, in one place and one order (docs/concurrency.md).

Take locks only through these functions, inside ``transaction.atomic()``, and only in this order:

1. ``orders.Order``                       — :func:`order_lock`
2. ``payments.PaymentAttempt`` of it      — :func:`order_and_attempt_lock`, :func:`order_attempts_lock`
3. ``payments.Reversal`` of an attempt    — :func:`reversal_lock`
4. ``catalog.Product``, ascending pk      — :func:`products_lock`
   then the customers holding stock     — :func:`holders_lock` (PostgreSQL advisory locks, ascending)
5. ``inventory.StockReservation`` of it   — :func:`reservations_lock`

Every lock is ``FOR NO KEY UPDATE`` on PostgreSQL (``select_for_update(no_key=True)``): no code changes a key,
and the weaker lock does not conflict with the ``FOR KEY SHARE`` that inserting a row referencing the locked one
(an event, a reservation, an attention item) takes. On SQLite locks are no-ops: every transaction starts with
``BEGIN IMMEDIATE`` (settings), which serialises writers, so the same code is correct on both engines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.db import transaction

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.payments.models import PaymentAttempt, Reversal


def _require_atomic() -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("row locks are taken inside transaction.atomic() only")


def order_lock(order_id: int) -> Order:
    """Lock 1: the order."""
    _require_atomic()
    return Order.objects.select_for_update(no_key=True).get(pk=order_id)


def order_and_attempt_lock(attempt_id: int) -> tuple[Order, PaymentAttempt]:
    """Locks 1 → 2: the attempt's order, then the attempt."""
    _require_atomic()
    order_id = PaymentAttempt.objects.values_list("order_id", flat=True).get(pk=attempt_id)
    order = order_lock(order_id)
    attempt = PaymentAttempt.objects.select_for_update(no_key=True).get(pk=attempt_id)
    return order, attempt


def order_attempts_lock(order: Order) -> list[PaymentAttempt]:
    """Lock 2 for every attempt of ``order`` (the caller holds lock 1), oldest first."""
    _require_atomic()
    return list(PaymentAttempt.objects.select_for_update(no_key=True).filter(order_id=order.pk).order_by("pk"))


def reversal_lock(reversal_id: int) -> tuple[Order, PaymentAttempt, Reversal]:
    """Locks 1 → 2 → 3: the order, the reversed attempt, the reversal."""
    _require_atomic()
    attempt_id = Reversal.objects.values_list("attempt_id", flat=True).get(pk=reversal_id)
    order, attempt = order_and_attempt_lock(attempt_id)
    reversal = Reversal.objects.select_for_update(no_key=True).get(pk=reversal_id)
    return order, attempt, reversal


def products_lock(product_ids: Iterable[int]) -> dict[int, Product]:
    """Lock 4: the products, ascending primary key, fresh from the database."""
    _require_atomic()
    ids = sorted(set(product_ids))
    products = Product.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
    return {p.pk: p for p in products}


def holder_lock_id(key: str) -> int:
    """The 64-bit advisory lock id of a holder key (``"session:…"``, ``"ip:…"``, ``"msisdn:…"``)."""
    digest = hashlib.blake2b(f"kulipa.holder:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def holders_lock(keys: Iterable[str]) -> None:
    """After the products (4): the customers (session, address, phone number) whose units held are about to be
    counted and added to, so two checkouts of one customer cannot both pass the cap. No row stands for a
    customer: on PostgreSQL these are transaction-scoped advisory locks, taken in ascending id order in one
    statement; on SQLite ``BEGIN IMMEDIATE`` already serialises writers (nothing to do)."""
    _require_atomic()
    connection = transaction.get_connection()
    ids = sorted({holder_lock_id(key) for key in keys})
    if not ids or connection.vendor != "postgresql":
        return
    # Target-list expressions are evaluated left to right: the locks are taken in ascending order.
    columns = ", ".join("pg_advisory_xact_lock(%s)" for _ in ids)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns}", ids)


def reservations_lock(order: Order) -> list[StockReservation]:
    """Lock 5: the order's reservations, by product."""
    _require_atomic()
    return list(
        StockReservation.objects.select_for_update(no_key=True).filter(order_id=order.pk).order_by("product_id")
    )
