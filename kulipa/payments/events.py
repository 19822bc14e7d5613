"""The payment event log (append-only) and what may be stored in it: MSISDNs masked, credentials dropped."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kulipa.payments.models import PaymentEvent
from mpesa import QueryResult, Result, mask_msisdn

Kind = PaymentEvent.Kind

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


def event_record(
    *, order_id: int, attempt_id: int | None, kind: str, summary: str, payload: Mapping[str, Any] | None = None
) -> PaymentEvent:
    """Append one event (payload masked). Callers that hold locks hold the order's first (kulipa.core.locks)."""
    return PaymentEvent.objects.create(
        order_id=order_id,
        attempt_id=attempt_id,
        kind=kind,
        summary=summary[:300],
        payload=mask_payload(dict(payload or {})),
    )


def result_payload(result: Result) -> dict[str, Any]:
    """What the event log keeps of a gateway answer."""
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
        "sent": result.sent,
        "elapsed": round(result.elapsed, 3),
        "raw": result.raw,
    }
    if isinstance(result, QueryResult):
        payload["transaction_status"] = result.transaction_status.value if result.transaction_status else None
        payload["reversed"] = result.reversed
        payload["reversed_amount"] = str(result.reversed_amount) if result.reversed_amount is not None else None
    return payload
