"""The INS response codes of the Vodacom M-Pesa OpenAPI (Mozambique), with HTTP status and outcome class.

Source: ``shared/reference/mpesa-openapi.md`` §4.1. The simulator answers with these statuses and the client sorts
every answer into an :class:`~mpesa.outcomes.Outcome` with :func:`outcome_for`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpesa.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class ResponseCode:
    code: str
    http_status: int
    description: str
    outcome: Outcome


def _table(*rows: tuple[str, int, str, Outcome]) -> dict[str, ResponseCode]:
    return {code: ResponseCode(code, status, text, outcome) for code, status, text, outcome in rows}


_S, _D, _F, _N, _I, _A, _U = (
    Outcome.SUCCESS,
    Outcome.DECLINED,
    Outcome.FAILED,
    Outcome.INSUFFICIENT_FUNDS,
    Outcome.INVALID_REQUEST,
    Outcome.AUTH_ERROR,
    Outcome.UNKNOWN,
)

RESPONSE_CODES: dict[str, ResponseCode] = _table(
    ("INS-0", 201, "Request processed successfully", _S),
    # INS-1 is where production has been seen to report insufficient funds too (reference §4.1); it is an
    # internal error of the gateway after the request was accepted, and the push may or may not have been paid.
    ("INS-1", 500, "Internal Error", _U),
    ("INS-2", 401, "Invalid API Key", _A),
    ("INS-4", 401, "User is not active", _A),
    ("INS-5", 401, "Transaction cancelled by customer", _D),
    ("INS-6", 401, "Transaction Failed", _F),
    ("INS-9", 408, "Request timeout", _U),
    ("INS-10", 409, "Duplicate Transaction", _I),
    ("INS-13", 400, "Invalid Shortcode Used", _I),
    ("INS-14", 400, "Invalid Reference Used", _I),
    ("INS-15", 400, "Invalid Amount Used", _I),
    ("INS-16", 503, "Unable to handle the request due to a temporary overloading", _U),
    ("INS-17", 400, "Invalid Transaction Reference. Length Should Be Between 1 and 20.", _I),
    ("INS-18", 400, "Invalid TransactionID Used", _I),
    ("INS-19", 400, "Invalid ThirdPartyReference Used", _I),
    ("INS-20", 400, "Not All Parameters Provided. Please try again.", _I),
    ("INS-21", 400, "Parameter validations failed. Please try again.", _I),
    ("INS-22", 400, "Invalid Operation Type", _I),
    ("INS-23", 400, "Unknown Status. Contact M-Pesa Support", _U),
    ("INS-24", 400, "Invalid InitiatorIdentifier Used", _A),
    ("INS-25", 400, "Invalid SecurityCredential Used", _A),
    ("INS-26", 400, "Not authorized", _A),
    ("INS-993", 400, "Direct Debit Missing", _F),
    ("INS-994", 400, "Direct Debit Already Exists", _F),
    ("INS-995", 400, "Customer's Profile Has Problems", _F),
    ("INS-996", 400, "Customer Account Status Not Active", _F),
    ("INS-997", 400, "Linking Transaction Not Found", _F),
    ("INS-998", 400, "Invalid Market", _I),
    ("INS-2001", 400, "Initiator authentication error", _A),
    ("INS-2002", 400, "Receiver invalid", _I),
    ("INS-2006", 422, "Insufficient balance", _N),
    ("INS-2051", 400, "MSISDN invalid", _I),
    ("INS-2057", 400, "Language code invalid", _I),
    # Listed only for the openapi.m-pesa.com platform (reference §4.2). Where a number means something else there
    # (INS-993 to INS-997), the Mozambique meaning above is kept.
    ("INS-28", 400, "Invalid ThirdPartyConversationID Used", _I),
    ("INS-30", 400, "Invalid Purchased Items Description Used", _I),
    ("INS-31", 400, "Invalid Payment Items Description Used", _I),
    ("INS-32", 400, "Invalid KYC Query Type Used", _I),
    ("INS-35", 400, "This transaction do not belong to you", _I),
    ("INS-36", 400, "Invalid Agreed TC", _I),
    ("INS-39", 400, "Invalid First Payment Date", _I),
    ("INS-40", 400, "Invalid Frequency", _I),
    ("INS-41", 400, "Invalid Start Range Days", _I),
    ("INS-42", 400, "Invalid End Range Days", _I),
    ("INS-43", 400, "Invalid Expiry Date", _I),
    ("INS-50", 400, "MSISDN Token and MSISDN do not match", _I),
    ("INS-51", 400, "Invalid MandateID", _I),
    ("INS-52", 400, "MandateID does not correspond to ThirdPartyReference", _I),
    ("INS-54", 400, "Invalid BalanceAmount", _I),
    ("INS-55", 400, "BalanceAmount mandatory when QueryBalanceAmount is True", _I),
    ("INS-56", 401, "Invalid MSISDNToken", _I),
    ("INS-57", 500, "Either MSISDN or MSISDNToken required", _I),
    ("INS-58", 400, "No Active Mandate found", _F),
    ("INS-989", 400, "Session Creation Failed", _A),
    ("INS-990", 400, "Customer Transaction Value Limit Breached", _F),
    ("INS-991", 400, "Customer Transaction Count Limit Breached", _F),
    ("INS-992", 400, "Multiple Limits Breached", _F),
)


def lookup(code: str) -> ResponseCode | None:
    """The table entry for ``code`` (``"INS-5"``), or ``None`` for a code the reference does not list."""
    return RESPONSE_CODES.get(code.strip().upper())


def outcome_for(code: str | None, *, http_status: int | None = None) -> Outcome:
    """Sort an answer into an outcome class.

    A listed code decides by itself. An unlisted or missing code is judged by the HTTP status: 5xx, or no status
    at all, is ``UNKNOWN`` (the request may have been processed); 401/403 is an authorisation problem; other 4xx
    are invalid requests. Anything else is ``UNKNOWN``: when in doubt, the money may have moved.
    """
    if code:
        entry = lookup(code)
        if entry is not None:
            return entry.outcome
    if http_status is None or http_status >= 500:
        return Outcome.UNKNOWN
    if http_status in (401, 403):
        return Outcome.AUTH_ERROR
    if 400 <= http_status < 500 and http_status != 408:
        return Outcome.INVALID_REQUEST
    return Outcome.UNKNOWN
