"""The repairs the periodic sweep runs (every minute, ``kulipa.payments.tasks.payments_sweep``): each
intermediate state has one here, and anything older than ``STUCK_AFTER`` is raised for a person.

Every function is idempotent and safe to run concurrently (conditional updates, locks in the documented order);
the ones returning ids leave the queueing to the caller.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.core import locks
from kulipa.orders import services as orders
from kulipa.orders.errors import OrderNotCancellable
from kulipa.orders.models import Order
from kulipa.payments import conf
from kulipa.payments.models import AttentionItem, CallbackDelivery, PaymentAttempt, Reversal
from kulipa.payments.services.attention import attention_raise
from kulipa.payments.services.reconcile import ASKABLE
from kulipa.payments.transitions import delivery_transition, reversal_transition
from kulipa.scheduling.services import period_start

A = PaymentAttempt.State
R = Reversal.State
D = CallbackDelivery.State


def attempts_due(*, now: datetime, limit: int = 1000) -> list[int]:
    """Attempts whose ``next_check_at`` passed: in flight, or closed but still on the tail schedule."""
    return list(
        PaymentAttempt.objects.filter(state__in=ASKABLE, next_check_at__lte=now)
        .order_by("next_check_at")
        .values_list("id", flat=True)[:limit]
    )


REDISPATCH_MIN_AGE = timedelta(seconds=5)
"""A QUEUED attempt younger than this still has its own dispatch message on the way: not re-sent yet."""
REDISPATCH_EVERY = timedelta(seconds=10)
"""How often lost dispatches are looked for: by the minute sweep, and between sweeps by passes at every 10 s mark
of the clock (:func:`redispatch_pass_times`)."""


def attempts_queued(*, now: datetime, limit: int = 1000) -> list[int]:
    """QUEUED attempts whose dispatch may have been lost (queue down, worker died holding the message), between
    ``REDISPATCH_MIN_AGE`` and ``QUEUED_SEND_LIMIT`` old: dispatch again. Re-sending is safe however often it
    happens: only the caller that wins the conditional QUEUED → PUSHING claim pushes, and the claim refuses an
    attempt older than ``QUEUED_SEND_LIMIT`` (closed NOT_SENT by the sweep instead)."""
    return list(
        PaymentAttempt.objects.filter(
            state=A.QUEUED,
            created_at__lte=now - REDISPATCH_MIN_AGE,
            created_at__gte=now - conf.QUEUED_SEND_LIMIT,
        )
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )


def redispatch_pass_times(*, slot: datetime, period: timedelta, now: datetime) -> list[datetime]:
    """When to look for lost dispatches again after the sweep of the period starting at ``slot`` ran at ``now``:
    every ``REDISPATCH_EVERY`` mark (of the clock: :00, :10, :20, …) after ``now`` up to the end of the *next*
    period, so the look goes on until the next sweep has run, whenever in its minute that is. The marks two
    sweeps both schedule are run once (the pass claims its mark, ``kulipa.scheduling.run_once``).

    Why: a lost dispatch can only be re-sent while it is younger than ``QUEUED_SEND_LIMIT`` (30 s), and the sweep
    runs once a minute, so the sweep alone re-sent only the ones whose age at the sweep fell in the window (about
    1 in 3); the rest were closed NOT_SENT. With a look every 10 s and a 25 s window (``REDISPATCH_MIN_AGE`` ..
    ``QUEUED_SEND_LIMIT``), every lost dispatch is seen while fresh, 5–15 s after checkout, even when a pass
    starts up to 15 s late."""
    first = period_start(now, period=REDISPATCH_EVERY) + REDISPATCH_EVERY
    last = slot + 2 * period
    marks = []
    while first <= last:
        marks.append(first)
        first += REDISPATCH_EVERY
    return marks


def orders_expire_due(*, now: datetime | None = None) -> int:
    """Orders still awaiting payment past ``expires_at`` with no attempt in flight → EXPIRED, stock released.
    Each in its own short transaction under Order (1) → attempts (2). Returns how many this call expired."""
    now = now or timezone.now()
    due = list(
        Order.objects.filter(status=Order.Status.AWAITING_PAYMENT, expires_at__lte=now)
        .exclude(payment_attempts__state__in=PaymentAttempt.IN_FLIGHT)
        .order_by("pk")
        .values_list("pk", flat=True)[:1000]
    )
    expired = 0
    for order_id in due:
        with transaction.atomic():
            order = locks.order_lock(order_id)
            attempts = locks.order_attempts_lock(order)
            if order.expires_at > now or any(a.in_flight for a in attempts):
                continue
            expired += orders.order_expire(order=order)
    return expired


def order_cancel_unpaid(*, order: Order) -> bool:
    """The customer gives up an unpaid order: refused while a payment is in flight. Locks 1 → 2."""
    with transaction.atomic():
        locked = locks.order_lock(order.pk)
        if any(a.in_flight for a in locks.order_attempts_lock(locked)):
            raise OrderNotCancellable(_("Há um pagamento em curso; aguarde o resultado antes de cancelar."))
        return orders.order_cancel(order=locked)


def reversals_to_send(*, now: datetime) -> list[int]:
    """REQUESTED reversals older than ``REQUEUE_AFTER``: their queue message was lost; send (once) again."""
    return list(
        Reversal.objects.filter(state=R.REQUESTED, created_at__lte=now - conf.REQUEUE_AFTER).values_list(
            "id", flat=True
        )[:1000]
    )


def reversals_to_query(*, now: datetime) -> list[int]:
    """UNKNOWN reversals due a status query; SENDING ones whose worker evidently died become UNKNOWN first."""
    for reversal in Reversal.objects.filter(state=R.SENDING, sent_at__lte=now - conf.REVERSAL_STUCK_SENDING):
        reversal_transition(reversal=reversal, to=R.UNKNOWN, next_check_at=now)
    return list(
        Reversal.objects.filter(state=R.UNKNOWN)
        .filter(Q(next_check_at__lte=now) | Q(next_check_at__isnull=True))
        .values_list("id", flat=True)[:1000]
    )


def deliveries_to_process(*, now: datetime) -> list[int]:
    """Callback deliveries to (re)process: QUEUED ones whose message was lost, RETRY ones that are due, and
    PROCESSING ones whose worker died (put back to QUEUED first — or, after ``DELIVERY_MAX_TRIES`` deaths, given up
    and raised for a person: a delivery that kills its worker must not loop for ever)."""
    stale = CallbackDelivery.objects.filter(state=D.PROCESSING, updated_at__lte=now - conf.REVERSAL_STUCK_SENDING)
    for delivery in stale.only("id", "tries", "attempt_id"):
        if delivery.tries < conf.DELIVERY_MAX_TRIES:
            delivery_transition(delivery_id=delivery.pk, source=D.PROCESSING, to=D.QUEUED)
        elif delivery_transition(
            delivery_id=delivery.pk, source=D.PROCESSING, to=D.GAVE_UP, processed_at=now, error="worker died each try"
        ):
            _raise_delivery(delivery, f"callback {delivery.pk}: its worker died on each of {delivery.tries} tries")
    return list(
        CallbackDelivery.objects.filter(
            Q(state=D.QUEUED, received_at__lte=now - conf.REQUEUE_AFTER) | Q(state=D.RETRY, next_try_at__lte=now)
        ).values_list("id", flat=True)[:1000]
    )


def stuck_raise(*, now: datetime) -> int:
    """Raise every record still not final ``STUCK_AFTER`` after it started (it keeps being repaired)."""
    old = now - conf.STUCK_AFTER
    raised = 0
    for attempt in PaymentAttempt.objects.filter(state__in=PaymentAttempt.IN_FLIGHT, created_at__lte=old)[:200]:
        attention_raise(
            kind=AttentionItem.Kind.STUCK,
            key=f"stuck-attempt:{attempt.pk}",
            order_id=attempt.order_id,
            attempt_id=attempt.pk,
            reason=f"payment {attempt.third_party_reference} still {attempt.state} "
            f"since {attempt.created_at:%Y-%m-%d %H:%M}",
        )
        raised += 1
    for reversal in Reversal.objects.filter(state__in=Reversal.OPEN, created_at__lte=old).select_related("attempt")[
        :200
    ]:
        attention_raise(
            kind=AttentionItem.Kind.STUCK,
            key=f"stuck-reversal:{reversal.pk}",
            order_id=reversal.attempt.order_id,
            attempt_id=reversal.attempt_id,
            reason=f"reversal {reversal.reference} still {reversal.state} since {reversal.created_at:%Y-%m-%d %H:%M}",
        )
        raised += 1
    for delivery in CallbackDelivery.objects.filter(
        state__in=[D.QUEUED, D.PROCESSING, D.RETRY], received_at__lte=old
    ).only("id", "state", "attempt_id")[:200]:
        _raise_delivery(delivery, f"callback {delivery.pk} still {delivery.state} after {conf.STUCK_AFTER}")
        raised += 1
    return raised


def _raise_delivery(delivery: CallbackDelivery, reason: str) -> None:
    order_id = PaymentAttempt.objects.filter(pk=delivery.attempt_id or 0).values_list("order_id", flat=True).first()
    attention_raise(
        kind=AttentionItem.Kind.CALLBACK_FAILED,
        key=f"delivery:{delivery.pk}",
        order_id=order_id,
        attempt_id=delivery.attempt_id,
        reason=reason,
    )


def rejected_deliveries_prune(*, now: datetime, keep: int = 1000) -> int:
    """Rejected deliveries are evidence, not records: keep the newest ``keep`` (their count stays in
    ``CallbackRejection``)."""
    rejected = CallbackDelivery.objects.filter(state=D.REJECTED).order_by("-id")
    cutoff = rejected.values_list("id", flat=True)[keep : keep + 1]
    if not cutoff:
        return 0
    deleted, _detail = CallbackDelivery.objects.filter(state=D.REJECTED, id__lte=cutoff[0]).delete()
    return deleted
