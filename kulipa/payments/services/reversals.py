"""Reversals: request (no network), send once, reconcile a lost answer; what a reversal does to the order and its
stock. Staff's "re-check" of a payment lives here too."""

from __future__ import annotations

import logging
import re
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.core import locks
from kulipa.core.money import format_mzn
from kulipa.inventory import services as inventory
from kulipa.orders import services as orders
from kulipa.orders.models import Order
from kulipa.payments import conf, gateway
from kulipa.payments.decisions import decide_reversal_answer, decide_reversal_query
from kulipa.payments.events import Kind, event_record, result_payload
from kulipa.payments.models import AttentionItem, PaymentAttempt, Reversal
from kulipa.payments.services.attention import attention_raise
from kulipa.payments.services.errors import ReversalNotAllowed
from kulipa.payments.transitions import reversal_transition
from mpesa import Outcome

logger = logging.getLogger("kulipa.payments")

R = Reversal.State
OrderStatus = Order.Status
PaymentStatus = Order.PaymentStatus


def reversed_total(*, attempt_id: int, states: tuple[str, ...] = (R.SUCCEEDED,)) -> Decimal:
    total = Reversal.objects.filter(attempt_id=attempt_id, state__in=states).aggregate(s=Sum("amount"))["s"]
    return total or Decimal("0.00")


def payment_reversal_request(
    *,
    attempt_id: int,
    requested_by: str,
    reason: str = "",
    amount: Decimal | None = None,
    restock: bool | None = None,
    request_key: str | None = None,
) -> Reversal:
    """Ask to give back ``amount`` (default: all that is left) of a paid attempt. No network: stores the
    reversal with its own ThirdPartyReference (before anything is sent) as REQUESTED and a REVERSAL event; the
    caller queues the send after commit (``tasks.queue_reversal``). Locks Order (1) → attempt (2).

    ``restock`` (default: yes for a reversal that gives back the whole of the order's paying payment, no
    otherwise) returns the sold units to stock when the reversal succeeds. Idempotent against double clicks: the
    reversal an earlier request with the same ``request_key`` made (in any state), or one of this attempt still
    open, is returned instead (unique constraints). Raises :class:`ReversalNotAllowed`.
    """
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        if request_key:
            asked_before = Reversal.objects.filter(request_key=request_key).first()
            if asked_before is not None and asked_before.attempt_id != attempt.pk:
                raise ReversalNotAllowed(_("Pedido inválido: abra de novo a página de reversão."))
            if asked_before is not None:
                return asked_before
        open_one = Reversal.objects.filter(attempt_id=attempt.pk, state__in=Reversal.OPEN).first()
        if open_one is not None:
            return open_one
        if attempt.state != PaymentAttempt.State.SUCCEEDED:
            raise ReversalNotAllowed(_("Só um pagamento confirmado pode ser revertido."))
        if not attempt.transaction_id:
            raise ReversalNotAllowed(
                _("Sem o ID da transacção M-Pesa não é possível reverter aqui; use o portal M-Pesa.")
            )
        left = attempt.amount - reversed_total(attempt_id=attempt.pk)
        amount = left if amount is None else _money(amount)
        if amount <= 0 or amount > left:
            raise ReversalNotAllowed(
                _("Pode reverter no máximo %(left)s deste pagamento.") % {"left": format_mzn(left)}
            )
        full = amount == left and attempt.pays_order
        try:
            with transaction.atomic():
                reversal = Reversal.objects.create(
                    attempt=attempt,
                    reference=gateway.new_reference("R"),
                    request_key=request_key or None,
                    amount=amount,
                    restock=full if restock is None else restock,
                    reason=reason[:300],
                    requested_by=requested_by[:150],
                )
        except IntegrityError:  # requested concurrently: the one that got in stands
            if request_key:
                return Reversal.objects.get(request_key=request_key)
            return Reversal.objects.get(attempt_id=attempt.pk, state__in=Reversal.OPEN)
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.REVERSAL,
            summary=f"reversal {reversal.reference} of {attempt.transaction_id} ({amount} MZN) requested by "
            f"{requested_by}",
            payload={
                "state": R.REQUESTED,
                "transaction_id": attempt.transaction_id,
                "reversal_reference": reversal.reference,
                "amount": str(amount),
                "restock": reversal.restock,
                "reason": reason,
                "requested_by": requested_by,
            },
        )
    return reversal


PORTAL_REFERENCE = re.compile(r"[A-Z0-9]{1,20}")


def payment_reversal_record_external(
    *,
    attempt_id: int,
    portal_reference: str,
    amount: Decimal,
    recorded_by: str,
    reason: str,
    restock: bool | None = None,
) -> Reversal:
    """Finance gave ``amount`` of a paid attempt back in the M-Pesa portal (the API cannot without the M-Pesa
    transaction id): record it. Nothing is sent. The reversal is CREATED ``SUCCEEDED`` and ``external`` (no
    transition: it never was requested or sent), its reference the portal's (1–20 letters or digits, stored
    uppercase, unique), with a REVERSAL event; the order and stock follow as after an API reversal
    (:func:`_order_after_reversal`). Locks Order (1) → attempt (2).

    ``amount`` is at most what is left: paid − reversed − any reversal still open (that one may still succeed).
    ``restock`` defaults as in :func:`payment_reversal_request`. Recording the same portal reference for the same
    attempt and amount again returns the first record (idempotent); any other reuse of it is refused.
    Raises :class:`ReversalNotAllowed`.
    """
    reference = "".join(portal_reference.split()).upper()
    if not PORTAL_REFERENCE.fullmatch(reference):
        raise ReversalNotAllowed(_("A referência do portal M-Pesa tem de ter de 1 a 20 letras ou algarismos."))
    amount = _money(amount)
    now = timezone.now()
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        recorded = Reversal.objects.filter(reference=reference).first()
        if recorded is not None:
            if recorded.attempt_id == attempt.pk and recorded.external and recorded.amount == amount:
                return recorded
            raise ReversalNotAllowed(_("A referência %(ref)s já está registada noutra reversão.") % {"ref": reference})
        if attempt.state != PaymentAttempt.State.SUCCEEDED:
            raise ReversalNotAllowed(_("Só um pagamento confirmado pode ser revertido."))
        reversed_already = reversed_total(attempt_id=attempt.pk)
        left = attempt.amount - reversed_already - reversed_total(attempt_id=attempt.pk, states=Reversal.OPEN)
        if amount <= 0 or amount > left:
            raise ReversalNotAllowed(
                _("Pode reverter no máximo %(left)s deste pagamento.") % {"left": format_mzn(left)}
            )
        full = amount == attempt.amount - reversed_already and attempt.pays_order
        try:
            with transaction.atomic():
                reversal = Reversal.objects.create(
                    attempt=attempt,
                    reference=reference,
                    amount=amount,
                    restock=full if restock is None else restock,
                    reason=reason[:300],
                    requested_by=recorded_by[:150],
                    external=True,
                    state=R.SUCCEEDED,
                    finished_at=now,
                )
        except IntegrityError:  # the same reference recorded concurrently
            raise ReversalNotAllowed(
                _("A referência %(ref)s já está registada noutra reversão.") % {"ref": reference}
            ) from None
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.REVERSAL,
            summary=f"reversal {reference} of {attempt.transaction_id or attempt.third_party_reference} "
            f"({amount} MZN) done in the M-Pesa portal, recorded by {recorded_by}",
            payload={
                "state": R.SUCCEEDED,
                "external": True,
                "third_party_reference": attempt.third_party_reference,
                "transaction_id": attempt.transaction_id,
                "reversal_reference": reference,
                "amount": str(amount),
                "restock": reversal.restock,
                "reason": reason,
                "recorded_by": recorded_by,
            },
        )
        _order_after_reversal(order=order, attempt=attempt, reversal=reversal)
    logger.info("reversal %s of %s recorded from the portal by %s", reference, attempt, recorded_by)
    return reversal


def _money(amount: Decimal) -> Decimal:
    """``amount`` as meticais with at most two decimals; anything else is refused."""
    try:
        value = Decimal(amount)
    except (ArithmeticError, TypeError, ValueError):
        raise ReversalNotAllowed(_("Montante inválido.")) from None
    if not value.is_finite() or value != value.quantize(Decimal("0.01")):
        raise ReversalNotAllowed(_("Montante inválido."))
    return value.quantize(Decimal("0.01"))


def payment_reversal_send(*, reversal_id: int) -> Reversal | None:
    """Worker: REQUESTED → SENDING (conditional UPDATE: only the winner sends; a reversal is sent once), call the
    gateway outside any transaction, then record the answer under Order (1) → attempt (2) → reversal (3)."""
    reversal = Reversal.objects.select_related("attempt").filter(pk=reversal_id).first()
    if reversal is None or reversal.state != R.REQUESTED:
        return None
    now = timezone.now()
    if not reversal_transition(reversal=reversal, to=R.SENDING, sent_at=now):
        return None
    result = gateway.reversal(
        transaction_id=reversal.attempt.transaction_id,
        third_party_reference=reversal.reference,
        amount=reversal.amount,
    )
    with transaction.atomic():
        order, attempt, reversal = locks.reversal_lock(reversal_id)
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.REVERSAL,
            summary=f"reversal {reversal.reference}: {result.outcome.value} {result.code or ''}".strip(),
            payload=result_payload(result),
        )
        if reversal.state != R.SENDING:
            return reversal
        to = decide_reversal_answer(outcome=result.outcome, sent=result.sent)
        _reversal_settle(
            order=order,
            attempt=attempt,
            reversal=reversal,
            to=to,
            code=result.code or "",
            description=result.description or result.error or "",
            transaction_id=result.transaction_id or "",
        )
    logger.info("reversal %s of %s: %s", reversal.reference, attempt.transaction_id, reversal.state)
    return reversal


def payment_reversal_reconcile(*, reversal_id: int) -> Reversal:
    """A reversal whose answer was lost (UNKNOWN): ask by its own reference; never resent. Completed → SUCCEEDED
    (same effects as a direct answer); Cancelled/Expired → FAILED; otherwise asked again later (backoff), and a
    person is told once it is older than ``STUCK_AFTER``."""
    reversal = Reversal.objects.get(pk=reversal_id)
    if reversal.state != R.UNKNOWN:
        return reversal
    result = gateway.query_transaction_status(
        query_reference=reversal.reference, third_party_reference=gateway.new_reference("Q")
    )
    query_ok = result.outcome is Outcome.SUCCESS
    now = timezone.now()
    with transaction.atomic():
        order, attempt, reversal = locks.reversal_lock(reversal_id)
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.STATUS_QUERY,
            summary=f"reversal query {reversal.reference}: "
            f"{result.transaction_status if query_ok else result.outcome.value}",
            payload=result_payload(result),
        )
        if reversal.state != R.UNKNOWN:
            return reversal
        to = decide_reversal_query(query_ok=query_ok, status=result.transaction_status)
        if to is None:
            checks = reversal.check_count + 1
            Reversal.objects.filter(pk=reversal.pk).update(
                check_count=checks, next_check_at=now + conf.reconcile_backoff(checks), updated_at=now
            )
            return reversal
        _reversal_settle(
            order=order, attempt=attempt, reversal=reversal, to=to, code="", description="", transaction_id=""
        )
    logger.info("reversal %s reconciled: %s", reversal.reference, reversal.state)
    return reversal


def _reversal_settle(
    *,
    order: Order,
    attempt: PaymentAttempt,
    reversal: Reversal,
    to: str,
    code: str,
    description: str,
    transaction_id: str,
) -> None:
    """Record a reversal's new state and what follows. Caller holds locks 1 → 2 → 3."""
    now = timezone.now()
    fields: dict[str, object] = {"result_code": code[:16], "result_description": description[:300]}
    if to == R.UNKNOWN:
        fields["next_check_at"] = now + conf.reconcile_backoff(0)
    else:
        fields.update(finished_at=now, next_check_at=None)
    if transaction_id:
        fields["transaction_id"] = transaction_id[:40]
    reversal_transition(reversal=reversal, to=to, **fields)
    if to == R.FAILED:
        attention_raise(
            kind=AttentionItem.Kind.REVERSAL_FAILED,
            key=f"reversal:{reversal.pk}",
            order_id=order.pk,
            attempt_id=attempt.pk,
            reason=f"reversal {reversal.reference} of {reversal.amount} MT failed: {code} {description}".strip(),
        )
    if to == R.SUCCEEDED:
        _order_after_reversal(order=order, attempt=attempt, reversal=reversal)


def _order_after_reversal(*, order: Order, attempt: PaymentAttempt, reversal: Reversal) -> None:
    """A reversal succeeded: the order's payment status, status and stock follow. Caller holds locks 1 → 2 → 3.

    * the order's paying payment given back in full → order CANCELLED (nothing will be delivered), payment status
      "devolvido"; in part → "devolvido em parte";
    * a duplicate payment given back → the order is untouched;
    * ``reversal.restock`` → the sold units return to stock (an event says which).

    The reversal itself is told by its REVERSAL events (the order's timeline), not as a reason for attention.
    """
    back = reversed_total(attempt_id=attempt.pk)
    if attempt.pays_order:
        if back >= attempt.amount:
            orders.order_payment_status_set(order=order, payment_status=PaymentStatus.REFUNDED)
            if order.status in (OrderStatus.PAID, OrderStatus.NEEDS_ATTENTION):
                orders.order_transition(order=order, to=OrderStatus.CANCELLED)
            inventory.reservations_release(order=order)
        else:
            orders.order_payment_status_set(order=order, payment_status=PaymentStatus.PARTIALLY_REFUNDED)
    if reversal.restock:
        returned = inventory.reservations_return(order=order)
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.DECISION,
            summary=f"restocked after reversal {reversal.reference}: {sum(returned.values())} unit(s)",
            payload={"decision": "restocked", "reversal": reversal.reference, "units": returned},
        )


def order_payment_recheck(*, order: Order) -> int | None:
    """The attempt staff's "re-check" should ask about: the order's latest sent attempt (None: nothing to ask).
    The caller queues ``tasks.queue_reconcile(attempt_id, force=True)``. No network here."""
    latest = PaymentAttempt.objects.filter(order_id=order.pk).exclude(state=PaymentAttempt.State.QUEUED).order_by("-id")
    return latest.values_list("id", flat=True).first()
