"""Attempts: start one (web, no network), claim and dispatch its push (worker), record the push answer, and fail a
QUEUED attempt that was never sent."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.inventory import services as inventory
from kulipa.orders.models import Order
from kulipa.payments import gateway
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services._common import (
    ASYNC,
    FINAL_STATE_FOR_OUTCOME,
    PUSH_RESULT_SLACK,
    Kind,
    OrderStatus,
    PaymentStatus,
    State,
    _event,
    _lock_order_and_attempt,
    _result_payload,
    _schedule_reconcile,
    _sync_order_payment_status,
    c2b_read_timeout,
    callback_grace,
    logger,
    payment_mode,
    push_window,
    reconcile_backoff,
    reconcile_margin,
)
from kulipa.payments.services.errors import InvalidMsisdn, PaymentNotAllowed
from kulipa.payments.services.paid import order_mark_paid
from mpesa import MpesaError, Outcome, Result, mask_msisdn, normalize_msisdn
from mpesa.config import Operation


# --- starting an attempt ---------------------------------------------------------------------------------
def payment_attempt_start(
    *, order: Order, msisdn: str | None = None, after_attempt_id: int | None = None
) -> PaymentAttempt:
    """Create a QUEUED attempt for ``order`` and queue its push. No network call.

    * ``msisdn``: the number to push to (any form the library's ``normalize_msisdn`` accepts); default: the
      number of the order's latest attempt, else the order's. Raises :class:`InvalidMsisdn` for a number that
      cannot pay with M-Pesa.
    * ``after_attempt_id``: the attempt this one replaces ("try again" names the failed attempt the page showed).
      Idempotent: when the order's latest attempt is not ``after_attempt_id`` (``None``: when the order has any
      attempt at all, as after a double-submitted checkout) nothing is created and the latest attempt is returned.
      So a double click yields one attempt.
    * While an attempt is in flight, it is returned (partial unique constraint ``one_attempt_in_flight_per_order``;
      the ``IntegrityError`` is caught).

    Raises :class:`PaymentNotAllowed` when the order does not await payment or its reserved stock is gone.
    The ThirdPartyReference is random ("K" + 15 characters) and stored before anything is sent. Reservations are
    extended to cover the push window plus the reconciliation margin. Locks: Order (1), then the new attempt (2),
    then products/reservations (3, 4) via ``reservations_extend``.
    """
    if not msisdn:
        last = PaymentAttempt.objects.filter(order_id=order.pk).order_by("-id").values_list("msisdn", flat=True)
        msisdn = last.first() or order.msisdn
    try:
        number = normalize_msisdn(msisdn)
    except MpesaError as exc:
        raise InvalidMsisdn(_("Número M-Pesa inválido: use um número Vodacom (84 ou 85) com 9 dígitos.")) from exc
    mode = payment_mode()
    with transaction.atomic():
        locked = Order.objects.select_for_update(no_key=True).get(pk=order.pk)
        if locked.status != OrderStatus.AWAITING_PAYMENT:
            raise PaymentNotAllowed(_("Esta encomenda já não aguarda pagamento."))
        latest = PaymentAttempt.objects.filter(order_id=locked.pk).order_by("-id").first()
        if latest is not None and latest.pk != after_attempt_id:
            return latest
        now = timezone.now()
        try:
            with transaction.atomic():
                attempt = PaymentAttempt.objects.create(
                    order=locked,
                    third_party_reference=gateway.new_reference("K"),
                    msisdn=number,
                    amount=locked.total,
                    mode=mode,
                )
        except IntegrityError:
            in_flight = PaymentAttempt.objects.filter(order_id=locked.pk, state__in=PaymentAttempt.IN_FLIGHT).first()
            if in_flight is not None:
                return in_flight
            raise
        until = now + push_window() + reconcile_margin() + PUSH_RESULT_SLACK
        if not inventory.reservations_extend(order=locked, until=until):
            raise PaymentNotAllowed(_("Os produtos desta encomenda já não estão disponíveis."))
        _event(
            order_id=locked.pk,
            attempt_id=attempt.pk,
            kind=Kind.REQUEST,
            summary=f"C2B {attempt.third_party_reference} {attempt.amount} MZN to {mask_msisdn(number)} ({mode})",
            payload={
                "third_party_reference": attempt.third_party_reference,
                "transaction_reference": locked.short_reference,
                "amount": str(attempt.amount),
                "msisdn": number,
                "mode": mode,
                "replaces_attempt": after_attempt_id,
            },
        )
        Order.objects.filter(pk=locked.pk).exclude(payment_status=PaymentStatus.PAID).update(
            payment_status=PaymentStatus.PENDING, updated_at=now
        )
        attempt_id = attempt.pk
        transaction.on_commit(lambda: _queue_dispatch(attempt_id))
    logger.info(
        "attempt %s queued for order %s (%s, %s)", attempt.third_party_reference, locked.pk, mask_msisdn(number), mode
    )
    return attempt


def _queue_dispatch(attempt_id: int) -> None:
    from kulipa.payments import tasks

    try:
        tasks.dispatch_payment(attempt_id)
    except Exception:  # queue down: the attempt stays QUEUED and the sweep dispatches it again
        logger.exception("could not queue dispatch of attempt %s", attempt_id)


# --- dispatch (worker) -----------------------------------------------------------------------------------
def payment_attempt_claim_push(*, attempt_id: int) -> PaymentAttempt | None:
    """QUEUED → PUSHING with a conditional UPDATE; the attempt if this caller won (and must push), else ``None``.

    No lock is held beyond the single UPDATE. Sets the push deadline (push start + window) and a safety check time
    after the longest the C2B call may take, for the case where this worker dies mid-push.
    """
    now = timezone.now()
    won = PaymentAttempt.objects.filter(pk=attempt_id, state=State.QUEUED).update(
        state=State.PUSHING,
        push_started_at=now,
        push_deadline=now + push_window(),
        next_check_at=now + c2b_read_timeout() + PUSH_RESULT_SLACK,
        updated_at=now,
    )
    if not won:
        return None
    return PaymentAttempt.objects.select_related("order").get(pk=attempt_id)


def payment_attempt_dispatch(*, attempt_id: int) -> bool:
    """Worker side of a push: win ``queued → pushing`` and hand the C2B to the push engine. Returns whether this
    call sent it (``False``: someone else did, or the attempt is no longer queued; an attempt is pushed once).

    Returns at once; the engine records the answer through :func:`payment_attempt_record_push_result`.
    """
    from kulipa.payments.push_engine import get_engine

    attempt = payment_attempt_claim_push(attempt_id=attempt_id)
    if attempt is None:
        logger.info("attempt %s not queued any more; not pushing", attempt_id)
        return False
    # Read now, in this thread: the push runs on the engine's loop and must not touch the ORM.
    amount, msisdn = attempt.amount, attempt.msisdn
    transaction_reference, third_party_reference = attempt.order.short_reference, attempt.third_party_reference

    async def push() -> Result:
        return await gateway.async_client().c2b_payment(
            amount=amount,
            msisdn=msisdn,
            transaction_reference=transaction_reference,
            third_party_reference=third_party_reference,
        )

    def record(result: Result) -> None:
        payment_attempt_record_push_result_retrying(attempt_id=attempt_id, result=result)

    def failed(exc: BaseException) -> None:
        payment_attempt_record_push_result_retrying(attempt_id=attempt_id, result=_result_from_exception(exc))

    get_engine().submit(push, record, on_error=failed, label=attempt.third_party_reference)
    logger.info("attempt %s pushing to %s", attempt.third_party_reference, mask_msisdn(attempt.msisdn))
    return True


def _result_from_exception(exc: BaseException) -> Result:
    """An exception instead of an answer. Raised before sending (bad config or arguments): the push never left,
    so it failed. Anything else may have been sent: unknown."""
    sent = not isinstance(exc, MpesaError | ImproperlyConfigured)
    return Result(
        operation=Operation.C2B,
        outcome=Outcome.UNKNOWN if sent else Outcome.INVALID_REQUEST,
        description="exception while pushing" if sent else "refused before sending",
        error=f"{type(exc).__name__}: {exc}"[:500],
    )


def payment_attempt_record_push_result_retrying(*, attempt_id: int, result: Result, tries: int = 5) -> None:
    """:func:`payment_attempt_record_push_result`, retried on database errors (a busy SQLite, a failover).

    If every try fails the attempt stays PUSHING and the reconciler settles it by status query.
    """
    import time

    from django.db import DatabaseError, close_old_connections

    for n in range(tries):
        try:
            payment_attempt_record_push_result(attempt_id=attempt_id, result=result)
            return
        except DatabaseError:
            logger.exception("recording push result of attempt %s failed (try %s)", attempt_id, n + 1)
            close_old_connections()
            time.sleep(0.2 * 2**n)


def payment_attempt_record_push_result(*, attempt_id: int, result: Result) -> PaymentAttempt:
    """Record the gateway's answer to a push, in ONE transaction holding Order (1) then the attempt (2).

    Writes the RESPONSE event (raw payload, MSISDN masked) always. A sync success goes through
    :func:`order_mark_paid`, whatever state the attempt is in by now (late money is real). Any other answer only
    changes an attempt that is still PUSHING (the reconciler may have settled it first): idempotent.

    * sync success → SUCCEEDED (order paid); declined / insufficient funds / failed / invalid → final state
    * unknown (timeout, dropped connection, INS-9, INS-1, INS-16, 5xx) → UNKNOWN, reconciliation scheduled
    * async mode, accepted → AWAITING_CALLBACK until the push deadline, then reconciled by query
    """
    now = timezone.now()
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.RESPONSE,
            summary=f"C2B {attempt.third_party_reference}: {result.outcome.value} {result.code or ''}".strip(),
            payload={**_result_payload(result), "msisdn": attempt.msisdn},
        )
        if result.conversation_id and not attempt.conversation_id:
            attempt.conversation_id = result.conversation_id[:64]
        is_async = attempt.mode == ASYNC
        if result.outcome is Outcome.SUCCESS and not is_async:
            attempt.result_code = result.code or "INS-0"
            attempt.result_description = result.description[:300]
            attempt.save(update_fields=["conversation_id", "result_code", "result_description", "updated_at"])
            order_mark_paid(
                attempt_id=attempt.pk,
                transaction_id=result.transaction_id,
                confirmed_amount=attempt.amount,
                source="c2b_response",
            )
            attempt.refresh_from_db()
            return attempt
        if attempt.state != State.PUSHING:
            attempt.save(update_fields=["conversation_id", "updated_at"])
            logger.info("attempt %s already %s; push answer only logged", attempt.third_party_reference, attempt.state)
            return attempt
        attempt.result_code = result.code or ""
        attempt.result_description = (result.description or result.error or "")[:300]
        deadline = attempt.push_deadline or now
        if result.outcome is Outcome.SUCCESS:  # async: accepted, the result comes by callback
            attempt.state = State.AWAITING_CALLBACK
            attempt.next_check_at = max(deadline, now) + callback_grace()
        elif result.outcome is Outcome.UNKNOWN:
            attempt.state = State.UNKNOWN
            # INS-9: the push window closed; the gateway already knows the final status.
            attempt.next_check_at = now + (timedelta(seconds=1) if result.code == "INS-9" else reconcile_backoff(0))
        else:
            attempt.state = FINAL_STATE_FOR_OUTCOME[result.outcome]
            attempt.finished_at = now
            attempt.next_check_at = None
            if result.outcome is Outcome.AUTH_ERROR:
                logger.error("M-Pesa refused our credentials (%s): check MPESA_API_KEY/PUBLIC_KEY", result.code)
        attempt.save()
        _sync_order_payment_status(order, attempt)
        if attempt.next_check_at is not None:
            _schedule_reconcile(attempt.pk, attempt.next_check_at)
    logger.info("attempt %s → %s (%s)", attempt.third_party_reference, attempt.state, result.code)
    return attempt


def payment_attempt_abandon_queued(*, attempt_id: int) -> bool:
    """A QUEUED attempt whose window passed without being sent → FAILED (no money can have moved: only a caller
    that won queued → pushing ever sends). Locks Order (1) → attempt (2); conditional on QUEUED."""
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        if attempt.state != State.QUEUED:
            return False
        attempt.state = State.FAILED
        attempt.result_description = "never sent: the queue did not run it in time"
        attempt.finished_at = timezone.now()
        attempt.save()
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.DECISION,
            summary=f"{attempt.third_party_reference} abandoned: never sent",
            payload={"decision": "abandoned"},
        )
        _sync_order_payment_status(order, attempt)
    return True
