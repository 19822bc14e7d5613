"""The state tables of the payments app: attempts, reversals, callback deliveries. The only writers of those
``state`` fields are :func:`attempt_transition`, :func:`reversal_transition` and :func:`delivery_transition`.

docs/payments.md draws each table with who makes every move and under which lock.
"""

from __future__ import annotations

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
        A.AWAITING_CALLBACK: {A.UNKNOWN, *_ATTEMPT_ENDINGS},
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

REVERSAL = TransitionTable(
    "reversal.state",
    {
        R.REQUESTED: {R.SENDING, R.FAILED},
        R.SENDING: {R.SUCCEEDED, R.FAILED, R.UNKNOWN},
        R.UNKNOWN: {R.SUCCEEDED, R.FAILED},
    },
)

DELIVERY = TransitionTable(
    "delivery.state",
    {
        D.QUEUED: {D.PROCESSING},
        D.PROCESSING: {D.DONE, D.RETRY, D.GAVE_UP, D.QUEUED},
        D.RETRY: {D.PROCESSING, D.GAVE_UP},
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
