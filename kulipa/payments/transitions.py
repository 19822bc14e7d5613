"""The state tables of the payments app: attempts, reversals, callback deliveries. The only writers of those
``state`` fields are :func:`attempt_transition`, :func:`reversal_transition` and :func:`delivery_transition`.

docs/payments.md draws each table with who makes every move and under which lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kulipa.core.transitions import TransitionTable, transition
from kulipa.payments.models import CallbackDelivery, PaymentAttempt, Reversal

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


def attempt_transition(*, attempt: PaymentAttempt, to: str, **fields: Any) -> bool:
    """Move ``attempt`` (read under its lock, or the state the caller claims from) to ``to`` with ``fields``.
    Updates the instance on success; returns False when another writer moved it first."""
    changed = transition(
        PaymentAttempt.objects, pk=attempt.pk, table=ATTEMPT, source=attempt.state, target=to, **fields
    )
    if changed:
        attempt.state = to
        for name, value in fields.items():
            setattr(attempt, name, value)
    return changed


def attempt_claim_push(*, attempt_id: int, fresh_since: datetime, **fields: Any) -> bool:
    """QUEUED → PUSHING for an attempt created at or after ``fresh_since``: the claim that decides who sends it
    (a conditional UPDATE without a lock; only one caller wins)."""
    fresh = PaymentAttempt.objects.filter(created_at__gte=fresh_since)
    return transition(fresh, pk=attempt_id, table=ATTEMPT, source=A.QUEUED, target=A.PUSHING, **fields)


def reversal_transition(*, reversal: Reversal, to: str, **fields: Any) -> bool:
    """As :func:`attempt_transition`, for a reversal."""
    changed = transition(Reversal.objects, pk=reversal.pk, table=REVERSAL, source=reversal.state, target=to, **fields)
    if changed:
        reversal.state = to
        for name, value in fields.items():
            setattr(reversal, name, value)
    return changed


def delivery_transition(*, delivery_id: int, source: str | list[str], to: str, **fields: Any) -> bool:
    """Move a callback delivery from ``source`` to ``to`` (a claim: only one caller wins)."""
    return transition(CallbackDelivery.objects, pk=delivery_id, table=DELIVERY, source=source, target=to, **fields)
