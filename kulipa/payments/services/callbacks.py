"""Callbacks: store an inbound result delivery and acknowledge it (web), then confirm it by status query
(worker). A callback is a hint; it changes nothing by itself."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from kulipa.core import locks
from kulipa.payments import conf
from kulipa.payments.events import Kind, event_record
from kulipa.payments.models import (
    REJECTED_BODY_BYTES,
    AttentionItem,
    CallbackDelivery,
    CallbackRejection,
    PaymentAttempt,
    PaymentEvent,
)
from kulipa.payments.services.attention import attention_raise
from kulipa.payments.services.reconcile import CallbackHint, attempt_reconcile
from kulipa.payments.transitions import delivery_transition

logger = logging.getLogger("kulipa.payments")

D = CallbackDelivery.State

_CALLBACK_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_CALLBACK_CODE = re.compile(r"^[A-Za-z0-9_\-]{1,16}$")
MAX_CALLBACK_BYTES = 64 * 1024
_DROPPED_HEADERS = {"cookie", "authorization", "proxy-authorization"}
_MAX_HEADERS = 40


class CallbackRejected(Exception):
    def __init__(self, status: int, reason: str, *, tally: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.tally = tally
        """Short reason under which the rejection is counted."""


@dataclass(frozen=True, slots=True)
class CallbackReceipt:
    status: int
    body: dict[str, str]
    delivery_id: int


def callback_fields(body: bytes) -> dict[str, str]:
    """The fields of a result delivery (reference §5.2), checked. Raises ``CallbackRejected``; never anything else
    (deeply nested JSON included)."""
    if len(body) > MAX_CALLBACK_BYTES:
        raise CallbackRejected(413, "malformed: body too large", tally="too_large")
    try:
        # UTF-8 only (a BOM is allowed): the delivery is stored as UTF-8 text and the worker parses that text
        # again, so a body json.loads would also take in UTF-16 or with encoded surrogates must be refused here.
        data = json.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise CallbackRejected(400, "malformed: body is not JSON", tally="not_json") from None
    if not isinstance(data, dict):
        raise CallbackRejected(400, "malformed: body is not a JSON object", tally="not_object")
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
            raise CallbackRejected(400, f"malformed: {name} is not a string", tally="bad_field")
        fields[name] = _storable(value).strip()[:300]
    if "input_ThirdPartyReference" not in fields and "input_ThirdPartyConversationID" in fields:
        fields["input_ThirdPartyReference"] = fields["input_ThirdPartyConversationID"]
    code = fields.get("input_ResultCode", "")
    if not _CALLBACK_CODE.fullmatch(code):
        raise CallbackRejected(400, "malformed: input_ResultCode missing or invalid", tally="bad_field")
    reference = fields.get("input_ThirdPartyReference", "")
    conversation = fields.get("input_OriginalConversationID", "")
    if not reference and not conversation:
        raise CallbackRejected(400, "malformed: no ThirdPartyReference or OriginalConversationID", tally="bad_field")
    for value in (reference, conversation, fields.get("input_TransactionID", "")):
        if value and not _CALLBACK_ID.fullmatch(value):
            raise CallbackRejected(400, "malformed: an identifier has unexpected characters", tally="bad_field")
    return fields


def _storable(text: str) -> str:
    """``text`` without NUL characters (as U+FFFD), which PostgreSQL refuses in text and JSON columns."""
    return text.replace("\x00", "\ufffd")


def _find_attempt(fields: Mapping[str, str]) -> PaymentAttempt:
    reference = fields.get("input_ThirdPartyReference", "")
    conversation = fields.get("input_OriginalConversationID", "")
    attempt = None
    if reference:
        attempt = PaymentAttempt.objects.filter(third_party_reference=reference).first()
    if attempt is None and conversation:
        attempt = PaymentAttempt.objects.filter(conversation_id=conversation).first()
    if attempt is None:
        raise CallbackRejected(404, "unknown reference", tally="unknown_reference")
    if conversation and attempt.conversation_id and attempt.conversation_id != conversation:
        raise CallbackRejected(400, "reference and conversation id belong to different payments", tally="mismatch")
    return attempt


def _tally(reason: str, now: datetime) -> None:
    day = timezone.localdate(now)
    if CallbackRejection.objects.filter(day=day, reason=reason).update(count=F("count") + 1):
        return
    try:
        with transaction.atomic():
            CallbackRejection.objects.create(day=day, reason=reason, count=1)
    except IntegrityError:
        CallbackRejection.objects.filter(day=day, reason=reason).update(count=F("count") + 1)


def callback_refuse(*, reason: str) -> None:
    """Count, under ``reason``, a callback refused before its body was read (wrong path token, sender not allowed,
    rate limit). Nothing is stored but the count in ``CallbackRejection``: such requests cannot fill the disk."""
    _tally(reason, timezone.now())


def callback_receive(*, headers: Mapping[str, str], body: bytes, remote_ip: str | None) -> CallbackReceipt:
    """An inbound result delivery: checked, stored, acknowledged. Takes no payment locks.

    * malformed body → 400 (413 when too large); no attempt with that ThirdPartyReference/OriginalConversationID →
      404. The delivery is kept with at most ``REJECTED_BODY_BYTES`` of its body, state REJECTED, and counted in
      ``CallbackRejection``; nothing else happens.
    * otherwise the acknowledgement of reference §5.2 (200) and a QUEUED delivery for the worker
      (``tasks.queue_callback``), which confirms by status query before any change.

    Headers are stored without cookies or authorization.
    """
    now = timezone.now()
    safe_headers = {
        _storable(k[:100]): _storable(v[:500])
        for k, v in list(headers.items())[:_MAX_HEADERS]
        if k.lower() not in _DROPPED_HEADERS
    }
    try:
        fields = callback_fields(body)
        attempt = _find_attempt(fields)
    except CallbackRejected as rejected:
        delivery = CallbackDelivery.objects.create(
            remote_ip=remote_ip,
            headers=safe_headers,
            body=_storable(body[:REJECTED_BODY_BYTES].decode("utf-8", "replace")),
            state=D.REJECTED,
            processed_at=now,
            outcome=rejected.tally,
            error=rejected.reason,
        )
        _tally(rejected.tally, now)
        logger.warning("callback %s rejected (%s): %s", delivery.pk, rejected.status, rejected.reason)
        return CallbackReceipt(
            status=rejected.status,
            body={
                "output_ResponseCode": "INS-21" if rejected.status != 404 else "INS-19",
                "output_ResponseDesc": rejected.reason,
            },
            delivery_id=delivery.pk,
        )
    delivery = CallbackDelivery.objects.create(
        remote_ip=remote_ip,
        headers=safe_headers,
        body=body.decode("utf-8", "replace"),
        attempt=attempt,
        state=D.QUEUED,
    )
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


def _retry_delay(tries: int) -> timedelta:
    return timedelta(seconds=min(3600, 10 * 3 ** max(0, tries - 1)))


def callback_process(*, delivery_id: int) -> str:
    """Worker side of a callback: claim the delivery (QUEUED or due RETRY → PROCESSING, a conditional UPDATE),
    log a CALLBACK event under Order (1) → attempt (2), then confirm with a status query
    (:func:`attempt_reconcile` with ``force``). Returns the reconcile outcome, ``"retry"``, ``"gave_up"`` or
    ``"not_claimed"``. Duplicates are harmless: each confirms, and ``order_mark_paid`` changes nothing twice.

    A failure (database, gateway library) → RETRY with backoff; after ``DELIVERY_MAX_TRIES`` → GAVE_UP and an
    attention item (the attempt's own reconciliation still settles the payment).
    """
    now = timezone.now()
    delivery = CallbackDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.state not in (D.QUEUED, D.RETRY):
        return "not_claimed"
    if delivery.state == D.RETRY and delivery.next_try_at is not None and delivery.next_try_at > now:
        return "not_claimed"
    tries = delivery.tries + 1
    if not delivery_transition(delivery_id=delivery_id, source=delivery.state, to=D.PROCESSING, tries=tries):
        return "not_claimed"
    try:
        fields = callback_fields(delivery.body.encode("utf-8"))
        assert delivery.attempt_id is not None
        hint = CallbackHint(
            result_code=fields.get("input_ResultCode", ""),
            transaction_id=fields.get("input_TransactionID") or None,
            conversation_id=fields.get("input_OriginalConversationID") or None,
            delivery_id=delivery_id,
            authenticated=conf.callbacks_authenticated(),
        )
        with transaction.atomic():
            order, attempt = locks.order_and_attempt_lock(delivery.attempt_id)
            logged = PaymentEvent.objects.filter(
                order_id=order.pk, kind=Kind.CALLBACK, payload__delivery_id=delivery_id
            ).exists()
            if not logged:  # once per delivery, also when an earlier try died before logging it
                event_record(
                    order_id=order.pk,
                    attempt_id=attempt.pk,
                    kind=Kind.CALLBACK,
                    summary=f"callback {attempt.third_party_reference}: {hint.result_code} (unconfirmed)",
                    payload={"delivery_id": delivery_id, "fields": fields, "remote_ip": delivery.remote_ip},
                )
        outcome = attempt_reconcile(attempt_id=delivery.attempt_id, force=True, hint=hint, source="callback").value
    except Exception as exc:
        logger.exception("processing callback %s failed (try %s)", delivery_id, tries)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if tries >= conf.DELIVERY_MAX_TRIES:
            delivery_transition(
                delivery_id=delivery_id, source=D.PROCESSING, to=D.GAVE_UP, error=error, processed_at=now
            )
            attention_raise(
                kind=AttentionItem.Kind.CALLBACK_FAILED,
                key=f"delivery:{delivery_id}",
                order_id=PaymentAttempt.objects.filter(pk=delivery.attempt_id or 0)
                .values_list("order_id", flat=True)
                .first(),
                attempt_id=delivery.attempt_id,
                reason=f"callback {delivery_id} could not be processed after {tries} tries: {error[:200]}",
            )
            return "gave_up"
        delivery_transition(
            delivery_id=delivery_id,
            source=D.PROCESSING,
            to=D.RETRY,
            error=error,
            next_try_at=timezone.now() + _retry_delay(tries),
        )
        return "retry"
    delivery_transition(
        delivery_id=delivery_id, source=D.PROCESSING, to=D.DONE, outcome=outcome, error="", processed_at=timezone.now()
    )
    return outcome
