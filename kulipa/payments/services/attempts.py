"""Attempts: create one (checkout, "try again"; no network), claim its push (worker), record the push answer,
and close attempts that waited in the queue too long to be sent."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from kulipa.core import limits, locks
from kulipa.inventory import services as inventory
from kulipa.inventory.errors import OutOfStock
from kulipa.orders.models import Order
from kulipa.payments import conf, gateway
from kulipa.payments.decisions import Act, Clock, Step, decide_push_answer, tail_next
from kulipa.payments.events import Kind, event_record, result_payload
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.push_engine import PushJob
from kulipa.payments.selectors import push_fits
from kulipa.payments.services.apply import apply_step
from kulipa.payments.services.errors import InvalidMsisdn, PaymentNotAllowed
from kulipa.payments.services.status import hold_for_push, payment_status_follow
from kulipa.payments.transitions import attempt_claim_push
from mpesa import MpesaError, Result, mask_msisdn, normalize_msisdn

logger = logging.getLogger("kulipa.payments")

State = PaymentAttempt.State
OrderStatus = Order.Status


def attempt_clock(attempt: PaymentAttempt, *, now: datetime) -> Clock:
    """The deadlines that decide an attempt's fate, from the settings and its own times."""
    push_deadline = attempt.push_deadline or (attempt.push_started_at or attempt.created_at) + conf.push_window()
    return Clock(
        now=now,
        push_deadline=push_deadline,
        final_deadline=push_deadline + conf.reconcile_margin(),
        backoff=conf.reconcile_backoff(max(0, attempt.check_count - 1)),
        grace=conf.callback_grace(),
        tail_next=tail_next(
            closed_at=attempt.finished_at or now, now=now, first=conf.TAIL_FIRST, horizon=conf.TAIL_HORIZON
        ),
    )


# --- creating ----------------------------------------------------------------------------------------------
def attempt_create(*, order: Order, msisdn: str, replaces: int | None, now: datetime) -> PaymentAttempt:
    """Insert a QUEUED attempt for ``order`` with a fresh ThirdPartyReference (stored before anything is sent) and
    its REQUEST event. The caller holds the order lock, or created the order in this transaction, and queues the
    dispatch after commit (``kulipa.payments.tasks.queue_dispatch``).

    At most one attempt per order is in flight (constraint ``one_attempt_in_flight_per_order``): the insert raises
    ``IntegrityError`` if one is (:func:`payment_attempt_start` catches it). At most one attempt per phone number
    is in flight, whatever the order (constraint ``one_attempt_in_flight_per_msisdn``; on PostgreSQL a concurrent
    insert waits for the other transaction): raises :class:`~kulipa.core.limits.LimitReached` (``phone_in_flight``)
    if another order's push to ``msisdn`` is.
    """
    mode = conf.payment_mode()
    try:
        attempt = PaymentAttempt.objects.create(
            order=order,
            third_party_reference=gateway.new_reference("K"),
            msisdn=msisdn,
            amount=order.total,
            mode=mode,
        )
    except IntegrityError as exc:
        # Which constraint, without a query (on PostgreSQL the transaction is aborted until the caller's savepoint
        # or atomic() unwinds): PostgreSQL names it, SQLite names the column ("…paymentattempt.msisdn"). The other
        # push may have ended since; this insert was refused all the same.
        if "msisdn" in str(exc):
            raise limits.phone_busy(msisdn=msisdn) from exc
        raise
    event_record(
        order_id=order.pk,
        attempt_id=attempt.pk,
        kind=Kind.REQUEST,
        summary=f"C2B {attempt.third_party_reference} {attempt.amount} MZN to {mask_msisdn(msisdn)} ({mode})",
        payload={
            "third_party_reference": attempt.third_party_reference,
            "transaction_reference": order.short_reference,
            "amount": str(attempt.amount),
            "msisdn": msisdn,
            "mode": mode,
            "replaces_attempt": replaces,
        },
    )
    logger.info(
        "attempt %s queued for order %s (%s, %s)", attempt.third_party_reference, order.pk, mask_msisdn(msisdn), mode
    )
    return attempt


def payment_retry_number(*, order: Order, msisdn: str | None = None) -> str:
    """The normalised number "try again" pushes to: ``msisdn`` (any form ``normalize_msisdn`` accepts), default the
    latest attempt's number, else the order's. Raises :class:`InvalidMsisdn` for a number that cannot pay."""
    if not msisdn:
        last = PaymentAttempt.objects.filter(order_id=order.pk).order_by("-id").values_list("msisdn", flat=True)
        msisdn = last.first() or order.msisdn
    try:
        return normalize_msisdn(msisdn)
    except MpesaError as exc:
        raise InvalidMsisdn(_("Número M-Pesa inválido: use um número Vodacom (84 ou 85) com 9 dígitos.")) from exc


def payment_attempt_start(
    *, order: Order, msisdn: str | None = None, after_attempt_id: int | None = None
) -> tuple[PaymentAttempt, bool]:
    """ "Try again": a new QUEUED attempt for an order awaiting payment. No network call.

    * ``msisdn``: the number to push to (see :func:`payment_retry_number`). Raises :class:`InvalidMsisdn` for a
      number that cannot pay with M-Pesa.
    * ``after_attempt_id``: the attempt the page showed. Idempotent: when the order's latest attempt is another
      one, nothing is created and the latest is returned, so a double click yields one attempt.

    Returns ``(attempt, created)``. Raises :class:`PaymentNotAllowed` when the order does not await payment, its
    hold ended, or stock released when a push ended (phone said no, nobody answered) was taken by someone else
    since (the message names those products); :class:`~kulipa.core.limits.LimitReached` when the order already
    had ``LIMIT_ATTEMPTS_PER_ORDER`` attempts, the customer would hold too many units, or another order's push to
    the number is in flight. Nothing changes then. Otherwise holds the stock for the new push (re-reserving
    released stock; capped since checkout). Locks: Order (1), then products (4), holders, reservations.
    The caller queues the dispatch (``tasks.queue_dispatch``) when a new attempt was created.
    """
    number = payment_retry_number(order=order, msisdn=msisdn)
    now = timezone.now()
    with transaction.atomic():
        locked = locks.order_lock(order.pk)
        if locked.status != OrderStatus.AWAITING_PAYMENT:
            raise PaymentNotAllowed(_("Esta encomenda já não aguarda pagamento."))
        latest = PaymentAttempt.objects.filter(order_id=locked.pk).order_by("-id").first()
        if latest is not None and latest.pk != after_attempt_id:
            return latest, False
        if latest is not None and latest.in_flight:  # the page showed it, and it is still running: no new push
            return latest, False
        cap = limits.cap("LIMIT_ATTEMPTS_PER_ORDER")
        if cap and PaymentAttempt.objects.filter(order_id=locked.pk).count() >= cap:
            raise limits.attempts_per_order()
        if locked.expires_at <= now or not push_fits(order=locked, now=now):
            raise PaymentNotAllowed(_("Os produtos desta encomenda já não estão reservados. Faça uma nova encomenda."))
        try:
            inventory.reservations_reacquire(order=locked, until=locked.expires_at)
        except OutOfStock as exc:
            raise PaymentNotAllowed(
                ngettext(
                    "Entretanto o produto %(names)s esgotou: esta encomenda já não pode ser paga e nada foi "
                    "enviado para o telemóvel. Faça uma nova encomenda com o que ainda há.",
                    "Entretanto os produtos %(names)s esgotaram: esta encomenda já não pode ser paga e nada foi "
                    "enviado para o telemóvel. Faça uma nova encomenda com o que ainda há.",
                    len(exc.names),
                )
                % {"names": ", ".join(f"«{name}»" for name in exc.names)}
            ) from exc
        if not hold_for_push(order=locked, now=now):
            raise PaymentNotAllowed(_("Os produtos desta encomenda já não estão reservados. Faça uma nova encomenda."))
        try:
            with transaction.atomic():
                attempt = attempt_create(order=locked, msisdn=number, replaces=after_attempt_id, now=now)
        except IntegrityError:  # one is in flight after all (constraint one_attempt_in_flight_per_order)
            return PaymentAttempt.objects.get(order_id=locked.pk, state__in=PaymentAttempt.IN_FLIGHT), False
        payment_status_follow(order=locked, attempt=attempt)
    return attempt, True


# --- pushing (worker) --------------------------------------------------------------------------------------
def payment_attempt_claim_push(*, attempt_id: int) -> PushJob | None:
    """QUEUED → PUSHING with a conditional UPDATE; the job to push if this caller won, else ``None``.

    An attempt queued more than ``QUEUED_SEND_LIMIT`` (30 s) ago is not claimed: the customer has moved on, and the
    sweep closes it as NOT_SENT so the page offers "try again". Sets the push deadline and a safety check (for a
    worker that dies mid-push) after the longest the C2B call may take, bounded by push deadline + margin. No lock
    beyond the UPDATE. Everything the push needs is read *before* the claim: once the claim has committed, nothing
    may stand between it and the push (the database going away there would leave the attempt claimed and never
    sent, found only by the safety check, and closed unconfirmed after the deadline).
    """
    attempt = PaymentAttempt.objects.select_related("order").filter(pk=attempt_id, state=State.QUEUED).first()
    if attempt is None:
        return None
    now = timezone.now()
    won = attempt_claim_push(
        attempt_id=attempt_id,
        fresh_since=now - conf.QUEUED_SEND_LIMIT,
        push_started_at=now,
        push_deadline=now + conf.push_window(),
        # If this worker dies mid-push, ask after the longest the call may take, but never after the decision is due.
        next_check_at=now
        + min(conf.c2b_read_timeout() + conf.PUSH_RESULT_SLACK, conf.push_window() + conf.reconcile_margin()),
    )
    if not won:
        return None
    return PushJob(
        attempt_id=attempt.pk,
        amount=attempt.amount,
        msisdn=attempt.msisdn,
        transaction_reference=attempt.order.short_reference,
        third_party_reference=attempt.third_party_reference,
    )


def payment_attempt_record_push_answer(*, attempt_id: int, result: Result) -> PaymentAttempt:
    """Record the gateway's answer to a push in ONE transaction holding Order (1) then the attempt (2): the
    RESPONSE event always, then what :func:`~kulipa.payments.decisions.decide_push_answer` says. Idempotent: an
    answer arriving after the reconciler settled the attempt changes nothing (a sync success still pays: late
    money is real). Returns the attempt; its ``next_check_at`` says when to ask the gateway next.
    """
    now = timezone.now()
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        event_record(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.RESPONSE,
            summary=f"C2B {attempt.third_party_reference}: {result.outcome.value} {result.code or ''}".strip(),
            payload={**result_payload(result), "msisdn": attempt.msisdn},
        )
        if result.conversation_id and not attempt.conversation_id:
            PaymentAttempt.objects.filter(pk=attempt.pk).update(conversation_id=result.conversation_id[:64])
            attempt.conversation_id = result.conversation_id[:64]
        step = decide_push_answer(
            state=attempt.state,
            mode=attempt.mode,
            outcome=result.outcome,
            code=result.code,
            sent=result.sent,
            clock=attempt_clock(attempt, now=now),
        )
        apply_step(
            order=order,
            attempt=attempt,
            step=step,
            now=now,
            code=result.code or "",
            description=result.description or result.error or "",
            transaction_id=result.transaction_id,
            source="c2b_response",
        )
    logger.info("attempt %s → %s (%s)", attempt.third_party_reference, attempt.state, result.code)
    return attempt


def payment_attempts_close_stale_queued(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Attempts still QUEUED ``QUEUED_SEND_LIMIT`` after they were asked for → NOT_SENT (no money can have moved:
    only the caller that won QUEUED → PUSHING ever sends). The customer is offered "try again". Locks 1 → 2."""
    now = now or timezone.now()
    stale = list(
        PaymentAttempt.objects.filter(state=State.QUEUED, created_at__lt=now - conf.QUEUED_SEND_LIMIT).values_list(
            "id", flat=True
        )[:limit]
    )
    closed = 0
    for attempt_id in stale:
        with transaction.atomic():
            order, attempt = locks.order_and_attempt_lock(attempt_id)
            if attempt.state != State.QUEUED:
                continue
            apply_step(
                order=order,
                attempt=attempt,
                step=Step(Act.MOVE, to=State.NOT_SENT, reason="not sent: the queue did not run it in time"),
                now=now,
                code="",
                description="not sent: the queue did not run it in time",
                transaction_id=None,
                source="sweep",
            )
            closed += 1
    return closed
