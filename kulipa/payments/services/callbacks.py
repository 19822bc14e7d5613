"""Callbacks: store an inbound result delivery raw and acknowledge it (web), then confirm it by status query
(worker). A callback is a hint; it changes nothing by itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from kulipa.payments.models import CallbackDelivery, PaymentAttempt
from kulipa.payments.services._common import (
    Kind,
    _event,
    _lock_order_and_attempt,
    callbacks_authenticated,
    logger,
)
from kulipa.payments.services.reconcile import CallbackHint, attempt_reconcile

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
