"""Checkout: the order, its lines, its stock reservations, the first payment attempt and its event, in ONE
transaction. No network; the caller queues the push after commit (``kulipa.payments.tasks.queue_dispatch``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils import timezone

from kulipa.orders import services as orders
from kulipa.orders.models import Order
from kulipa.orders.snapshot import CheckoutSnapshot
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services.attempts import attempt_create

if TYPE_CHECKING:
    from kulipa.accounts.models import User


def checkout_place(
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
    client_ip: str | None = None,
) -> tuple[Order, PaymentAttempt | None]:
    """Place the order the customer confirmed (``kulipa.orders.services.order_place``: same arguments and errors,
    including ``CheckoutChanged`` when ``confirmed`` no longer matches the locked rows) and its first QUEUED
    attempt together, in order_place's one transaction: a crash leaves either all of it or nothing. ``msisdn`` is
    already normalised.

    Abuse limits kept here, in the database (docs/payments.md "Abuse limits"): the session, ``client_ip`` and
    ``msisdn`` may not hold more units than their caps, and ``msisdn`` may not have another order's push in
    flight. Either raises :class:`~kulipa.core.limits.LimitReached` and nothing is created.

    A resubmitted checkout (same ``checkout_token``) returns the order the first submit created and ``None``:
    nothing new is created or pushed.
    """
    attempts: list[PaymentAttempt] = []

    def first_attempt(order: Order) -> None:  # inside order_place's transaction, its last step
        attempts.append(attempt_create(order=order, msisdn=msisdn, replaces=None, now=timezone.now()))

    order, created = orders.order_place(
        quantities=quantities,
        customer_name=customer_name,
        msisdn=msisdn,
        email=email,
        delivery_address=delivery_address,
        user=user,
        session_key=session_key,
        checkout_token=checkout_token,
        confirmed=confirmed,
        payment_status=Order.PaymentStatus.PENDING,
        client_ip=client_ip,
        on_created=first_attempt,
    )
    if not created:
        return order, None
    (attempt,) = attempts
    return order, attempt
