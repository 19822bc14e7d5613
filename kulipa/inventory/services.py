"""Stock writes: reserve at checkout, hold while a payment may come, commit when paid, release when abandoned,
return when the money went back. The only module that writes ``StockReservation`` or ``Product.stock_on_hand``.

Locks come from :mod:`kulipa.core.locks` (order: Order → PaymentAttempt → Reversal → Product ascending pk →
StockReservation). These functions never touch the order row; callers that hold it call them last. On SQLite
``select_for_update()`` is a no-op and ``BEGIN IMMEDIATE`` (settings) serialises writers instead.
"""

from __future__ import annotations

import enum
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.core import limits, locks
from kulipa.core.transitions import TransitionTable, transition_many
from kulipa.inventory.errors import OutOfStock, Shortage, UnknownProduct
from kulipa.inventory.models import StockReservation
from kulipa.inventory.selectors import reserved_quantities
from kulipa.orders.models import Order

State = StockReservation.State

RESERVATION = TransitionTable(
    "reservation.state",
    {
        State.ACTIVE: {State.COMMITTED, State.RELEASED},
        # A late payment re-acquired the stock (→ COMMITTED); "try again" after an ended push released it (→ ACTIVE).
        State.RELEASED: {State.COMMITTED, State.ACTIVE},
        State.COMMITTED: {State.RETURNED},  # a reversal gave the money back and the goods came back
    },
)
"""Allowed reservation moves. ``expires_at`` of an ACTIVE reservation moves with the order's hold."""


class CommitResult(enum.Enum):
    COMMITTED = "committed"  # the order's live reservations became sold units (or already had)
    REACQUIRED = "reacquired"  # the reservations had lapsed, but the stock was still there: sold anyway
    OUT_OF_STOCK = "out_of_stock"  # lapsed and the units are gone: nothing changed, the order needs attention


class _NegativeStock(Exception):
    """A guarded decrement matched no row; rolls back the commit's savepoint."""


def _require_atomic() -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("must be called inside transaction.atomic()")


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


HOLDERS: tuple[tuple[str, str, str], ...] = (
    # (holder: the limit's suffix, Order field naming the customer, setting with the cap)
    ("session", "session_key", "LIMIT_UNITS_HELD_PER_SESSION"),
    ("phone", "msisdn", "LIMIT_UNITS_HELD_PER_PHONE"),
    ("ip", "client_ip", "LIMIT_UNITS_HELD_PER_IP"),
)
"""Who holds stock, for the units-held caps (docs/payments.md "Abuse limits")."""


def _holders_check(*, order: Order, units: int) -> None:
    """Refuse ``units`` more for ``order`` when its session, phone number or address would then hold more than its
    cap in live reservations of unpaid orders (the order's own rows not counted). Takes the holder locks
    (:func:`kulipa.core.locks.holders_lock`, after the products) so two checkouts of one customer are counted one
    after the other. Raises :class:`kulipa.core.limits.LimitReached` (``units_held_<holder>``)."""
    checks = []
    for holder, field, setting in HOLDERS:
        value, cap = getattr(order, field), limits.cap(setting)
        if value and cap:
            checks.append((holder, field, str(value), cap))
    for holder, _field, _value, cap in checks:
        if units > cap:  # no need to count the others
            raise limits.units_held(holder=holder)
    if not checks:
        return
    locks.holders_lock(f"{field}:{value}" for _holder, field, value, _cap in checks)
    any_holder = Q()
    for _holder, field, value, _cap in checks:
        any_holder |= Q(**{f"order__{field}": value})
    held = (
        StockReservation.objects.filter(
            any_holder, state=State.ACTIVE, expires_at__gt=timezone.now(), order__status=Order.Status.AWAITING_PAYMENT
        )
        .exclude(order_id=order.pk)
        .aggregate(
            **{field: Sum("quantity", filter=Q(**{f"order__{field}": value})) for _h, field, value, _c in checks}
        )
    )
    for holder, field, _value, cap in checks:
        if (held[field] or 0) + units > cap:
            raise limits.units_held(holder=holder)


def reservations_create(
    *, order: Order, quantities: dict[int, int], expires_at: datetime, products: dict[int, Product] | None = None
) -> None:
    """Reserve ``quantities`` (product id → units) for a new ``order`` until ``expires_at``.

    Call inside the checkout transaction; pass ``products`` when the caller already locked them. Checks every
    line against on hand − live reservations of other orders. Raises :class:`OutOfStock` naming every short
    product (and reserves nothing); :class:`UnknownProduct` for ids that do not exist;
    :class:`~kulipa.core.limits.LimitReached` when the order's session, phone number or address would hold more
    units than its cap (``LIMIT_UNITS_HELD_PER_*``).
    """
    _require_atomic()
    if any(isinstance(q, bool) or not isinstance(q, int) or q < 1 for q in quantities.values()):
        raise ValueError("quantities must be positive integers")
    if products is None:
        products = locks.products_lock(quantities)
    missing = sorted(set(quantities) - set(products))
    if missing:
        raise UnknownProduct(missing)
    short = _shortages(quantities=quantities, products=products, exclude_order_id=order.pk)
    if short:
        raise OutOfStock(short)
    _holders_check(order=order, units=sum(quantities.values()))
    StockReservation.objects.bulk_create(
        StockReservation(order=order, product_id=pid, quantity=quantities[pid], expires_at=expires_at)
        for pid in sorted(quantities)
    )


def reservations_reacquire(*, order: Order, until: datetime) -> None:
    """Hold again, until ``until``, the stock of ``order`` that was released early when a push ended without money
    (RELEASED → ACTIVE), so "try again" pays for stock that is held. Nothing RELEASED: nothing to do.

    Caller holds the order lock (1); takes the products (4) and the holders. Raises :class:`OutOfStock` naming the
    products another customer took meanwhile, or :class:`~kulipa.core.limits.LimitReached` when the customer would
    hold more than a cap; nothing changes then.
    """
    _require_atomic()
    released = dict(
        StockReservation.objects.filter(order=order, state=State.RELEASED).values_list("product_id", "quantity")
    )
    if not released:
        return
    products = locks.products_lock(released)
    short = _shortages(quantities=released, products=products, exclude_order_id=order.pk)
    if short:
        raise OutOfStock(short)
    _holders_check(order=order, units=sum(released.values()))
    transition_many(
        StockReservation.objects.filter(order=order, product_id__in=list(released)),
        table=RESERVATION,
        source=State.RELEASED,
        target=State.ACTIVE,
        expires_at=until,
    )


def reservations_hold_until(*, order: Order, until: datetime) -> bool:
    """Make the order's ACTIVE reservations last exactly until ``until`` (longer or shorter).

    Lengthening re-acquires a reservation that already lapsed only if its stock is still there (locks products,
    then reservations); shortening never re-acquires. RELEASED, COMMITTED and RETURNED rows are never touched.
    Returns True when every ACTIVE reservation of the order now lasts until ``until``.
    """
    _require_atomic()
    now = timezone.now()
    live = StockReservation.objects.filter(order=order, state=State.ACTIVE)
    lapsed = dict(live.filter(expires_at__lte=now).values_list("product_id", "quantity"))
    ok = True
    keep_lapsed: set[int] = set()
    if lapsed and until > now:
        products = locks.products_lock(lapsed)
        short = {s.product_id for s in _shortages(quantities=lapsed, products=products, exclude_order_id=order.pk)}
        ok = not short
        keep_lapsed = short
    elif lapsed:
        keep_lapsed = set(lapsed)
    live.exclude(product_id__in=keep_lapsed).exclude(expires_at=until).update(expires_at=until, updated_at=now)
    return ok


def reservations_commit(*, order: Order) -> CommitResult:
    """Turn the order's reservations into sold units: ``Product.stock_on_hand`` goes down, rows → COMMITTED.

    The caller (``kulipa.payments.services.order_mark_paid``) holds the order (1) and attempt (2) locks; this takes
    the products ascending pk (4) and then the reservations (5).

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
    products = locks.products_lock(product_ids)
    rows = locks.reservations_lock(order)
    if any(r.state == State.RETURNED for r in rows):
        return CommitResult.OUT_OF_STOCK  # sold once and given back: a new sale is a person's decision
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
            transition_many(
                StockReservation.objects.filter(pk__in=[r.pk for r in pending]),
                table=RESERVATION,
                source=[State.ACTIVE, State.RELEASED],
                target=State.COMMITTED,
            )
    except _NegativeStock:
        return CommitResult.OUT_OF_STOCK
    return result


def reservations_release(*, order: Order) -> int:
    """ACTIVE → RELEASED for every reservation of ``order``; returns how many changed (0 the second time).
    An order still awaiting payment may hold them again (:func:`reservations_reacquire`)."""
    return transition_many(
        StockReservation.objects.filter(order=order), table=RESERVATION, source=State.ACTIVE, target=State.RELEASED
    )


def reservations_return(*, order: Order) -> dict[int, int]:
    """Put the order's sold units back on the shelf: COMMITTED → RETURNED and ``stock_on_hand`` up again.

    Caller holds the order lock (and those before it); takes products (4) then reservations (5). Idempotent:
    returns ``{product id: units returned}``, empty the second time.
    """
    _require_atomic()
    committed = {
        r.product_id: r.quantity
        for r in StockReservation.objects.filter(order=order, state=State.COMMITTED).only("product_id", "quantity")
    }
    if not committed:
        return {}
    locks.products_lock(committed)
    rows = [r for r in locks.reservations_lock(order) if r.state == State.COMMITTED]
    now = timezone.now()
    for row in rows:
        Product.objects.filter(pk=row.product_id).update(
            stock_on_hand=F("stock_on_hand") + row.quantity, updated_at=now
        )
    transition_many(
        StockReservation.objects.filter(pk__in=[r.pk for r in rows]),
        table=RESERVATION,
        source=State.COMMITTED,
        target=State.RETURNED,
    )
    return {r.product_id: r.quantity for r in rows}


def reservations_purge_expired(*, now: datetime | None = None) -> int:
    """Housekeeping: release expired ACTIVE reservations of orders that no longer await payment.

    Expired reservations already stop counting (available stock is computed lazily), so this only tidies.
    Orders still awaiting payment are left to the payments sweep, which knows about attempts in flight.
    """
    now = now or timezone.now()
    return transition_many(
        StockReservation.objects.filter(expires_at__lte=now).exclude(order__status=Order.Status.AWAITING_PAYMENT),
        table=RESERVATION,
        source=State.ACTIVE,
        target=State.RELEASED,
    )
