"""Order writes: place an order at checkout, expire abandoned ones, let a customer cancel.

Lock order (docs/concurrency.md): Order → PaymentAttempt → Product (ascending pk) → StockReservation.
Checkout has no order yet: it locks only products, then inserts the order, lines and reservations.
Payment fields of ``Order`` are never written here (only ``kulipa.payments.services`` writes them).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

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
from kulipa.payments.models import PaymentAttempt

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


def order_create(
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
) -> Order:
    """Place an order for ``quantities`` (product id → units) in ONE transaction and reserve its stock.

    Prices and names come from the database (locked product rows), never from the client. ``msisdn`` must
    already be normalised (``mpesa.normalize_msisdn``). The order expires after ``RESERVATION_MINUTES``.

    ``confirmed`` is what the checkout page showed (``kulipa.orders.snapshot``); the caller passes its
    quantities as ``quantities``. If the locked products or ``quantities`` no longer match it (price changed,
    product no longer for sale, different lines), raises :class:`~kulipa.orders.errors.CheckoutChanged`
    listing what changed, and creates nothing: the customer is charged only what they confirmed.

    Double submit: ``checkout_token`` is unique in the database. A second call with the same token returns the
    order the first one created and creates nothing (the insert raises ``IntegrityError``, which is caught).

    Raises :class:`~kulipa.orders.errors.OrderError` subclasses (empty, bad quantity, product unavailable,
    total above ``MAX_ORDER_TOTAL``) or :class:`~kulipa.inventory.errors.OutOfStock`; nothing is created then.
    Does not start the payment: the caller calls ``kulipa.payments.services.payment_attempt_start`` next.
    """
    clean = _validate_quantities(quantities)
    token = checkout_token or None
    try:
        with transaction.atomic():
            products = inventory.products_lock(product_ids=clean)  # lock 3, ascending pk; fresh prices
            if token is not None:
                # Shortcut only; the unique constraint below is what guarantees a single order per token.
                existing = Order.objects.filter(checkout_token=token).first()
                if existing is not None:
                    return existing
            changes = snapshot_changes(confirmed=confirmed, current=snapshot_build(quantities=clean, products=products))
            if changes:
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
                checkout_token=token,
                customer_name=customer_name.strip(),
                msisdn=msisdn,
                email=email.strip(),
                delivery_address=delivery_address.strip(),
                total=total,
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
            inventory.reservations_create(order=order, quantities=clean, expires_at=order.expires_at)
    except IntegrityError:
        if token is None:
            raise
        existing = Order.objects.filter(checkout_token=token).first()
        if existing is None:
            raise
        logger.info("checkout token reused; returning order %s", existing.pk)
        return existing
    logger.info("order %s created, total %s", order.pk, order.total)
    return order


def _order_expire_one(*, order_id: int, now: datetime) -> bool:
    """Expire one order if it is still due. Locks the order (1) and reads its attempts (2) under that lock."""
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(pk=order_id).first()
        if order is None or order.status != Order.Status.AWAITING_PAYMENT or order.expires_at > now:
            return False
        attempts = PaymentAttempt.objects.select_for_update().filter(order_id=order_id)
        if attempts.filter(state__in=PaymentAttempt.IN_FLIGHT).exists():
            return False
        updated = Order.objects.filter(pk=order_id, status=Order.Status.AWAITING_PAYMENT).update(
            status=Order.Status.EXPIRED, updated_at=now
        )
        if not updated:
            return False
        inventory.reservations_release(order=order)  # lock 4
    logger.info("order %s expired", order_id)
    return True


def order_expire_due(*, now: datetime | None = None) -> int:
    """Expire orders still awaiting payment whose ``expires_at`` passed and that have no attempt in flight.

    Each order is handled in its own short transaction: lock the order, re-check, mark EXPIRED, release its
    reservations. Idempotent and safe to run concurrently (a second run finds nothing to do). Returns the
    number of orders this call expired. Scheduled periodically by ``kulipa.payments``.
    """
    now = now or timezone.now()
    due = list(
        Order.objects.filter(status=Order.Status.AWAITING_PAYMENT, expires_at__lte=now)
        .exclude(payment_attempts__state__in=PaymentAttempt.IN_FLIGHT)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return sum(_order_expire_one(order_id=pk, now=now) for pk in due)


def order_cancel(*, order: Order) -> Order:
    """The customer abandons an unpaid order: AWAITING_PAYMENT → CANCELLED, stock released.

    Refused (:class:`~kulipa.orders.errors.OrderNotCancellable`) while a payment attempt is in flight or once
    the order is paid/expired. Cancelling an already cancelled order is a no-op.
    """
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.status == Order.Status.CANCELLED:
            return locked
        if locked.status != Order.Status.AWAITING_PAYMENT:
            raise OrderNotCancellable(_("Esta encomenda já não pode ser cancelada."))
        if (
            PaymentAttempt.objects.select_for_update()
            .filter(order_id=locked.pk, state__in=PaymentAttempt.IN_FLIGHT)
            .exists()
        ):
            raise OrderNotCancellable(_("Há um pagamento em curso; aguarde o resultado antes de cancelar."))
        Order.objects.filter(pk=locked.pk, status=Order.Status.AWAITING_PAYMENT).update(
            status=Order.Status.CANCELLED, updated_at=timezone.now()
        )
        inventory.reservations_release(order=locked)
        locked.refresh_from_db()
    return locked
