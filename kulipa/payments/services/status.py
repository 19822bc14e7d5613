"""What the customer is shown about the payment (``Order.payment_status``), and the hold on stock while a payment
may still come. Helpers of the other service modules; callers hold the order lock."""

from __future__ import annotations

from datetime import datetime

from kulipa.inventory import services as inventory
from kulipa.orders import services as orders
from kulipa.orders.models import Order
from kulipa.payments import conf
from kulipa.payments.decisions import Hold, decide_hold_after_close
from kulipa.payments.models import PaymentAttempt

State = PaymentAttempt.State
PaymentStatus = Order.PaymentStatus

PAYMENT_STATUS_FOR_STATE: dict[str, str] = {
    State.QUEUED: PaymentStatus.PENDING,
    State.PUSHING: PaymentStatus.PENDING,
    State.AWAITING_CALLBACK: PaymentStatus.PENDING,
    State.UNKNOWN: PaymentStatus.VERIFYING,
    State.SUCCEEDED: PaymentStatus.PAID,
    State.DECLINED: PaymentStatus.DECLINED,
    State.INSUFFICIENT_FUNDS: PaymentStatus.INSUFFICIENT_FUNDS,
    State.TIMED_OUT: PaymentStatus.TIMED_OUT,
    State.FAILED: PaymentStatus.FAILED,
    State.NOT_SENT: PaymentStatus.NOT_SENT,
    State.UNCONFIRMED: PaymentStatus.UNCONFIRMED,
}

SETTLED_PAYMENT_STATUSES = (PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)


def payment_status_follow(*, order: Order, attempt: PaymentAttempt) -> None:
    """``order.payment_status`` follows its latest attempt, and never leaves paid/refunded. Caller holds lock 1."""
    if order.payment_status in SETTLED_PAYMENT_STATUSES:
        return
    latest = PaymentAttempt.objects.filter(order_id=order.pk).order_by("-id").values_list("id", flat=True).first()
    if latest == attempt.pk:
        orders.order_payment_status_set(order=order, payment_status=PAYMENT_STATUS_FOR_STATE[attempt.state])


def hold_for_push(*, order: Order, now: datetime) -> bool:
    """A push starts: hold the stock for its window plus the reconciliation margin, never shorter than it is held
    now and never past checkout + the hold cap. Returns whether all the stock is still held."""
    push_end = now + conf.push_window() + conf.reconcile_margin() + conf.PUSH_RESULT_SLACK
    until = min(max(order.expires_at, push_end), order.created_at + conf.hold_cap())
    return orders.order_hold_until(order=order, until=until)


def hold_after_failure(*, order: Order, now: datetime, state: str) -> None:
    """A push ended without money (the attempt closed in ``state``): the order may still be paid until the
    reservation window ends (leaving a little time to try again; never lengthened). Its stock is released at once
    when the phone said no or nobody answered (``decisions.decide_hold_after_close``; "try again" holds it again
    if it is still there), else kept that long. The last unit is not held by one customer's repeated failures.
    Caller holds the order lock."""
    if order.status != Order.Status.AWAITING_PAYMENT:
        return
    until = min(order.expires_at, max(order.created_at + conf.reservation_window(), now + conf.RETRY_GRACE))
    orders.order_hold_until(order=order, until=until)
    if decide_hold_after_close(state=state) is Hold.RELEASE:
        inventory.reservations_release(order=order)
