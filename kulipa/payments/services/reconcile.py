"""Reconciliation: ask the gateway what happened to an attempt and act on the answer; the periodic sweep."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from kulipa.payments import gateway
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services._common import (
    FINAL_STATE_FOR_OUTCOME,
    QUEUED_STUCK_AFTER,
    RECONCILE_LEASE,
    Kind,
    State,
    _event,
    _lock_order_and_attempt,
    _result_payload,
    _schedule_reconcile,
    _sync_order_payment_status,
    callback_grace,
    logger,
    push_window,
    reconcile_backoff,
    reconcile_margin,
)
from kulipa.payments.services.attempts import payment_attempt_abandon_queued
from kulipa.payments.services.paid import order_mark_paid
from mpesa import MpesaError, Outcome, QueryResult, TransactionStatus
from mpesa.config import Operation


class ReconcileOutcome(enum.StrEnum):
    PAID = "paid"
    FINAL = "final"
    """Settled as not paid (declined, failed, timed out)."""
    PENDING = "pending"
    """Still not known; checked again later."""
    NOT_DUE = "not_due"
    ALREADY_FINAL = "already_final"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class CallbackHint:
    """What an (unsigned) callback claimed. Never trusted for money; used for the failure reason and the
    transaction id once a status query confirmed the payment."""

    result_code: str
    transaction_id: str | None
    conversation_id: str | None
    delivery_id: int | None = None
    authenticated: bool = False
    """The delivery came through the secret path token or from an allow-listed IP. Only then is its
    TransactionID recorded on the attempt (a reversal needs it; a forged one could point at someone else's
    payment). Otherwise it stays in the CALLBACK event only."""


def _final_deadline(attempt: PaymentAttempt) -> datetime:
    start = attempt.push_deadline or (attempt.push_started_at or attempt.created_at) + push_window()
    return start + reconcile_margin()


def _failure_state(code: str | None) -> str:
    from mpesa import outcome_for

    if not code:
        return State.FAILED
    return FINAL_STATE_FOR_OUTCOME.get(outcome_for(code), State.FAILED)


def attempt_reconcile(
    *, attempt_id: int, force: bool = False, hint: CallbackHint | None = None, source: str = "status_query"
) -> ReconcileOutcome:
    """Ask the gateway what happened to an attempt (``input_QueryReference`` = its ThirdPartyReference, with a
    fresh reference for the query itself), write a STATUS_QUERY event and act on the answer:

    * Completed → :func:`order_mark_paid` (also for an attempt already settled as failed: late money is real);
    * Cancelled → final DECLINED / INSUFFICIENT_FUNDS / FAILED (reason from the push's or the callback's code);
    * Expired → TIMED_OUT;
    * N/A (not found or still waiting) → pending while within push deadline + margin, FAILED after that (never a
      second push); a query that itself fails → back off (``next_check_at``, ``check_count``).

    Without ``force`` the call first claims the attempt (conditional UPDATE on ``next_check_at``), so concurrent
    reconcilers do not query twice; ``force`` (callbacks, admin "recheck") skips the claim and may query a settled
    attempt, in which case only Completed changes anything. No lock is held during the query; the answer is
    applied under Order (1) → attempt (2) locks.
    """
    now = timezone.now()
    attempt = PaymentAttempt.objects.filter(pk=attempt_id).first()
    if attempt is None:
        return ReconcileOutcome.UNCHANGED
    if attempt.state == State.SUCCEEDED:
        return ReconcileOutcome.ALREADY_FINAL
    if attempt.state == State.QUEUED:
        return ReconcileOutcome.NOT_DUE  # never sent: the sweep dispatches it
    if not force:
        if not attempt.in_flight:
            return ReconcileOutcome.ALREADY_FINAL
        claimed = (
            PaymentAttempt.objects.filter(pk=attempt_id, state__in=PaymentAttempt.IN_FLIGHT)
            .filter(Q(next_check_at__lte=now) | Q(next_check_at__isnull=True))
            .update(next_check_at=now + RECONCILE_LEASE)
        )
        if not claimed:
            return ReconcileOutcome.NOT_DUE
    query_reference = gateway.new_reference("Q")
    try:
        result = gateway.client().query_transaction_status(
            query_reference=attempt.third_party_reference, third_party_reference=query_reference
        )
    except (MpesaError, ImproperlyConfigured) as exc:
        result = QueryResult(operation=Operation.QUERY, outcome=Outcome.UNKNOWN, error=f"{type(exc).__name__}: {exc}")
    return _apply_query(attempt_id=attempt_id, result=result, hint=hint, source=source)


def _apply_query(*, attempt_id: int, result: QueryResult, hint: CallbackHint | None, source: str) -> ReconcileOutcome:
    now = timezone.now()
    status = result.transaction_status if result.outcome is Outcome.SUCCESS else None
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        attempt.check_count += 1
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.STATUS_QUERY,
            summary=f"query {attempt.third_party_reference}: {status.value if status else result.outcome.value}",
            payload={**_result_payload(result), "source": source, "check": attempt.check_count},
        )
        if attempt.state == State.SUCCEEDED:
            attempt.save(update_fields=["check_count", "updated_at"])
            return ReconcileOutcome.ALREADY_FINAL
        if status is TransactionStatus.COMPLETED:
            attempt.save(update_fields=["check_count", "updated_at"])
            paid = order_mark_paid(
                attempt_id=attempt.pk,
                transaction_id=(hint.transaction_id if hint and hint.authenticated else None)
                or attempt.transaction_id
                or None,
                confirmed_amount=attempt.amount,
                source=f"{source}" if hint is None else "callback+status_query",
            )
            return ReconcileOutcome.PAID if paid.changed else ReconcileOutcome.ALREADY_FINAL
        if not attempt.in_flight:
            attempt.save(update_fields=["check_count", "updated_at"])
            return ReconcileOutcome.ALREADY_FINAL
        final: str | None = None
        if status is TransactionStatus.CANCELLED:
            # The reason: the push's own final code if it had one, else what the callback claimed (harmless
            # to believe: either way no money moved, the query said so).
            final = _failure_state(attempt.result_code)
            if final == State.FAILED and hint is not None:
                final = _failure_state(hint.result_code)
        elif status is TransactionStatus.EXPIRED:
            final = State.TIMED_OUT
        elif status in (TransactionStatus.NOT_FOUND, TransactionStatus.OTHER) and now >= _final_deadline(attempt):
            final = State.FAILED
            attempt.result_description = "not found by status query after the push deadline and margin"
        if final is not None:
            attempt.state = final
            attempt.finished_at = now
            attempt.next_check_at = None
            if hint is not None and hint.result_code and not attempt.result_code:
                attempt.result_code = hint.result_code[:16]
            attempt.save()
            _sync_order_payment_status(order, attempt)
            outcome = ReconcileOutcome.FINAL
        else:
            if attempt.state == State.PUSHING and now < (attempt.push_deadline or now):
                # The worker is still holding the push: look again when its window has closed.
                attempt.next_check_at = (attempt.push_deadline or now) + callback_grace()
            else:
                attempt.next_check_at = now + reconcile_backoff(attempt.check_count - 1)
                if attempt.state == State.PUSHING and now >= (attempt.push_deadline or now):
                    # The worker went quiet past the window (died?): treat as unknown from now on.
                    attempt.state = State.UNKNOWN
            attempt.save()
            _sync_order_payment_status(order, attempt)
            _schedule_reconcile(attempt.pk, attempt.next_check_at)
            outcome = ReconcileOutcome.PENDING
    logger.info("reconciled %s: %s → %s", attempt.third_party_reference, status, attempt.state)
    return outcome


def payments_sweep(*, now: datetime | None = None, limit: int = 1000) -> dict[str, int]:
    """The periodic safety net (every minute): queue a reconcile for every attempt whose check is due (UNKNOWN,
    AWAITING_CALLBACK past its deadline, PUSHING past the longest push), re-dispatch QUEUED attempts that got
    stuck (or fail them once their window is long gone: they were never sent). Idempotent; takes no locks itself.
    """
    from kulipa.payments import tasks

    now = now or timezone.now()
    due = list(
        PaymentAttempt.objects.filter(
            state__in=[State.PUSHING, State.AWAITING_CALLBACK, State.UNKNOWN], next_check_at__lte=now
        )
        .order_by("next_check_at")
        .values_list("id", flat=True)[:limit]
    )
    for attempt_id in due:
        tasks.reconcile_attempt(attempt_id)
    stuck = list(
        PaymentAttempt.objects.filter(state=State.QUEUED, created_at__lte=now - QUEUED_STUCK_AFTER).values_list(
            "id", "created_at"
        )[:limit]
    )
    redispatched = abandoned = 0
    for attempt_id, created_at in stuck:
        if created_at + push_window() + QUEUED_STUCK_AFTER > now:
            tasks.dispatch_payment(attempt_id)
            redispatched += 1
        elif payment_attempt_abandon_queued(attempt_id=attempt_id):
            abandoned += 1
    return {"reconcile": len(due), "redispatched": redispatched, "abandoned": abandoned}
