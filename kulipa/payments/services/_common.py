"""Shared by the payment services: settings accessors, constants, the event log writer, the order → attempt lock,
``order.payment_status`` syncing and reconcile scheduling. Private to ``kulipa.payments.services``."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from kulipa.orders.models import Order
from kulipa.payments import gateway
from kulipa.payments.conf import mpesa_conf, mpesa_float
from kulipa.payments.models import PaymentAttempt, PaymentEvent
from mpesa import Outcome, QueryResult, Result, mask_msisdn

# One logger for the whole package, under the name the single module had (log lines keep their logger name).
logger = logging.getLogger("kulipa.payments.services")

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


# --- settings --------------------------------------------------------------------------------------------
def payment_mode() -> str:
    mode = str(mpesa_conf().get("MODE", SYNC)).lower()
    if mode not in (SYNC, ASYNC):
        raise ImproperlyConfigured(f"MPESA MODE must be 'sync' or 'async', not {mode!r}")
    return mode


def push_window() -> timedelta:
    return timedelta(seconds=mpesa_float("PUSH_WINDOW_SECONDS", 90))


def reconcile_margin() -> timedelta:
    return timedelta(seconds=mpesa_float("RECONCILE_MARGIN_SECONDS", 300))


def c2b_read_timeout() -> timedelta:
    return timedelta(seconds=max(gateway.MIN_C2B_READ_TIMEOUT, mpesa_float("C2B_READ_TIMEOUT_SECONDS", 150)))


def reconcile_backoff(check_count: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at 10 min (``RECONCILE_BACKOFF_SECONDS`` / ``RECONCILE_BACKOFF_MAX_SECONDS``)."""
    base = mpesa_float("RECONCILE_BACKOFF_SECONDS", 10)
    cap = mpesa_float("RECONCILE_BACKOFF_MAX_SECONDS", 600)
    return timedelta(seconds=min(cap, base * (2 ** min(check_count, 20))))


def callback_grace() -> timedelta:
    """After the push window, how long to wait for a callback before asking ourselves (``CALLBACK_GRACE_SECONDS``)."""
    return timedelta(seconds=mpesa_float("CALLBACK_GRACE_SECONDS", 10))


def callbacks_authenticated() -> bool:
    """Whether callbacks are authenticated by configuration (``CALLBACK_PATH_TOKEN`` or ``CALLBACK_ALLOWED_IPS``)."""
    conf = mpesa_conf()
    return bool(conf.get("CALLBACK_PATH_TOKEN")) or bool(conf.get("CALLBACK_ALLOWED_IPS"))


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
