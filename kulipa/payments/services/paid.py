"""The one place that makes an order paid: :func:`order_mark_paid`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.inventory import services as inventory
from kulipa.inventory.services import CommitResult
from kulipa.payments.services._common import (
    Kind,
    OrderStatus,
    PaymentStatus,
    Reversal,
    State,
    _event,
    _lock_order_and_attempt,
    logger,
)


class PaidOutcome(enum.StrEnum):
    PAID = "paid"
    NEEDS_ATTENTION = "needs_attention"
    ALREADY_RECORDED = "already_recorded"
    """This attempt was already recorded as paid: nothing changed (idempotent)."""


@dataclass(frozen=True, slots=True)
class PaidResult:
    outcome: PaidOutcome
    changed: bool
    order_id: int
    attempt_id: int
    commit: CommitResult | None = None
    reason: str = ""


def order_mark_paid(
    *, attempt_id: int, transaction_id: str | None, confirmed_amount: Decimal, source: str
) -> PaidResult:
    """THE ONE PLACE that makes an order paid: the gateway confirmed ``confirmed_amount`` for this attempt.

    Locks Order (1), then the attempt (2); ``reservations_commit`` then locks products (3) and reservations (4).
    May be called inside a caller's transaction that already holds those locks. Idempotent: if the attempt is
    already SUCCEEDED nothing changes (``changed=False``); concurrent calls serialise on the order lock, and the
    M-Pesa transaction id is unique across attempts (constraint ``one_attempt_per_mpesa_transaction``).

    * amount ≠ order total → NEEDS_ATTENTION (reason recorded), reversal proposed, stock not committed;
    * stock committed (or re-acquired after the reservation lapsed: late payment with stock) → PAID;
    * stock gone (late payment after expiry) → NEEDS_ATTENTION ("paid — needs attention"), reversal proposed;
    * the order was already paid by another attempt → NEEDS_ATTENTION, reversal of this payment proposed.

    Records paid_at, paid_amount, mpesa_transaction_id on the order and a DECISION event. ``source`` says what
    confirmed it (``c2b_response``, ``status_query``, ``callback+status_query``).
    """
    now = timezone.now()
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        if attempt.state == State.SUCCEEDED:
            if transaction_id and not attempt.transaction_id:
                # Confirmed first by a status query (which carries no TransactionID); keep the id for reversals.
                attempt.transaction_id = transaction_id[:40]
                attempt.save(update_fields=["transaction_id", "updated_at"])
                only_payment = not order.payment_attempts.filter(state=State.SUCCEEDED).exclude(pk=attempt.pk).exists()
                if not order.mpesa_transaction_id and only_payment:
                    order.mpesa_transaction_id = attempt.transaction_id
                    order.save(update_fields=["mpesa_transaction_id", "updated_at"])
            return PaidResult(PaidOutcome.ALREADY_RECORDED, False, order.pk, attempt.pk)
        tid = (transaction_id or attempt.transaction_id or "")[:40]
        previous_state = attempt.state
        attempt.state = State.SUCCEEDED
        attempt.transaction_id = tid
        attempt.result_code = attempt.result_code or "INS-0"
        attempt.finished_at = now
        attempt.next_check_at = None
        reasons: list[str] = []
        commit: CommitResult | None = None
        if order.paid_at is not None:
            reasons.append(
                _("Pagamento em duplicado: a encomenda já estava paga (%(first)s); reverter %(ref)s.")
                % {"first": order.mpesa_transaction_id or "?", "ref": attempt.third_party_reference}
            )
        else:
            if confirmed_amount != order.total:
                reasons.append(
                    _("Montante confirmado %(paid)s MT diferente do total %(total)s MT.")
                    % {"paid": confirmed_amount, "total": order.total}
                )
            else:
                commit = inventory.reservations_commit(order=order)
                if commit is CommitResult.OUT_OF_STOCK:
                    reasons.append(
                        _("Pagamento confirmado depois de a reserva expirar e já não há stock: propor a reversão.")
                    )
            order.paid_at = now
            order.paid_amount = confirmed_amount
            order.mpesa_transaction_id = tid
            order.payment_status = PaymentStatus.PAID
        order.status = OrderStatus.NEEDS_ATTENTION if reasons else OrderStatus.PAID
        if reasons:
            order.attention_reason = "\n".join(r for r in [order.attention_reason, *reasons] if r)
            attempt.reversal_state = Reversal.PROPOSED
        attempt.save()
        order.save(
            update_fields=[
                "status",
                "payment_status",
                "paid_at",
                "paid_amount",
                "mpesa_transaction_id",
                "attention_reason",
                "updated_at",
            ]
        )
        outcome = PaidOutcome.NEEDS_ATTENTION if reasons else PaidOutcome.PAID
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.DECISION,
            summary=f"{outcome.value}: {attempt.third_party_reference} via {source}",
            payload={
                "decision": outcome.value,
                "source": source,
                "transaction_id": tid,
                "confirmed_amount": str(confirmed_amount),
                "order_total": str(order.total),
                "previous_state": previous_state,
                "stock": commit.value if commit else None,
                "reasons": reasons,
            },
        )
        if reasons:
            _event(
                order_id=order.pk,
                attempt_id=attempt.pk,
                kind=Kind.REVERSAL,
                summary=f"reversal proposed for {attempt.third_party_reference}",
                payload={"state": Reversal.PROPOSED, "transaction_id": tid, "amount": str(confirmed_amount)},
            )
    logger.info("order %s %s by attempt %s (%s)", order.pk, outcome.value, attempt.third_party_reference, source)
    return PaidResult(outcome, True, order.pk, attempt.pk, commit, "\n".join(reasons))
