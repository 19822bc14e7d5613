"""Order writes: place an order, and every later change of an order's fields (this module is their only writer).

The status moves only through :func:`order_transition` (table :data:`ORDER`). Payment decisions are made in
``kulipa.payments``, which calls these functions while holding the order lock (kulipa.core.locks; lock order
Order → PaymentAttempt → Reversal → Product ascending pk → StockReservation). Checkout has no order yet: it locks
only products, then inserts the order, lines and reservations. This module does not know about payments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.core import locks
from kulipa.core.transitions import TransitionTable, transition
from kulipa.inventory import services as inventory
from kulipa.orders.errors import (
    CheckoutChanged,
    EmptyOrder,
    InvalidQuantity,
    OrderNotCancellable,
    OrderTooLarge,
    ProductUnavailable,
)
from kulipa.orders.models import Order, OrderLine
from kulipa.orders.snapshot import CheckoutSnapshot, snapshot_build, snapshot_changes

if TYPE_CHECKING:
    from kulipa.accounts.models import User

logger = logging.getLogger(__name__)


def _validate_quantities(quantities: dict[int, int]) -> dict[int, int]:
    if not quantities:
        raise EmptyOrder(_("O carrinho está vazio."))
    max_qty = int(settings.MAX_LINE_QUANTITY)
    clean: dict[int, int] = {}
    for pid, qty in quantities.items():
        if isinstance(pid, bool) or not isinstance(pid, int) or isinstance(qty, bool) or not isinstance(qty, int):
            raise InvalidQuantity(_("Quantidade inválida."))
        if not 1 <= qty <= max_qty:
            raise InvalidQuantity(_("A quantidade de cada produto tem de estar entre 1 e %(max)s.") % {"max": max_qty})
        clean[pid] = qty
    return clean


def order_create(**kwargs: Any) -> Order:
    """:func:`order_place` without the "created" flag."""
    return order_place(**kwargs)[0]


def order_place(
    *,
    quantities: dict[int, int],
    customer_name: str,
    msisdn: str,
    email: str,
    delivery_address: str,
    user: User | None,
    session_key: str,
    checkout_token: str,
    confirmed: CheckoutSnapshot,
    payment_status: str = Order.PaymentStatus.NOT_STARTED,
    client_ip: str | None = None,
    on_created: Callable[[Order], object] | None = None,
) -> tuple[Order, bool]:
    """Place an order for ``quantities`` (product id → units) in ONE transaction and reserve its stock.

    Prices and names come from the database (locked product rows), never from the client. ``msisdn`` must
    already be normalised (``mpesa.normalize_msisdn``). The order expires after ``RESERVATION_MINUTES``.

    ``confirmed`` is what the checkout page showed (``kulipa.orders.snapshot``); the caller passes its
    quantities as ``quantities``. If the locked products or ``quantities`` no longer match it (price changed,
    product no longer for sale, different lines), raises :class:`~kulipa.orders.errors.CheckoutChanged`
    listing what changed, and creates nothing: the customer is charged only what they confirmed.

    Double submit: ``checkout_token`` is unique in the database. A second call with the same token returns the
    order the first one created and creates nothing (the insert raises ``IntegrityError``, which is caught).

    ``session_key``, ``client_ip`` (``kulipa.core.limits.address_key``) and ``msisdn`` name who holds the stock:
    the reservations are refused with :class:`~kulipa.core.limits.LimitReached` when one of them would hold more
    units than its cap (``kulipa.inventory.services.reservations_create``).

    Raises :class:`~kulipa.orders.errors.OrderError` subclasses (empty, bad quantity, product unavailable,
    total above ``MAX_ORDER_TOTAL``), :class:`~kulipa.inventory.errors.OutOfStock` or ``LimitReached``; nothing is
    created then.
    Returns ``(order, created)``. Does not start the payment: ``kulipa.payments.services.checkout_place`` does,
    in the same transaction, through ``on_created`` — called with the new order as the transaction's last step
    (not for a re-submit); what it raises undoes the order too. Passing it, rather than wrapping this function in
    another ``atomic()``, keeps this transaction the outermost one: no savepoint (two round trips) per checkout.
    """
    clean = _validate_quantities(quantities)
    token = checkout_token or None
    try:
        with transaction.atomic():
            products = locks.products_lock(clean)  # ascending pk; fresh prices
            changes = snapshot_changes(confirmed=confirmed, current=snapshot_build(quantities=clean, products=products))
            if changes:
                existing = Order.objects.filter(checkout_token=token).first() if token else None
                if existing is not None:  # a re-submit of a form that already placed its order
                    return existing, False
                raise CheckoutChanged(changes)
            unavailable = sorted(pid for pid in clean if pid not in products or not products[pid].is_active)
            if unavailable:
                names = [products[pid].name for pid in unavailable if pid in products]
                raise ProductUnavailable(
                    _("Um produto do carrinho já não está à venda: %(names)s.") % {"names": ", ".join(names) or "—"},
                    product_ids=unavailable,
                )
            total = sum((products[pid].price * qty for pid, qty in clean.items()), Decimal("0.00"))
            if total > settings.MAX_ORDER_TOTAL:
                raise OrderTooLarge(
                    _("O total da encomenda não pode passar de %(max)s MT.") % {"max": settings.MAX_ORDER_TOTAL}
                )
            now = timezone.now()
            order = Order.objects.create(
                user=user if user is not None and getattr(user, "is_authenticated", False) else None,
                session_key=session_key or "",
                client_ip=client_ip or None,
                checkout_token=token,
                customer_name=customer_name.strip(),
                msisdn=msisdn,
                email=email.strip(),
                delivery_address=delivery_address.strip(),
                total=total,
                payment_status=payment_status,
                expires_at=now + timedelta(minutes=int(settings.RESERVATION_MINUTES)),
            )
            OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    product=products[pid],
                    product_name=products[pid].name,
                    unit_price=products[pid].price,
                    quantity=qty,
                )
                for pid, qty in clean.items()
            )
            inventory.reservations_create(order=order, quantities=clean, expires_at=order.expires_at, products=products)
            if on_created is not None:
                on_created(order)
    except IntegrityError:
        if token is None:
            raise
        existing = Order.objects.filter(checkout_token=token).first()
        if existing is None:
            raise
        logger.info("checkout token reused; returning order %s", existing.pk)
        return existing, False
    logger.info("order %s created, total %s", order.pk, order.total)
    return order, True


# --- state --------------------------------------------------------------------------------------------------
Status = Order.Status

ORDER = TransitionTable(
    "order.status",
    {
        Status.AWAITING_PAYMENT: {Status.PAID, Status.NEEDS_ATTENTION, Status.EXPIRED, Status.CANCELLED},
        # A payment confirmed late (stock re-acquired → PAID; gone → NEEDS_ATTENTION with a reversal proposed).
        Status.EXPIRED: {Status.PAID, Status.NEEDS_ATTENTION},
        Status.CANCELLED: {Status.PAID, Status.NEEDS_ATTENTION},
        # The paying transaction reversed in full: nothing will be delivered.
        Status.PAID: {Status.CANCELLED},
        # Reversed in full (→ CANCELLED), or staff decide to keep and deliver it (→ PAID, "force-confirm").
        Status.NEEDS_ATTENTION: {Status.PAID, Status.CANCELLED},
    },
    field="status",
)
"""Every allowed change of ``Order.status``; :func:`order_transition` is the only writer."""


def order_transition(*, order: Order, to: str, **fields: Any) -> bool:
    """Move ``order`` to status ``to`` (allowed by :data:`ORDER`) with ``fields`` (``paid_at``, ``paid_amount``,
    ``mpesa_transaction_id``, ``payment_status``, ``attention_reason``), as one conditional UPDATE on the status
    the caller read. The caller holds the order lock (kulipa.core.locks), so it matches; ``order`` is updated in
    memory. Returns False (and writes nothing) when the order already is in ``to``.
    """
    if order.status == to:
        return False
    changed = transition(Order.objects, pk=order.pk, table=ORDER, source=order.status, target=to, **fields)
    if not changed:
        raise RuntimeError(f"order {order.pk} changed under its lock")  # a caller skipped order_lock()
    order.status = to
    for name, value in fields.items():
        setattr(order, name, value)
    logger.info("order %s → %s", order.pk, to)
    return True


def order_payment_status_set(*, order: Order, payment_status: str) -> None:
    """Show ``payment_status`` to the customer (it follows the latest attempt). Caller holds the order lock."""
    if order.payment_status != payment_status:
        Order.objects.filter(pk=order.pk).update(payment_status=payment_status, updated_at=timezone.now())
        order.payment_status = payment_status


def order_paid_details_set(*, order: Order, mpesa_transaction_id: str) -> None:
    """Record the M-Pesa transaction id learned after the order was paid (a status query carries none)."""
    if not order.mpesa_transaction_id and mpesa_transaction_id:
        Order.objects.filter(pk=order.pk).update(mpesa_transaction_id=mpesa_transaction_id, updated_at=timezone.now())
        order.mpesa_transaction_id = mpesa_transaction_id


def order_attention_note(*, order: Order, note: str) -> None:
    """Append ``note`` to what staff read on the order. Caller holds the order lock."""
    text = "\n".join(r for r in [order.attention_reason, note] if r)
    Order.objects.filter(pk=order.pk).update(attention_reason=text, updated_at=timezone.now())
    order.attention_reason = text


def order_hold_until(*, order: Order, until: datetime) -> bool:
    """The order (and its ACTIVE reservations) are held until ``until``, longer or shorter. Caller holds the
    order lock. Returns whether every reservation is live until then (see ``reservations_hold_until``)."""
    if order.expires_at != until:
        Order.objects.filter(pk=order.pk).update(expires_at=until, updated_at=timezone.now())
        order.expires_at = until
    return inventory.reservations_hold_until(order=order, until=until)


def order_expire(*, order: Order) -> bool:
    """AWAITING_PAYMENT → EXPIRED and its stock released. The caller holds the order lock and has checked that no
    payment attempt is in flight (``kulipa.payments.services.orders_expire_due``)."""
    if order.status != Status.AWAITING_PAYMENT:
        return False
    order_transition(order=order, to=Status.EXPIRED)
    inventory.reservations_release(order=order)
    return True


def order_cancel(*, order: Order) -> bool:
    """AWAITING_PAYMENT → CANCELLED and its stock released (the customer gave up, no attempt in flight; checked
    by the caller under the order lock). Cancelling a cancelled order is a no-op."""
    if order.status == Status.CANCELLED:
        return False
    if order.status != Status.AWAITING_PAYMENT:
        raise OrderNotCancellable(_("Esta encomenda já não pode ser cancelada."))
    order_transition(order=order, to=Status.CANCELLED)
    inventory.reservations_release(order=order)
    return True
