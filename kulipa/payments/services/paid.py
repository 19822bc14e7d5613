"""The one place that makes an order paid: :func:`order_mark_paid`."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.core import locks
from kulipa.inventory import services as inventory
from kulipa.inventory.services import CommitResult
from kulipa.orders import services as orders
from kulipa.orders.models import Order
from kulipa.payments.decisions import Paid, decide_after_stock, decide_confirmed
from kulipa.payments.events import Kind, event_record
from kulipa.payments.models import AttentionItem, PaymentAttempt
from kulipa.payments.services.attention import attention_raise
from kulipa.payments.transitions import attempt_transition

logger = logging.getLogger("kulipa.payments")

State = PaymentAttempt.State
OrderStatus = Order.Status
PaymentStatus = Order.PaymentStatus


class PaidOutcome(enum.StrEnum):
    PAID = "paid"
    NEEDS_ATTENTION = "needs_attention"
    DUPLICATE = "duplicate"
    """Money for an order another payment had already paid: recorded, a reversal proposed, the order untouched."""
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

    Locks Order (1), then the attempt (2); ``reservations_commit`` then locks products (4) and reservations (5).
    May run inside a caller's transaction that holds those locks. Idempotent: an attempt already SUCCEEDED changes
    nothing (``changed=False``) but may learn its M-Pesa transaction id. Decided by
    :func:`~kulipa.payments.decisions.decide_confirmed` and :func:`~kulipa.payments.decisions.decide_after_stock`:

    * the order already has a paying payment → this one is a DUPLICATE: attempt SUCCEEDED, order untouched,
      attention item with a reversal proposed;
    * amount ≠ order total → order NEEDS_ATTENTION, stock not sold, reversal proposed;
    * otherwise the stock is sold (re-acquired if the order had expired or was cancelled and it is still there)
      → PAID; the stock is gone → NEEDS_ATTENTION ("paga — precisa de atenção"), reversal proposed.

    Never called for a status query that says the payment was reversed (``decide_query_answer``).
    """
    now = timezone.now()
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        tid = (transaction_id or attempt.transaction_id or "")[:40]
        if attempt.state == State.SUCCEEDED:
            if tid and not attempt.transaction_id:
                # Confirmed first by a status query (which carries no TransactionID); keep the id for reversals.
                PaymentAttempt.objects.filter(pk=attempt.pk).update(transaction_id=tid, updated_at=now)
                if attempt.pays_order:
                    orders.order_paid_details_set(order=order, mpesa_transaction_id=tid)
            return PaidResult(PaidOutcome.ALREADY_RECORDED, False, order.pk, attempt.pk)
        previous_state = attempt.state
        already_paid = PaymentAttempt.objects.filter(order_id=order.pk, pays_order=True).exists()
        plan = decide_confirmed(
            order_status=order.status, already_paid=already_paid, amount_matches=confirmed_amount == order.total
        )
        attempt_transition(
            attempt=attempt,
            to=State.SUCCEEDED,
            transaction_id=tid,
            result_code=attempt.result_code or "INS-0",
            finished_at=now,
            next_check_at=None,
            pays_order=plan is not Paid.DUPLICATE,
        )
        commit: CommitResult | None = None
        reason = ""
        attention_kind = ""
        if plan is Paid.DUPLICATE:
            outcome = PaidOutcome.DUPLICATE
            attention_kind = AttentionItem.Kind.DUPLICATE_PAYMENT
            reason = _("Pagamento em duplicado: a encomenda %(ref)s já estava paga; reverter %(tpr)s.") % {
                "ref": order.short_reference,
                "tpr": attempt.third_party_reference,
            }
        else:
            status: str
            if plan is Paid.AMOUNT_MISMATCH:
                status = OrderStatus.NEEDS_ATTENTION
                attention_kind = AttentionItem.Kind.AMOUNT_MISMATCH
                reason = _("Montante confirmado %(paid)s MT diferente do total %(total)s MT.") % {
                    "paid": confirmed_amount,
                    "total": order.total,
                }
            else:
                commit = inventory.reservations_commit(order=order)
                status = decide_after_stock(commit=commit)
                if status == OrderStatus.NEEDS_ATTENTION:
                    attention_kind = AttentionItem.Kind.LATE_PAYMENT
                    reason = _("Pagamento confirmado quando os produtos já não estavam disponíveis: propor a reversão.")
            orders.order_transition(
                order=order,
                to=status,
                paid_at=now,
                paid_amount=confirmed_amount,
                mpesa_transaction_id=tid,
                payment_status=PaymentStatus.PAID,
            )
            if reason:
                orders.order_attention_note(order=order, note=reason)
            outcome = PaidOutcome.PAID if status == OrderStatus.PAID else PaidOutcome.NEEDS_ATTENTION
        event_record(
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
                "order_status": order.status,
                "previous_state": previous_state,
                "stock": commit.value if commit else None,
                "reason": reason,
            },
        )
        if attention_kind:
            attention_raise(
                kind=attention_kind,
                key=f"paid:{attempt.pk}",
                order_id=order.pk,
                attempt_id=attempt.pk,
                reason=reason,
                propose_reversal=True,
            )
    logger.info("order %s %s by attempt %s (%s)", order.pk, outcome.value, attempt.third_party_reference, source)
    return PaidResult(outcome, True, order.pk, attempt.pk, commit, reason)
