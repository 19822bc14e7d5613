"""The state tables of the payments app: attempts, reversals, callback deliveries. The only writers of those
``state`` fields are :func:`attempt_transition`, :func:`reversal_transition` and :func:`delivery_transition`.

docs/payments.md draws each table with who makes every move and under which lock.

Every attempt and reversal state change writes one log line (logger ``kulipa.payments.transitions``, INFO) once
its transaction commits: the order number, the reference, the previous state and the outcome (the new state), the
result code when there is one, the MSISDN masked. In JSON logs these are fields of the line (``kulipa.core.logs``).
Logging never changes what happens: it runs after commit and its failures are swallowed (``robust``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction

from kulipa.core.transitions import TransitionTable, transition
from kulipa.orders.models import Order
from kulipa.payments.models import CallbackDelivery, PaymentAttempt, Reversal
from mpesa import mask_msisdn

logger = logging.getLogger(__name__)

A = PaymentAttempt.State
R = Reversal.State
D = CallbackDelivery.State

_ATTEMPT_ENDINGS = {A.SUCCEEDED, A.DECLINED, A.INSUFFICIENT_FUNDS, A.FAILED, A.TIMED_OUT, A.UNCONFIRMED}

ATTEMPT = TransitionTable(
    "attempt.state",
    {
        A.QUEUED: {A.PUSHING, A.NOT_SENT},
        A.PUSHING: {A.AWAITING_CALLBACK, A.UNKNOWN, A.NOT_SENT, *_ATTEMPT_ENDINGS},
        A.AWAITING_CALLBACK: _ATTEMPT_ENDINGS,
        A.UNKNOWN: _ATTEMPT_ENDINGS,
        # Late money is real: a closed attempt that the gateway later reports Completed becomes SUCCEEDED.
        A.DECLINED: {A.SUCCEEDED},
        A.INSUFFICIENT_FUNDS: {A.SUCCEEDED},
        A.FAILED: {A.SUCCEEDED},
        A.TIMED_OUT: {A.SUCCEEDED},
        A.UNCONFIRMED: {A.SUCCEEDED},
        A.NOT_SENT: {A.SUCCEEDED},
    },
)

# A reversal done by finance in the M-Pesa portal (``payment_reversal_record_external``) is CREATED SUCCEEDED with
# ``external=True``: it never was requested or sent, so it makes no transition and needs no row here.
REVERSAL = TransitionTable(
    "reversal.state",
    {
        R.REQUESTED: {R.SENDING},
        R.SENDING: {R.SUCCEEDED, R.FAILED, R.UNKNOWN},
        R.UNKNOWN: {R.SUCCEEDED, R.FAILED},
    },
)

DELIVERY = TransitionTable(
    "delivery.state",
    {
        D.QUEUED: {D.PROCESSING},
        D.PROCESSING: {D.DONE, D.RETRY, D.GAVE_UP, D.QUEUED},
        D.RETRY: {D.PROCESSING},
    },
)


def _order_number(order_id: int) -> str:
    return Order(pk=order_id).short_reference


def _log_after_commit(message: str, *args: object, **extra: object) -> None:
    """One INFO line with ``extra`` fields, written when the surrounding transaction commits (now, outside one)."""
    if logger.isEnabledFor(logging.INFO):
        transaction.on_commit(lambda: logger.info(message, *args, extra=extra), robust=True)


def _log_attempt(
    *, order_id: int, reference: str, msisdn: str, source: str, target: str, result_code: str = ""
) -> None:
    order = _order_number(order_id)
    masked = mask_msisdn(msisdn) if msisdn else ""
    code = f", {result_code}" if result_code else ""
    _log_after_commit(
        "payment %s: %s -> %s (order %s, %s%s)",
        reference,
        source,
        target,
        order,
        masked,
        code,
        event="payment_state",
        record="attempt",
        order=order,
        reference=reference,
        previous=source,
        outcome=target,
        result_code=result_code,
        msisdn=masked,
    )


def attempt_transition(*, attempt: PaymentAttempt, to: str, **fields: Any) -> bool:
    """Move ``attempt`` (read under its lock, or the state the caller claims from) to ``to`` with ``fields``.
    Updates the instance on success; returns False when another writer moved it first."""
    changed = transition(
        PaymentAttempt.objects, pk=attempt.pk, table=ATTEMPT, source=attempt.state, target=to, **fields
    )
    if changed:
        _log_attempt(
            order_id=attempt.order_id,
            reference=attempt.third_party_reference,
            msisdn=attempt.msisdn,
            source=str(attempt.state),
            target=str(to),
            result_code=str(fields.get("result_code") or attempt.result_code or ""),
        )
        attempt.state = to
        for name, value in fields.items():
            setattr(attempt, name, value)
    return changed


def attempt_claim_push(*, attempt_id: int, fresh_since: datetime, **fields: Any) -> bool:
    """QUEUED → PUSHING for an attempt created at or after ``fresh_since``: the claim that decides who sends it
    (a conditional UPDATE without a lock; only one caller wins)."""
    fresh = PaymentAttempt.objects.filter(created_at__gte=fresh_since)
    won = transition(fresh, pk=attempt_id, table=ATTEMPT, source=A.QUEUED, target=A.PUSHING, **fields)
    if won and logger.isEnabledFor(logging.INFO):
        try:
            row = PaymentAttempt.objects.filter(pk=attempt_id).values_list(
                "order_id", "third_party_reference", "msisdn"
            )
            for order_id, reference, msisdn in row:
                _log_attempt(
                    order_id=order_id, reference=reference, msisdn=msisdn, source=str(A.QUEUED), target=str(A.PUSHING)
                )
        except DatabaseError as exc:
            # The claim is committed: the caller must push. A log line that cannot be read (the database went away
            # just now) must not make the caller fail, which would leave the attempt claimed and never sent.
            logger.warning("attempt %s: queued -> pushing (details not logged: %s)", attempt_id, type(exc).__name__)
    return won


def reversal_transition(*, reversal: Reversal, to: str, **fields: Any) -> bool:
    """As :func:`attempt_transition`, for a reversal."""
    changed = transition(Reversal.objects, pk=reversal.pk, table=REVERSAL, source=reversal.state, target=to, **fields)
    if changed:
        _log_reversal(reversal=reversal, target=str(to), result_code=str(fields.get("result_code") or ""))
        reversal.state = to
        for name, value in fields.items():
            setattr(reversal, name, value)
    return changed


def _log_reversal(*, reversal: Reversal, target: str, result_code: str) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    if Reversal.attempt.is_cached(reversal):
        order_id, payment = reversal.attempt.order_id, reversal.attempt.third_party_reference
    else:
        row = PaymentAttempt.objects.filter(pk=reversal.attempt_id).values_list("order_id", "third_party_reference")
        order_id, payment = row.get()
    order = _order_number(order_id)
    code = f", {result_code}" if result_code else ""
    _log_after_commit(
        "reversal %s of payment %s: %s -> %s (order %s, %s MZN%s)",
        reversal.reference,
        payment,
        reversal.state,
        target,
        order,
        reversal.amount,
        code,
        event="payment_state",
        record="reversal",
        order=order,
        reference=reversal.reference,
        payment_reference=payment,
        previous=str(reversal.state),
        outcome=target,
        result_code=result_code,
        amount=str(reversal.amount),
    )


def delivery_transition(*, delivery_id: int, source: str | list[str], to: str, **fields: Any) -> bool:
    """Move a callback delivery from ``source`` to ``to`` (a claim: only one caller wins)."""
    return transition(CallbackDelivery.objects, pk=delivery_id, table=DELIVERY, source=source, target=to, **fields)
