"""The wire protocol without I/O: build requests, parse answers. Shared by the sync and async clients."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import httpx

from mpesa.codes import lookup, outcome_for
from mpesa.config import ENDPOINTS, Config, Operation
from mpesa.errors import ValidationError
from mpesa.outcomes import Outcome
from mpesa.results import CustomerNameResult, QueryResult, Result, TransactionStatus
from mpesa.validation import (
    format_amount,
    mask_msisdn,
    normalize_msisdn,
    validate_amount,
    validate_reference,
    validate_short_code,
)

# Operations that are safe to send again after a transport error: they move no money.
RETRYABLE = frozenset({Operation.QUERY, Operation.CUSTOMER_NAME})

_QUERY_REFERENCE = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")
_TRANSACTION_ID = re.compile(r"^[A-Za-z0-9]{1,40}$")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    operation: Operation
    method: str
    url: str
    fields: dict[str, str]
    timeout: httpx.Timeout
    log_context: dict[str, str]
    """Safe to log: references and masked MSISDN, never credentials."""

    def httpx_arguments(self) -> dict[str, Any]:
        if self.method == "GET":
            return {"params": self.fields}
        return {"content": json.dumps(self.fields).encode("utf-8")}


def _timeout(config: Config, operation: Operation) -> httpx.Timeout:
    t = config.timeouts
    read = t.c2b_read if operation is Operation.C2B else t.read
    return httpx.Timeout(connect=t.connect, read=read, write=t.write, pool=t.pool)


def _prepare(config: Config, operation: Operation, fields: dict[str, str], **log: str) -> PreparedRequest:
    method, path = ENDPOINTS[operation]
    return PreparedRequest(
        operation=operation,
        method=method,
        url=config.url_for(operation, path),
        fields=fields,
        timeout=_timeout(config, operation),
        log_context=log,
    )


def prepare_payment(
    config: Config,
    operation: Operation,
    *,
    amount: Decimal | int | str,
    msisdn: str,
    transaction_reference: str,
    third_party_reference: str,
) -> PreparedRequest:
    """C2B (customer pays, USSD push) or B2C (merchant pays customer): the same five fields."""
    number = normalize_msisdn(msisdn)
    value = validate_amount(amount)
    fields = {
        "input_TransactionReference": validate_reference(transaction_reference, field="transaction_reference"),
        "input_CustomerMSISDN": number,
        "input_Amount": format_amount(value),
        "input_ThirdPartyReference": validate_reference(third_party_reference, field="third_party_reference"),
        "input_ServiceProviderCode": config.service_provider_code,
    }
    return _prepare(
        config,
        operation,
        fields,
        msisdn=mask_msisdn(number),
        amount=fields["input_Amount"],
        third_party_reference=third_party_reference,
    )


def prepare_b2b(
    config: Config,
    *,
    amount: Decimal | int | str,
    receiver_party_code: str,
    transaction_reference: str,
    third_party_reference: str,
) -> PreparedRequest:
    value = validate_amount(amount)
    fields = {
        "input_TransactionReference": validate_reference(transaction_reference, field="transaction_reference"),
        "input_Amount": format_amount(value),
        "input_ThirdPartyReference": validate_reference(third_party_reference, field="third_party_reference"),
        "input_PrimaryPartyCode": config.service_provider_code,
        "input_ReceiverPartyCode": validate_short_code(receiver_party_code, field="receiver_party_code"),
    }
    return _prepare(
        config,
        Operation.B2B,
        fields,
        receiver=receiver_party_code,
        third_party_reference=third_party_reference,
    )


def prepare_query(config: Config, *, query_reference: str, third_party_reference: str) -> PreparedRequest:
    """``query_reference`` is the TransactionID, ThirdPartyReference or ConversationID being asked about;
    ``third_party_reference`` identifies this query request itself."""
    if not isinstance(query_reference, str) or not _QUERY_REFERENCE.fullmatch(query_reference):
        raise ValidationError("query_reference", "must be a TransactionID, ThirdPartyReference or ConversationID")
    fields = {
        "input_ThirdPartyReference": validate_reference(third_party_reference, field="third_party_reference"),
        "input_QueryReference": query_reference,
        "input_ServiceProviderCode": config.service_provider_code,
    }
    return _prepare(config, Operation.QUERY, fields, query_reference=query_reference)


def prepare_reversal(
    config: Config,
    *,
    transaction_id: str,
    third_party_reference: str,
    amount: Decimal | int | str | None = None,
) -> PreparedRequest:
    """Full reversal when ``amount`` is None, else partial. Needs the initiator identifier and credential."""
    if not config.initiator_identifier or not config.security_credential:
        raise ValidationError(
            "initiator_identifier",
            "reversals need initiator_identifier and security_credential in the config",
        )
    if not isinstance(transaction_id, str) or not _TRANSACTION_ID.fullmatch(transaction_id):
        raise ValidationError("transaction_id", "must be the M-Pesa TransactionID of the payment (letters, digits)")
    fields = {
        "input_TransactionID": transaction_id,
        "input_SecurityCredential": config.security_credential,
        "input_InitiatorIdentifier": config.initiator_identifier,
        "input_ThirdPartyReference": validate_reference(third_party_reference, field="third_party_reference"),
        "input_ServiceProviderCode": config.service_provider_code,
    }
    if amount is not None:
        fields["input_ReversalAmount"] = format_amount(validate_amount(amount))
    return _prepare(
        config,
        Operation.REVERSAL,
        fields,
        transaction_id=transaction_id,
        amount=fields.get("input_ReversalAmount", "full"),
        third_party_reference=third_party_reference,
    )


def prepare_customer_name(config: Config, *, msisdn: str, third_party_reference: str) -> PreparedRequest:
    number = normalize_msisdn(msisdn)
    fields = {
        "input_CustomerMSISDN": number,
        "input_ThirdPartyReference": validate_reference(third_party_reference, field="third_party_reference"),
        "input_ServiceProviderCode": config.service_provider_code,
    }
    return _prepare(config, Operation.CUSTOMER_NAME, fields, msisdn=mask_msisdn(number))


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decimal(value: object) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None  # "NaN", or a JSON number too large for a float


def parse_response(
    operation: Operation, *, status_code: int, content: bytes, elapsed: float
) -> Result | QueryResult | CustomerNameResult:
    """Turn an HTTP answer into a result. Never raises: an empty or garbled body is an ``UNKNOWN`` result."""
    try:
        parsed = json.loads(content) if content.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deeply nested arrays or objects
        parsed = None
    if not isinstance(parsed, dict):
        # The result type the caller expects even here: a query asked about must come back as a QueryResult.
        return _result_type(operation)(
            operation=operation,
            outcome=Outcome.UNKNOWN,
            http_status=status_code,
            description="unparseable response body",
            error=f"HTTP {status_code} with a body that is not a JSON object",
            raw=content.decode("utf-8", "replace")[:2000],
            elapsed=elapsed,
        )
    body: dict[str, Any] = parsed
    code = _text(body, "output_ResponseCode")
    if code is None and "output_error" in body:
        # Authorisation and origin failures come back as {"output_error": "..."} (reference §2.2).
        outcome = Outcome.AUTH_ERROR if status_code < 500 else Outcome.UNKNOWN
        description = str(body["output_error"])
    else:
        outcome = outcome_for(code, http_status=status_code)
        entry = lookup(code) if code else None
        description = _text(body, "output_ResponseDesc") or (entry.description if entry else "")
    common: dict[str, Any] = {
        "operation": operation,
        "outcome": outcome,
        "code": code,
        "description": description,
        "http_status": status_code,
        "conversation_id": _text(body, "output_ConversationID"),
        "transaction_id": _none_if_na(_text(body, "output_TransactionID")),
        "third_party_reference": _text(body, "output_ThirdPartyReference"),
        "raw": body,
        "elapsed": elapsed,
    }
    if operation is Operation.QUERY:
        return QueryResult(
            **common,
            transaction_status=TransactionStatus.parse(body.get("output_ResponseTransactionStatus")),
            reversed=str(body.get("output_Reversed", "")).strip().lower() == "true",
            reversed_amount=_decimal(body.get("output_ReversedAmount")),
        )
    if operation is Operation.CUSTOMER_NAME:
        return CustomerNameResult(
            **common,
            msisdn=_text(body, "output_CustomerMSISDN"),
            first_name=_text(body, "output_FirstName") or _text(body, "output_CustomerFirstName"),
            second_name=_text(body, "output_SecondName") or _text(body, "output_CustomerLastName"),
        )
    return Result(**common)


def _result_type(operation: Operation) -> type[Result]:
    if operation is Operation.QUERY:
        return QueryResult
    if operation is Operation.CUSTOMER_NAME:
        return CustomerNameResult
    return Result


def _none_if_na(value: str | None) -> str | None:
    return None if value is None or value.upper() == "N/A" else value


def transport_failure(operation: Operation, exc: Exception, *, elapsed: float) -> Result:
    """No usable answer: the outcome is ``UNKNOWN``. ``sent`` is False when the connection never opened (the
    request cannot have reached the gateway); otherwise it may have been processed."""
    # With the aiohttp transport the httpx exception is a translation; the original says what really happened
    # (a dropped connection arrives as ConnectTimeout there).
    if isinstance(exc.__cause__, aiohttp.ClientError):
        exc = exc.__cause__
        timed_out = isinstance(exc, TimeoutError)
        # Refused, unresolvable or failed TLS handshake: the connection never opened, so nothing was sent.
        sent = not isinstance(exc, aiohttp.ClientConnectorError) or timed_out
    else:
        timed_out = isinstance(exc, httpx.TimeoutException)
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    kind = "timed out" if timed_out else "connection failed"
    if not sent:
        kind = "not sent: could not connect"
    return _result_type(operation)(
        operation=operation,
        outcome=Outcome.UNKNOWN,
        description=kind,
        error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        elapsed=elapsed,
        sent=sent,
    )
