"""Reversals requested from the admin (request, send once, reconcile a lost answer) and the admin "recheck"."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.inventory import services as inventory
from kulipa.orders.models import Order
from kulipa.payments import gateway
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services._common import (
    Kind,
    OrderStatus,
    Reversal,
    State,
    _event,
    _lock_order_and_attempt,
    _result_payload,
    logger,
)
from kulipa.payments.services.errors import PaymentError
from mpesa import MpesaError, Outcome, Result, TransactionStatus
from mpesa.config import Operation

REVERSAL_STUCK_AFTER = timedelta(minutes=5)
"""A reversal answers in seconds; one still SENDING after this lost its worker and is reconciled by query."""


def payment_reversal_request(*, attempt_id: int, requested_by: str) -> PaymentAttempt:
    """Staff asked to give the money of a paid attempt back. No network: stores the reversal's own
    ThirdPartyReference (before anything is sent), moves the reversal to REQUESTED, writes a REVERSAL event and
    queues ``reverse_payment``. Locks Order (1) → attempt (2). Idempotent: a reversal already requested, sent or
    done is left alone. Raises :class:`PaymentError` when there is nothing that can be reversed.
    """
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        if attempt.reversal_state in (Reversal.REQUESTED, Reversal.SENDING, Reversal.DONE, Reversal.UNKNOWN):
            return attempt
        if attempt.state != State.SUCCEEDED:
            raise PaymentError(_("Só um pagamento confirmado pode ser revertido."))
        if not attempt.transaction_id:
            raise PaymentError(_("Sem o ID da transacção M-Pesa não é possível reverter aqui; use o portal M-Pesa."))
        attempt.reversal_state = Reversal.REQUESTED
        attempt.reversal_reference = gateway.new_reference("R")
        attempt.save(update_fields=["reversal_state", "reversal_reference", "updated_at"])
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.REVERSAL,
            summary=f"reversal of {attempt.transaction_id} requested by {requested_by}",
            payload={
                "state": Reversal.REQUESTED,
                "transaction_id": attempt.transaction_id,
                "reversal_reference": attempt.reversal_reference,
                "amount": str(attempt.amount),
                "requested_by": requested_by,
            },
        )
        pk = attempt.pk

        def queue() -> None:
            from kulipa.payments import tasks

            tasks.reverse_payment(pk)

        transaction.on_commit(queue)
    return attempt


def payment_reversal_send(*, attempt_id: int) -> PaymentAttempt | None:
    """Worker: REQUESTED → SENDING (conditional UPDATE; only the winner sends, a reversal is sent once), call the
    library's reversal (full amount), record the REVERSAL event and the outcome under Order (1) → attempt (2).
    A reversal of the order's paying transaction cancels the order and releases any live reservation."""
    if not PaymentAttempt.objects.filter(pk=attempt_id, reversal_state=Reversal.REQUESTED).update(
        reversal_state=Reversal.SENDING, updated_at=timezone.now()
    ):
        return None
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    assert attempt.reversal_reference
    try:
        result = gateway.client().reversal(
            transaction_id=attempt.transaction_id, third_party_reference=attempt.reversal_reference
        )
    except (MpesaError, ImproperlyConfigured) as exc:
        result = Result(
            operation=Operation.REVERSAL,
            outcome=Outcome.INVALID_REQUEST,
            description="refused before sending",
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
    now = timezone.now()
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        if result.outcome is Outcome.SUCCESS:
            attempt.reversal_state = Reversal.DONE
            attempt.reversal_transaction_id = (result.transaction_id or "")[:40]
            attempt.reversed_at = now
        elif result.outcome is Outcome.UNKNOWN:
            attempt.reversal_state = Reversal.UNKNOWN
        else:
            attempt.reversal_state = Reversal.FAILED
        attempt.save()
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.REVERSAL,
            summary=f"reversal of {attempt.transaction_id}: {result.outcome.value} {result.code or ''}".strip(),
            payload={**_result_payload(result), "state": attempt.reversal_state},
        )
        if attempt.reversal_state == Reversal.DONE:
            _order_after_reversal(order, attempt)
    logger.info("reversal %s of %s: %s", attempt.reversal_reference, attempt.transaction_id, attempt.reversal_state)
    return attempt


def _order_after_reversal(order: Order, attempt: PaymentAttempt) -> None:
    """A reversal is DONE: note it on the order; if it gave back the order's paying transaction, the order is
    cancelled and any live reservation released. Caller holds Order (1) → attempt (2)."""
    note = _("Pagamento %(tid)s revertido (%(rid)s).") % {
        "tid": attempt.transaction_id,
        "rid": attempt.reversal_transaction_id or attempt.reversal_reference,
    }
    order.attention_reason = "\n".join(r for r in [order.attention_reason, note] if r)
    if attempt.transaction_id == order.mpesa_transaction_id:
        order.status = OrderStatus.CANCELLED
        inventory.reservations_release(order=order)
    order.save(update_fields=["attention_reason", "status", "updated_at"])


def payment_reversal_reconcile(*, attempt_id: int) -> PaymentAttempt:
    """A reversal whose answer was lost (UNKNOWN): ask by its own ThirdPartyReference. Never resent.

    Completed → DONE (with the same order effects as a direct answer); Cancelled or Expired → FAILED (staff may
    request again, with a new reference); N/A or a failed query → still UNKNOWN, asked again by the sweep.
    The query runs outside any transaction; the result is applied under Order (1) → attempt (2). Idempotent.
    """
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    if attempt.reversal_state != Reversal.UNKNOWN or not attempt.reversal_reference:
        return attempt
    result = gateway.client().query_transaction_status(
        query_reference=attempt.reversal_reference, third_party_reference=gateway.new_reference("Q")
    )
    status = result.transaction_status if result.outcome is Outcome.SUCCESS else None
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.STATUS_QUERY,
            summary=f"reversal query {attempt.reversal_reference}: {status or result.outcome.value}",
            payload=_result_payload(result),
        )
        if attempt.reversal_state != Reversal.UNKNOWN:
            return attempt
        if status is TransactionStatus.COMPLETED:
            attempt.reversal_state = Reversal.DONE
            attempt.reversed_at = timezone.now()
            attempt.save(update_fields=["reversal_state", "reversed_at", "updated_at"])
            _order_after_reversal(order, attempt)
        elif status in (TransactionStatus.CANCELLED, TransactionStatus.EXPIRED):
            attempt.reversal_state = Reversal.FAILED
            attempt.save(update_fields=["reversal_state", "updated_at"])
    logger.info("reversal %s reconciled: %s", attempt.reversal_reference, attempt.reversal_state)
    return attempt


def reversals_due(*, now: datetime, stuck_after: timedelta = REVERSAL_STUCK_AFTER) -> list[int]:
    """Attempts whose reversal needs a status query: UNKNOWN ones, and SENDING ones whose worker evidently died
    (no answer recorded for ``stuck_after``; moved to UNKNOWN here with a conditional update)."""
    PaymentAttempt.objects.filter(reversal_state=Reversal.SENDING, updated_at__lte=now - stuck_after).update(
        reversal_state=Reversal.UNKNOWN, updated_at=now
    )
    return list(PaymentAttempt.objects.filter(reversal_state=Reversal.UNKNOWN).values_list("id", flat=True)[:1000])


# --- admin helpers ---------------------------------------------------------------------------------------
def order_payment_recheck(*, order: Order) -> int:
    """Queue a forced status query for the order's latest attempt (admin "recheck status"). No network here."""
    from kulipa.payments import tasks

    latest = PaymentAttempt.objects.filter(order_id=order.pk).order_by("-id").first()
    if latest is None or latest.state in (State.QUEUED, State.SUCCEEDED):
        return 0
    attempt_id = latest.pk
    transaction.on_commit(lambda: tasks.reconcile_attempt(attempt_id, force=True))
    return 1
