"""Payment writes: start an attempt, push it, record what came back, reconcile, make an order paid, reverse.

Lock order (docs/concurrency.md): Order (1) → PaymentAttempt (2) → Product, ascending pk (3) → StockReservation (4).
Every function that changes an attempt takes the order row first, then the attempt row, inside one
``transaction.atomic()``, re-reads them and returns without writing when the target state is already reached.
No function holds a lock while talking to M-Pesa: network calls happen between transactions, and the web process
never calls M-Pesa at all (it writes rows and queues huey tasks with ``transaction.on_commit``).

Attempt states::

    QUEUED ──dispatch (conditional UPDATE, only the winner pushes)──► PUSHING
    PUSHING ──sync answer──► SUCCEEDED | DECLINED | INSUFFICIENT_FUNDS | FAILED | UNKNOWN
    PUSHING ──async accepted──► AWAITING_CALLBACK ──callback + confirming query──► final
    UNKNOWN / AWAITING_CALLBACK / stale PUSHING ──status query (backoff)──► SUCCEEDED | DECLINED | FAILED | TIMED_OUT

Money moves only through :func:`order_mark_paid`. An unsigned callback is a hint: it triggers a status query and
changes nothing by itself. A timeout is unknown, never failed, and never a reason to push again.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.inventory import services as inventory
from kulipa.inventory.services import CommitResult
from kulipa.orders.models import Order
from kulipa.payments import gateway
from kulipa.payments.models import CallbackDelivery, PaymentAttempt, PaymentEvent
from mpesa import MpesaError, Outcome, QueryResult, Result, TransactionStatus, mask_msisdn, normalize_msisdn
from mpesa.config import Operation

logger = logging.getLogger(__name__)

State = PaymentAttempt.State
Kind = PaymentEvent.Kind
Reversal = PaymentAttempt.Reversal
OrderStatus = Order.Status
PaymentStatus = Order.PaymentStatus

SYNC = "sync"
ASYNC = "async"

PAYMENT_STATUS_FOR_STATE: dict[str, str] = {
    State.QUEUED: PaymentStatus.PENDING,
    State.PUSHING: PaymentStatus.PENDING,
    State.AWAITING_CALLBACK: PaymentStatus.PENDING,
    State.UNKNOWN: PaymentStatus.VERIFYING,
    State.SUCCEEDED: PaymentStatus.PAID,
    State.DECLINED: PaymentStatus.DECLINED,
    State.INSUFFICIENT_FUNDS: PaymentStatus.INSUFFICIENT_FUNDS,
    State.TIMED_OUT: PaymentStatus.TIMED_OUT,
    State.FAILED: PaymentStatus.FAILED,
}

FINAL_STATE_FOR_OUTCOME: dict[Outcome, str] = {
    Outcome.DECLINED: State.DECLINED,
    Outcome.INSUFFICIENT_FUNDS: State.INSUFFICIENT_FUNDS,
    Outcome.FAILED: State.FAILED,
    Outcome.INVALID_REQUEST: State.FAILED,
    Outcome.AUTH_ERROR: State.FAILED,
}

QUEUED_STUCK_AFTER = timedelta(seconds=60)
"""A QUEUED attempt older than this is dispatched again (dispatch is idempotent)."""
RECONCILE_LEASE = timedelta(seconds=60)
"""How long a reconciler owns an attempt it claimed before another may try."""
PUSH_RESULT_SLACK = timedelta(seconds=30)


def callback_grace() -> timedelta:
    """After the push window, how long to wait for a callback before asking ourselves (``CALLBACK_GRACE_SECONDS``)."""
    return timedelta(seconds=float(_mpesa().get("CALLBACK_GRACE_SECONDS", 10)))


# --- errors ----------------------------------------------------------------------------------------------
class PaymentError(Exception):
    """A payment cannot be started as asked. ``str(error)`` is a translated message for the customer."""


class PaymentNotAllowed(PaymentError):
    """The order is not awaiting payment (paid, expired, cancelled) or its stock is gone."""


class InvalidMsisdn(PaymentError):
    """The number is not a Vodacom M-Pesa number."""


# --- settings --------------------------------------------------------------------------------------------
def _mpesa() -> Mapping[str, Any]:
    conf: Mapping[str, Any] = settings.MPESA
    return conf


def payment_mode() -> str:
    mode = str(_mpesa().get("MODE", SYNC)).lower()
    if mode not in (SYNC, ASYNC):
        raise ImproperlyConfigured(f"MPESA MODE must be 'sync' or 'async', not {mode!r}")
    return mode


def push_window() -> timedelta:
    return timedelta(seconds=float(_mpesa().get("PUSH_WINDOW_SECONDS", 90)))


def reconcile_margin() -> timedelta:
    return timedelta(seconds=float(_mpesa().get("RECONCILE_MARGIN_SECONDS", 300)))


def c2b_read_timeout() -> timedelta:
    return timedelta(seconds=max(gateway.MIN_C2B_READ_TIMEOUT, float(_mpesa().get("C2B_READ_TIMEOUT_SECONDS", 150))))


def reconcile_backoff(check_count: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at 10 min (``RECONCILE_BACKOFF_SECONDS`` / ``RECONCILE_BACKOFF_MAX_SECONDS``)."""
    base = float(_mpesa().get("RECONCILE_BACKOFF_SECONDS", 10))
    cap = float(_mpesa().get("RECONCILE_BACKOFF_MAX_SECONDS", 600))
    return timedelta(seconds=min(cap, base * (2 ** min(check_count, 20))))


# --- helpers ---------------------------------------------------------------------------------------------
_MSISDN_LIKE = re.compile(r"^\+?(258)?8[2-7][0-9]{7}$")
_SECRET_KEYS = {"input_securitycredential", "authorization", "cookie", "input_initiatoridentifier"}


def mask_payload(value: Any, *, key: str = "") -> Any:
    """A copy of ``value`` safe to store or log: MSISDN-looking values masked, credentials dropped."""
    if isinstance(value, Mapping):
        return {str(k): mask_payload(v, key=str(k)) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, list | tuple):
        return [mask_payload(v, key=key) for v in value]
    if isinstance(value, str) and ("msisdn" in key.lower() or _MSISDN_LIKE.fullmatch(value.replace(" ", ""))):
        return mask_msisdn(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def _event(
    *, order_id: int, attempt_id: int | None, kind: str, summary: str, payload: Mapping[str, Any] | None = None
) -> PaymentEvent:
    return PaymentEvent.objects.create(
        order_id=order_id,
        attempt_id=attempt_id,
        kind=kind,
        summary=summary[:300],
        payload=mask_payload(dict(payload or {})),
    )


def _result_payload(result: Result) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "operation": result.operation.value,
        "outcome": result.outcome.value,
        "code": result.code,
        "description": result.description,
        "http_status": result.http_status,
        "conversation_id": result.conversation_id,
        "transaction_id": result.transaction_id,
        "third_party_reference": result.third_party_reference,
        "error": result.error,
        "elapsed": round(result.elapsed, 3),
        "raw": result.raw,
    }
    if isinstance(result, QueryResult):
        payload["transaction_status"] = result.transaction_status.value if result.transaction_status else None
        payload["reversed"] = result.reversed
    return payload


def _lock_order_and_attempt(attempt_id: int) -> tuple[Order, PaymentAttempt]:
    """Locks 1 then 2. Call inside ``transaction.atomic()``.

    ``FOR NO KEY UPDATE`` (PostgreSQL): we never change these rows' keys, and the weaker lock does not conflict
    with the ``FOR KEY SHARE`` that inserting a row referencing them (an event, a callback delivery) takes; with a
    plain ``FOR UPDATE`` such an insert can deadlock against us. (SQLite: ignored; BEGIN IMMEDIATE serialises.)
    """
    order_id = PaymentAttempt.objects.values_list("order_id", flat=True).get(pk=attempt_id)
    order = Order.objects.select_for_update(no_key=True).get(pk=order_id)
    attempt = PaymentAttempt.objects.select_for_update(no_key=True).get(pk=attempt_id)
    return order, attempt


def _is_latest(attempt: PaymentAttempt) -> bool:
    latest = PaymentAttempt.objects.filter(order_id=attempt.order_id).order_by("-id").values_list("id", flat=True)
    return latest.first() == attempt.pk


def _sync_order_payment_status(order: Order, attempt: PaymentAttempt) -> None:
    """``order.payment_status`` follows the latest attempt, and never leaves PAID. Caller holds lock 1."""
    if order.payment_status == PaymentStatus.PAID or not _is_latest(attempt):
        return
    wanted = PAYMENT_STATUS_FOR_STATE[attempt.state]
    if order.payment_status != wanted:
        order.payment_status = wanted
        order.save(update_fields=["payment_status", "updated_at"])


def _schedule_reconcile(attempt_id: int, at: datetime) -> None:
    """After commit, queue a reconcile of this attempt for ``at`` (the periodic sweep is the safety net)."""
    from kulipa.payments import tasks

    def queue() -> None:
        delay = max(0.0, (at - timezone.now()).total_seconds())
        try:
            tasks.reconcile_attempt.schedule(args=(attempt_id,), delay=delay)
        except Exception:  # the queue being down must not undo a recorded payment; the sweep catches up
            logger.exception("could not schedule reconcile of attempt %s", attempt_id)

    transaction.on_commit(queue)


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
    arguments = {
        "amount": attempt.amount,
        "msisdn": attempt.msisdn,
        "transaction_reference": attempt.order.short_reference,
        "third_party_reference": attempt.third_party_reference,
    }

    async def push() -> Result:
        return await gateway.async_client().c2b_payment(**arguments)

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


# --- the one place that makes an order paid --------------------------------------------------------------
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


# --- reconciliation --------------------------------------------------------------------------------------
class ReconcileOutcome(enum.StrEnum):
    PAID = "paid"
    FINAL = "final"
    """Settled as not paid (declined, failed, timed out)."""
    PENDING = "pending"
    """Still not known; checked again later."""
    NOT_DUE = "not_due"
    ALREADY_FINAL = "already_final"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class CallbackHint:
    """What an (unsigned) callback claimed. Never trusted for money; used for the failure reason and the
    transaction id once a status query confirmed the payment."""

    result_code: str
    transaction_id: str | None
    conversation_id: str | None
    delivery_id: int | None = None
    authenticated: bool = False
    """The delivery came through the secret path token or from an allow-listed IP. Only then is its
    TransactionID recorded on the attempt (a reversal needs it; a forged one could point at someone else's
    payment). Otherwise it stays in the CALLBACK event only."""


def callbacks_authenticated() -> bool:
    """Whether callbacks are authenticated by configuration (``CALLBACK_PATH_TOKEN`` or ``CALLBACK_ALLOWED_IPS``)."""
    conf = _mpesa()
    return bool(conf.get("CALLBACK_PATH_TOKEN")) or bool(conf.get("CALLBACK_ALLOWED_IPS"))


def _final_deadline(attempt: PaymentAttempt) -> datetime:
    start = attempt.push_deadline or (attempt.push_started_at or attempt.created_at) + push_window()
    return start + reconcile_margin()


def _failure_state(code: str | None) -> str:
    from mpesa import outcome_for

    if not code:
        return State.FAILED
    return FINAL_STATE_FOR_OUTCOME.get(outcome_for(code), State.FAILED)


def attempt_reconcile(
    *, attempt_id: int, force: bool = False, hint: CallbackHint | None = None, source: str = "status_query"
) -> ReconcileOutcome:
    """Ask the gateway what happened to an attempt (``input_QueryReference`` = its ThirdPartyReference, with a
    fresh reference for the query itself), write a STATUS_QUERY event and act on the answer:

    * Completed → :func:`order_mark_paid` (also for an attempt already settled as failed: late money is real);
    * Cancelled → final DECLINED / INSUFFICIENT_FUNDS / FAILED (reason from the push's or the callback's code);
    * Expired → TIMED_OUT;
    * N/A (not found or still waiting) → pending while within push deadline + margin, FAILED after that (never a
      second push); a query that itself fails → back off (``next_check_at``, ``check_count``).

    Without ``force`` the call first claims the attempt (conditional UPDATE on ``next_check_at``), so concurrent
    reconcilers do not query twice; ``force`` (callbacks, admin "recheck") skips the claim and may query a settled
    attempt, in which case only Completed changes anything. No lock is held during the query; the answer is
    applied under Order (1) → attempt (2) locks.
    """
    now = timezone.now()
    attempt = PaymentAttempt.objects.filter(pk=attempt_id).first()
    if attempt is None:
        return ReconcileOutcome.UNCHANGED
    if attempt.state == State.SUCCEEDED:
        return ReconcileOutcome.ALREADY_FINAL
    if attempt.state == State.QUEUED:
        return ReconcileOutcome.NOT_DUE  # never sent: the sweep dispatches it
    if not force:
        if not attempt.in_flight:
            return ReconcileOutcome.ALREADY_FINAL
        claimed = (
            PaymentAttempt.objects.filter(pk=attempt_id, state__in=PaymentAttempt.IN_FLIGHT)
            .filter(Q(next_check_at__lte=now) | Q(next_check_at__isnull=True))
            .update(next_check_at=now + RECONCILE_LEASE)
        )
        if not claimed:
            return ReconcileOutcome.NOT_DUE
    query_reference = gateway.new_reference("Q")
    try:
        result = gateway.client().query_transaction_status(
            query_reference=attempt.third_party_reference, third_party_reference=query_reference
        )
    except (MpesaError, ImproperlyConfigured) as exc:
        result = QueryResult(operation=Operation.QUERY, outcome=Outcome.UNKNOWN, error=f"{type(exc).__name__}: {exc}")
    return _apply_query(attempt_id=attempt_id, result=result, hint=hint, source=source)


def _apply_query(*, attempt_id: int, result: QueryResult, hint: CallbackHint | None, source: str) -> ReconcileOutcome:
    now = timezone.now()
    status = result.transaction_status if result.outcome is Outcome.SUCCESS else None
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        attempt.check_count += 1
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.STATUS_QUERY,
            summary=f"query {attempt.third_party_reference}: {status.value if status else result.outcome.value}",
            payload={**_result_payload(result), "source": source, "check": attempt.check_count},
        )
        if attempt.state == State.SUCCEEDED:
            attempt.save(update_fields=["check_count", "updated_at"])
            return ReconcileOutcome.ALREADY_FINAL
        if status is TransactionStatus.COMPLETED:
            attempt.save(update_fields=["check_count", "updated_at"])
            paid = order_mark_paid(
                attempt_id=attempt.pk,
                transaction_id=(hint.transaction_id if hint and hint.authenticated else None)
                or attempt.transaction_id
                or None,
                confirmed_amount=attempt.amount,
                source=f"{source}" if hint is None else "callback+status_query",
            )
            return ReconcileOutcome.PAID if paid.changed else ReconcileOutcome.ALREADY_FINAL
        if not attempt.in_flight:
            attempt.save(update_fields=["check_count", "updated_at"])
            return ReconcileOutcome.ALREADY_FINAL
        final: str | None = None
        if status is TransactionStatus.CANCELLED:
            # The reason: the push's own final code if it had one, else what the callback claimed (harmless
            # to believe: either way no money moved, the query said so).
            final = _failure_state(attempt.result_code)
            if final == State.FAILED and hint is not None:
                final = _failure_state(hint.result_code)
        elif status is TransactionStatus.EXPIRED:
            final = State.TIMED_OUT
        elif status in (TransactionStatus.NOT_FOUND, TransactionStatus.OTHER) and now >= _final_deadline(attempt):
            final = State.FAILED
            attempt.result_description = "not found by status query after the push deadline and margin"
        if final is not None:
            attempt.state = final
            attempt.finished_at = now
            attempt.next_check_at = None
            if hint is not None and hint.result_code and not attempt.result_code:
                attempt.result_code = hint.result_code[:16]
            attempt.save()
            _sync_order_payment_status(order, attempt)
            outcome = ReconcileOutcome.FINAL
        else:
            if attempt.state == State.PUSHING and now < (attempt.push_deadline or now):
                # The worker is still holding the push: look again when its window has closed.
                attempt.next_check_at = (attempt.push_deadline or now) + callback_grace()
            else:
                attempt.next_check_at = now + reconcile_backoff(attempt.check_count - 1)
                if attempt.state == State.PUSHING and now >= (attempt.push_deadline or now):
                    # The worker went quiet past the window (died?): treat as unknown from now on.
                    attempt.state = State.UNKNOWN
            attempt.save()
            _sync_order_payment_status(order, attempt)
            _schedule_reconcile(attempt.pk, attempt.next_check_at)
            outcome = ReconcileOutcome.PENDING
    logger.info("reconciled %s: %s → %s", attempt.third_party_reference, status, attempt.state)
    return outcome


def payments_sweep(*, now: datetime | None = None, limit: int = 1000) -> dict[str, int]:
    """The periodic safety net (every minute): queue a reconcile for every attempt whose check is due (UNKNOWN,
    AWAITING_CALLBACK past its deadline, PUSHING past the longest push), re-dispatch QUEUED attempts that got
    stuck (or fail them once their window is long gone: they were never sent). Idempotent; takes no locks itself.
    """
    from kulipa.payments import tasks

    now = now or timezone.now()
    due = list(
        PaymentAttempt.objects.filter(
            state__in=[State.PUSHING, State.AWAITING_CALLBACK, State.UNKNOWN], next_check_at__lte=now
        )
        .order_by("next_check_at")
        .values_list("id", flat=True)[:limit]
    )
    for attempt_id in due:
        tasks.reconcile_attempt(attempt_id)
    stuck = list(
        PaymentAttempt.objects.filter(state=State.QUEUED, created_at__lte=now - QUEUED_STUCK_AFTER).values_list(
            "id", "created_at"
        )[:limit]
    )
    redispatched = abandoned = 0
    for attempt_id, created_at in stuck:
        if created_at + push_window() + QUEUED_STUCK_AFTER > now:
            tasks.dispatch_payment(attempt_id)
            redispatched += 1
        elif payment_attempt_abandon_queued(attempt_id=attempt_id):
            abandoned += 1
    return {"reconcile": len(due), "redispatched": redispatched, "abandoned": abandoned}


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


# --- callbacks -------------------------------------------------------------------------------------------
_CALLBACK_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_CALLBACK_CODE = re.compile(r"^[A-Za-z0-9_\-]{1,16}$")
MAX_CALLBACK_BYTES = 64 * 1024
_DROPPED_HEADERS = {"cookie", "authorization", "proxy-authorization"}


class CallbackRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CallbackReceipt:
    status: int
    body: dict[str, str]
    delivery_id: int


def _callback_fields(body: bytes) -> dict[str, str]:
    """The fields of a result delivery (reference §5.2), checked. Raises ``CallbackRejected(400)``."""
    import json

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CallbackRejected(400, "malformed: body is not JSON") from None
    if not isinstance(data, dict):
        raise CallbackRejected(400, "malformed: body is not a JSON object")
    fields: dict[str, str] = {}
    for name in (
        "input_OriginalConversationID",
        "input_ThirdPartyReference",
        "input_ThirdPartyConversationID",
        "input_TransactionID",
        "input_ResultCode",
        "input_ResultDesc",
    ):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise CallbackRejected(400, f"malformed: {name} is not a string")
        fields[name] = value.strip()
    if "input_ThirdPartyReference" not in fields and "input_ThirdPartyConversationID" in fields:
        fields["input_ThirdPartyReference"] = fields["input_ThirdPartyConversationID"]
    code = fields.get("input_ResultCode", "")
    if not _CALLBACK_CODE.fullmatch(code):
        raise CallbackRejected(400, "malformed: input_ResultCode missing or invalid")
    reference = fields.get("input_ThirdPartyReference", "")
    conversation = fields.get("input_OriginalConversationID", "")
    if not reference and not conversation:
        raise CallbackRejected(400, "malformed: no ThirdPartyReference or OriginalConversationID")
    for value in (reference, conversation, fields.get("input_TransactionID", "")):
        if value and not _CALLBACK_ID.fullmatch(value):
            raise CallbackRejected(400, "malformed: an identifier has unexpected characters")
    return fields


def _find_attempt(fields: Mapping[str, str]) -> PaymentAttempt:
    reference = fields.get("input_ThirdPartyReference", "")
    conversation = fields.get("input_OriginalConversationID", "")
    attempt = None
    if reference:
        attempt = PaymentAttempt.objects.filter(third_party_reference=reference).first()
    if attempt is None and conversation:
        attempt = PaymentAttempt.objects.filter(conversation_id=conversation).first()
    if attempt is None:
        raise CallbackRejected(404, "unknown reference")
    if conversation and attempt.conversation_id and attempt.conversation_id != conversation:
        raise CallbackRejected(400, "reference and conversation id belong to different payments")
    return attempt


def callback_receive(*, headers: Mapping[str, str], body: bytes, remote_ip: str | None) -> CallbackReceipt:
    """An inbound result delivery. Stores it raw FIRST, in its own transaction, then checks it:

    * malformed body → 400; no attempt with that ThirdPartyReference/OriginalConversationID → 404; in both cases
      the delivery is kept (outcome says why) and nothing else happens;
    * otherwise the acknowledgement of reference §5.2 (200) and ``process_callback`` is queued, which confirms by
      status query before any change.

    Takes no payment locks. Headers are stored without cookies or authorization.
    """
    safe_headers = {k: v[:1000] for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS}
    with transaction.atomic():
        delivery = CallbackDelivery.objects.create(
            remote_ip=remote_ip,
            headers=safe_headers,
            body=body[:MAX_CALLBACK_BYTES].decode("utf-8", "replace"),
        )
    try:
        if len(body) > MAX_CALLBACK_BYTES:
            raise CallbackRejected(413, "malformed: body too large")
        fields = _callback_fields(body)
        attempt = _find_attempt(fields)
    except CallbackRejected as rejected:
        CallbackDelivery.objects.filter(pk=delivery.pk).update(
            processed_at=timezone.now(),
            outcome="malformed" if rejected.status in (400, 413) else "unknown_reference",
            error=rejected.reason,
        )
        logger.warning("callback %s rejected (%s): %s", delivery.pk, rejected.status, rejected.reason)
        return CallbackReceipt(
            status=rejected.status,
            body={
                "output_ResponseCode": "INS-21" if rejected.status != 404 else "INS-19",
                "output_ResponseDesc": rejected.reason,
            },
            delivery_id=delivery.pk,
        )
    CallbackDelivery.objects.filter(pk=delivery.pk).update(attempt=attempt, outcome="queued")
    delivery_id = delivery.pk

    def queue() -> None:
        from kulipa.payments import tasks

        try:
            tasks.process_callback(delivery_id)
        except Exception:  # the attempt's own reconciliation still settles it
            logger.exception("could not queue processing of callback %s", delivery_id)

    transaction.on_commit(queue)
    logger.info(
        "callback %s for %s: %s (queued for confirmation)",
        delivery.pk,
        attempt.third_party_reference,
        fields.get("input_ResultCode"),
    )
    return CallbackReceipt(
        status=200,
        body={
            "output_OriginalConversationID": fields.get("input_OriginalConversationID", ""),
            "output_ResponseCode": "0",
            "output_ResponseDesc": "Successfully Accepted Result",
            "output_ThirdPartyConversationID": fields.get("input_ThirdPartyReference", ""),
            "output_ThirdPartyReference": fields.get("input_ThirdPartyReference", ""),
        },
        delivery_id=delivery.pk,
    )


def callback_process(*, delivery_id: int) -> str:
    """Worker side of a callback: claim the delivery (conditional UPDATE ``queued → processing``), log a CALLBACK
    event, then confirm with a status query (:func:`attempt_reconcile` with ``force``). Returns the outcome stored
    on the delivery. Duplicates are harmless: each confirms, and :func:`order_mark_paid` changes nothing twice.
    """
    claimed = CallbackDelivery.objects.filter(pk=delivery_id, outcome="queued", processed_at__isnull=True).update(
        outcome="processing"
    )
    if not claimed:
        return "not_claimed"
    delivery = CallbackDelivery.objects.get(pk=delivery_id)
    try:
        fields = _callback_fields(delivery.body.encode("utf-8"))
        assert delivery.attempt_id is not None
        attempt = PaymentAttempt.objects.get(pk=delivery.attempt_id)
        hint = CallbackHint(
            result_code=fields.get("input_ResultCode", ""),
            transaction_id=fields.get("input_TransactionID") or None,
            conversation_id=fields.get("input_OriginalConversationID") or None,
            delivery_id=delivery_id,
            authenticated=callbacks_authenticated(),
        )
        with transaction.atomic():  # lock order (1) → attempt (2) first: the insert must not wait out of order
            _lock_order_and_attempt(attempt.pk)
            _event(
                order_id=attempt.order_id,
                attempt_id=attempt.pk,
                kind=Kind.CALLBACK,
                summary=f"callback {attempt.third_party_reference}: {hint.result_code} (unconfirmed)",
                payload={"delivery_id": delivery_id, "fields": fields, "remote_ip": delivery.remote_ip},
            )
        outcome = attempt_reconcile(attempt_id=attempt.pk, force=True, hint=hint, source="callback").value
        error = ""
    except Exception as exc:
        logger.exception("processing callback %s failed", delivery_id)
        outcome, error = "error", f"{type(exc).__name__}: {exc}"[:2000]
    CallbackDelivery.objects.filter(pk=delivery_id).update(
        processed_at=timezone.now() if outcome != "error" else None, outcome=outcome, error=error
    )
    return outcome


# --- reversal --------------------------------------------------------------------------------------------
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
            note = _("Pagamento %(tid)s revertido (%(rid)s).") % {
                "tid": attempt.transaction_id,
                "rid": attempt.reversal_transaction_id or attempt.reversal_reference,
            }
            order.attention_reason = "\n".join(r for r in [order.attention_reason, note] if r)
            if attempt.transaction_id == order.mpesa_transaction_id:
                order.status = OrderStatus.CANCELLED
                inventory.reservations_release(order=order)
            order.save(update_fields=["attention_reason", "status", "updated_at"])
    logger.info("reversal %s of %s: %s", attempt.reversal_reference, attempt.transaction_id, attempt.reversal_state)
    return attempt


def payment_reversal_reconcile(*, attempt_id: int) -> PaymentAttempt:
    """A reversal whose answer was lost (UNKNOWN): ask by its own reference; Completed → DONE. Never resent."""
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    if attempt.reversal_state != Reversal.UNKNOWN or not attempt.reversal_reference:
        return attempt
    result = gateway.client().query_transaction_status(
        query_reference=attempt.reversal_reference, third_party_reference=gateway.new_reference("Q")
    )
    with transaction.atomic():
        order, attempt = _lock_order_and_attempt(attempt_id)
        _event(
            order_id=order.pk,
            attempt_id=attempt.pk,
            kind=Kind.STATUS_QUERY,
            summary=f"reversal query {attempt.reversal_reference}: {result.transaction_status}",
            payload=_result_payload(result),
        )
        if attempt.reversal_state == Reversal.UNKNOWN and result.transaction_status is TransactionStatus.COMPLETED:
            attempt.reversal_state = Reversal.DONE
            attempt.reversed_at = timezone.now()
            attempt.save()
    return attempt


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
