"""Applying a decision (``kulipa.payments.decisions.Step``) to an attempt whose order and row the caller holds
locked (Order → PaymentAttempt). Shared by the push answer, the status query and the sweep."""

from __future__ import annotations

import logging
from datetime import datetime

from kulipa.orders.models import Order
from kulipa.payments.decisions import Act, Step
from kulipa.payments.events import Kind, event_record
from kulipa.payments.models import AttentionItem, PaymentAttempt
from kulipa.payments.services.attention import attention_raise
from kulipa.payments.services.paid import order_mark_paid
from kulipa.payments.services.status import hold_after_failure, payment_status_follow
from kulipa.payments.transitions import attempt_transition

logger = logging.getLogger("kulipa.payments")

State = PaymentAttempt.State


def apply_step(
    *,
    order: Order,
    attempt: PaymentAttempt,
    step: Step,
    now: datetime,
    code: str,
    description: str,
    transaction_id: str | None,
    source: str,
) -> None:
    """Carry out ``step`` for ``attempt`` (both rows locked by the caller, inside its transaction)."""
    if step.act is Act.CONFIRM:
        order_mark_paid(
            attempt_id=attempt.pk, transaction_id=transaction_id, confirmed_amount=attempt.amount, source=source
        )
        attempt.refresh_from_db()
        return
    if step.act is Act.IGNORE:
        return
    if step.tell:
        attention_raise(
            kind=AttentionItem.Kind.STUCK,
            key=f"unanswered:{attempt.pk}",
            order_id=order.pk,
            attempt_id=attempt.pk,
            reason=f"{attempt.third_party_reference}: {step.reason}",
        )
    if step.act is Act.RECHECK:
        if attempt.next_check_at != step.next_check_at:
            PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=step.next_check_at, updated_at=now)
            attempt.next_check_at = step.next_check_at
        return
    if step.act is Act.REVERSED:
        attention_raise(
            kind=AttentionItem.Kind.REVERSED_AT_GATEWAY,
            key=f"reversed:{attempt.pk}",
            order_id=order.pk,
            attempt_id=attempt.pk,
            reason=f"{attempt.third_party_reference}: the gateway reports this payment completed and reversed; "
            "it was not counted as paid.",
        )
        if step.to is None:  # already closed: nothing more to ask
            PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=None, updated_at=now)
            attempt.next_check_at = None
            return
    assert step.to is not None
    closing = step.to not in PaymentAttempt.IN_FLIGHT
    fields: dict[str, object] = {"next_check_at": step.next_check_at}
    if code and (closing or not attempt.result_code):
        fields["result_code"] = code[:16]
    if description or step.reason:
        fields["result_description"] = (step.reason or description)[:300]
    if closing:
        fields["finished_at"] = now
    if not attempt_transition(attempt=attempt, to=step.to, **fields):
        return
    if closing:
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.DECISION,
            summary=f"{attempt.third_party_reference} closed: {step.to} via {source}",
            payload={
                "decision": step.to,
                "source": source,
                "reason": step.reason,
                "next_check_at": str(step.next_check_at),
            },
        )
        hold_after_failure(order=order, now=now, state=step.to)
    payment_status_follow(order=order, attempt=attempt)
