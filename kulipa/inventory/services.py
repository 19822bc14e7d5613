"""Stock writes: reserve at checkout, extend when a push starts, commit when paid, release when abandoned.

Lock order (docs/concurrency.md): Order → PaymentAttempt → Product (ascending pk) → StockReservation.
Every function here that locks products does so through :func:`products_lock` (ascending pk) and touches the
order row, if at all, *before* that. On SQLite ``select_for_update()`` is a no-op and ``BEGIN IMMEDIATE``
(settings) serialises writers instead, so the same code is correct on both engines.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.errors import OutOfStock, Shortage, UnknownProduct
from kulipa.inventory.models import StockReservation
from kulipa.inventory.selectors import reserved_quantities
from kulipa.orders.models import Order

State = StockReservation.State


class CommitResult(enum.Enum):
    COMMITTED = "committed"  # the order's live reservations became sold units (or already had)
    REACQUIRED = "reacquired"  # the reservations had lapsed, but the stock was still there: sold anyway
    OUT_OF_STOCK = "out_of_stock"  # lapsed and the units are gone: nothing changed, the order needs attention


class _NegativeStock(Exception):
    """A guarded decrement matched no row; rolls back the commit's savepoint."""


def _require_atomic() -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("must be called inside transaction.atomic()")


def products_lock(*, product_ids: Iterable[int]) -> dict[int, Product]:
    """Lock the products (lock 3), ascending primary key, and return them fresh from the database.

    Must run inside ``transaction.atomic()``; the only place in the code base that locks products.
    """
    _require_atomic()
    ids = sorted(set(product_ids))
    products = list(Product.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    return {p.pk: p for p in products}


def _shortages(
    *, quantities: dict[int, int], products: dict[int, Product], exclude_order_id: int | None
) -> list[Shortage]:
    """Products (locked by the caller) whose on-hand minus others' live reservations is below the quantity."""
    reserved = reserved_quantities(product_ids=list(quantities), exclude_order_id=exclude_order_id)
    short = []
    for pid in sorted(quantities):
        product = products[pid]
        available = max(0, product.stock_on_hand - reserved.get(pid, 0))
        if quantities[pid] > available:
            short.append(Shortage(product_id=pid, name=product.name, requested=quantities[pid], available=available))
    return short


def reservations_create(*, order: Order, quantities: dict[int, int], expires_at: datetime) -> None:
    """Reserve ``quantities`` (product id → units) for a new ``order`` until ``expires_at``.

    Call inside the checkout transaction. Locks the products ascending pk, then checks every line against
    on hand − live reservations of other orders. Raises :class:`OutOfStock` naming every short product (and
    reserves nothing); :class:`UnknownProduct` for ids that do not exist; ``ValueError`` for quantities < 1.
    """
    _require_atomic()
    if any(isinstance(q, bool) or not isinstance(q, int) or q < 1 for q in quantities.values()):
        raise ValueError("quantities must be positive integers")
    products = products_lock(product_ids=quantities)
    missing = sorted(set(quantities) - set(products))
    if missing:
        raise UnknownProduct(missing)
    short = _shortages(quantities=quantities, products=products, exclude_order_id=order.pk)
    if short:
        raise OutOfStock(short)
    StockReservation.objects.bulk_create(
        StockReservation(order=order, product_id=pid, quantity=quantities[pid], expires_at=expires_at)
        for pid in sorted(quantities)
    )


def reservations_extend(*, order: Order, until: datetime) -> bool:
    """Make the order's hold last at least ``until`` (never shortens). Call when a push starts.

    The caller may hold the order lock (1) and the attempt lock (2); this takes the order row (conditional
    update), then products (3) only if some reservation had already lapsed, then reservations (4).
    Live ACTIVE reservations are simply extended. An ACTIVE reservation that already expired is re-acquired
    only if the stock is still there (otherwise it is left lapsed, and ``reservations_commit`` will sort it
    out when the money arrives). RELEASED or COMMITTED reservations are never touched.

    Returns True when every ACTIVE reservation of the order now lasts until at least ``until``.
    """
    with transaction.atomic():
        Order.objects.filter(pk=order.pk, status=Order.Status.AWAITING_PAYMENT, expires_at__lt=until).update(
            expires_at=until
        )
        order.refresh_from_db(fields=["expires_at", "status"])
        now = timezone.now()
        lapsed = dict(
            StockReservation.objects.filter(order=order, state=State.ACTIVE, expires_at__lte=now).values_list(
                "product_id", "quantity"
            )
        )
        ok = True
        if lapsed:
            products = products_lock(product_ids=lapsed)
            short = _shortages(quantities=lapsed, products=products, exclude_order_id=order.pk)
            if short:
                ok = False
                lapsed_ok = [pid for pid in lapsed if pid not in {s.product_id for s in short}]
            else:
                lapsed_ok = list(lapsed)
            StockReservation.objects.filter(
                order=order, state=State.ACTIVE, product_id__in=lapsed_ok, expires_at__lt=until
            ).update(expires_at=until, updated_at=now)
        StockReservation.objects.filter(
            order=order, state=State.ACTIVE, expires_at__gt=now, expires_at__lt=until
        ).update(expires_at=until, updated_at=now)
        return ok


def reservations_commit(*, order: Order) -> CommitResult:
    """Turn the order's reservations into sold units: ``Product.stock_on_hand`` goes down, rows → COMMITTED.

    The caller (``kulipa.payments.services.order_mark_paid``) holds the order lock (1) and the attempt locks
    (2); this takes the products ascending pk (3) and then the reservations (4).

    - All reservations ACTIVE and unexpired → decrement and COMMITTED.
    - Some lapsed (expired or RELEASED) → re-check on hand − others' live reservations; if every line fits,
      decrement and REACQUIRED, otherwise change nothing and return OUT_OF_STOCK.
    - Already COMMITTED → COMMITTED without touching anything (idempotent).

    ``stock_on_hand`` never goes below zero: each decrement is ``UPDATE … WHERE stock_on_hand >= n``; if one
    does not match, everything this call did is rolled back and OUT_OF_STOCK is returned.
    """
    _require_atomic()
    product_ids = list(StockReservation.objects.filter(order=order).values_list("product_id", flat=True))
    if not product_ids:
        raise ValueError(f"order {order.pk} has no stock reservations")
    products = products_lock(product_ids=product_ids)
    rows = list(StockReservation.objects.select_for_update().filter(order=order).order_by("product_id"))
    pending = [r for r in rows if r.state != State.COMMITTED]
    if not pending:
        return CommitResult.COMMITTED
    now = timezone.now()
    quantities = {r.product_id: r.quantity for r in pending}
    if all(r.state == State.ACTIVE and r.expires_at > now for r in pending):
        result = CommitResult.COMMITTED
        # Our own live hold already counts against the others: only physical stock can be short here (staff
        # lowered stock_on_hand below what was reserved).
        if any(products[pid].stock_on_hand < qty for pid, qty in quantities.items()):
            return CommitResult.OUT_OF_STOCK
    else:
        result = CommitResult.REACQUIRED
        if _shortages(quantities=quantities, products=products, exclude_order_id=order.pk):
            return CommitResult.OUT_OF_STOCK
    try:
        with transaction.atomic():
            for pid in sorted(quantities):
                updated = Product.objects.filter(pk=pid, stock_on_hand__gte=quantities[pid]).update(
                    stock_on_hand=F("stock_on_hand") - quantities[pid], updated_at=now
                )
                if updated != 1:
                    raise _NegativeStock
            StockReservation.objects.filter(pk__in=[r.pk for r in pending]).exclude(state=State.COMMITTED).update(
                state=State.COMMITTED, updated_at=now
            )
    except _NegativeStock:
        return CommitResult.OUT_OF_STOCK
    return result


def reservations_release(*, order: Order) -> int:
    """ACTIVE → RELEASED for every reservation of ``order``; returns how many changed (0 the second time).

    Takes only reservation rows (4): safe under an order lock.
    """
    return StockReservation.objects.filter(order=order, state=State.ACTIVE).update(
        state=State.RELEASED, updated_at=timezone.now()
    )


def reservations_purge_expired(*, now: datetime | None = None) -> int:
    """Housekeeping: release expired ACTIVE reservations of orders that no longer await payment.

    Expired reservations already stop counting (available stock is computed lazily), so this only tidies.
    Orders still awaiting payment are left to ``kulipa.orders.services.order_expire_due``, which knows about
    attempts in flight. Returns the number of rows released.
    """
    now = now or timezone.now()
    return (
        StockReservation.objects.filter(state=State.ACTIVE, expires_at__lte=now)
        .exclude(order__status=Order.Status.AWAITING_PAYMENT)
        .update(state=State.RELEASED, updated_at=now)
    )
