"""Reconciliation: ask the gateway what happened to an attempt and apply the answer."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from kulipa.core import locks
from kulipa.payments import conf, gateway
from kulipa.payments.decisions import TAILED, decide_query_answer
from kulipa.payments.events import Kind, event_record, result_payload
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services.apply import apply_step
from kulipa.payments.services.attempts import attempt_clock
from mpesa import Outcome, QueryResult

logger = logging.getLogger("kulipa.payments")

State = PaymentAttempt.State

ASKABLE = (*PaymentAttempt.IN_FLIGHT, *TAILED)
"""States whose attempts the reconciler asks about when their ``next_check_at`` is due."""


class ReconcileOutcome(enum.StrEnum):
    PAID = "paid"
    FINAL = "final"
    """Settled as not paid (declined, failed, timed out, unconfirmed)."""
    PENDING = "pending"
    """Still not known; asked again at ``next_check_at``."""
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


def attempt_reconcile(
    *, attempt_id: int, force: bool = False, hint: CallbackHint | None = None, source: str = "status_query"
) -> ReconcileOutcome:
    """Ask the gateway about an attempt (``input_QueryReference`` = its ThirdPartyReference, with a fresh
    reference for the query itself), write a STATUS_QUERY event and apply what
    :func:`~kulipa.payments.decisions.decide_query_answer` says.

    Without ``force`` the call first claims the attempt (conditional UPDATE of a due ``next_check_at``), so
    concurrent reconcilers do not ask twice. ``force`` (callbacks, staff "re-check") asks whatever the state; a
    closed attempt then changes only if the gateway says Completed. No lock is held during the query; the answer is
    applied under Order (1) → attempt (2) locks.
    """
    now = timezone.now()
    attempt = PaymentAttempt.objects.filter(pk=attempt_id).first()
    if attempt is None:
        return ReconcileOutcome.UNCHANGED
    if attempt.state == State.SUCCEEDED and not force:
        return ReconcileOutcome.ALREADY_FINAL  # staff's forced re-check still asks, and the answer is logged
    if attempt.state == State.QUEUED:
        return ReconcileOutcome.NOT_DUE  # never sent: the dispatcher or the sweep decides
    if not force:
        claimed = (
            PaymentAttempt.objects.filter(pk=attempt_id, state__in=ASKABLE, next_check_at__lte=now)
            .filter(Q(next_check_at__isnull=False))
            .update(next_check_at=now + conf.RECONCILE_LEASE)
        )
        if not claimed:
            return ReconcileOutcome.NOT_DUE
    result = gateway.query_transaction_status(
        query_reference=attempt.third_party_reference, third_party_reference=gateway.new_reference("Q")
    )
    return attempt_apply_query(attempt_id=attempt_id, result=result, hint=hint, source=source)


def attempt_apply_query(
    *, attempt_id: int, result: QueryResult, hint: CallbackHint | None = None, source: str = "status_query"
) -> ReconcileOutcome:
    """Apply a status query's answer about an attempt, under Order (1) → attempt (2) locks. Idempotent."""
    now = timezone.now()
    query_ok = result.outcome is Outcome.SUCCESS
    status = result.transaction_status if query_ok else None
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        attempt.check_count += 1
        PaymentAttempt.objects.filter(pk=attempt.pk).update(check_count=attempt.check_count)
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.STATUS_QUERY,
            summary=f"query {attempt.third_party_reference}: {status.value if status else result.outcome.value}"
            + (" (reversed)" if result.reversed else ""),
            payload={**result_payload(result), "source": source, "check": attempt.check_count},
        )
        before = attempt.state
        step = decide_query_answer(
            state=attempt.state,
            query_ok=query_ok,
            status=status,
            reversed=result.reversed,
            result_code=attempt.result_code,
            hint_code=hint.result_code if hint else None,
            clock=attempt_clock(attempt, now=now),
        )
        trusted_tid = hint.transaction_id if hint is not None and hint.authenticated else None
        apply_step(
            order=order,
            attempt=attempt,
            step=step,
            now=now,
            code=(hint.result_code if hint and attempt.state in PaymentAttempt.IN_FLIGHT else "") or "",
            description="",
            transaction_id=trusted_tid or attempt.transaction_id or None,
            source=source if hint is None else "callback+status_query",
        )
    logger.info("reconciled %s: %s → %s", attempt.third_party_reference, status, attempt.state)
    if attempt.state == State.SUCCEEDED:
        return ReconcileOutcome.PAID if before != State.SUCCEEDED else ReconcileOutcome.ALREADY_FINAL
    if attempt.state in PaymentAttempt.IN_FLIGHT:
        return ReconcileOutcome.PENDING
    return ReconcileOutcome.FINAL if before in PaymentAttempt.IN_FLIGHT else ReconcileOutcome.ALREADY_FINAL
