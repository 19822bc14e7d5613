"""Typed results. Every gateway answer, including a timeout, becomes one of these; none is raised."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from mpesa.config import Operation
from mpesa.outcomes import Outcome


class TransactionStatus(StrEnum):
    """``output_ResponseTransactionStatus`` of a status query (reference §2.2)."""

    COMPLETED = "Completed"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"
    NOT_FOUND = "N/A"
    OTHER = "other"
    """A value the reference does not list; treat it like "not known yet"."""

    @classmethod
    def parse(cls, value: object) -> TransactionStatus | None:
        if value is None or value == "":
            return None
        text = str(value).strip()
        for member in cls:
            if member.value.lower() == text.lower():
                return member
        return cls.OTHER


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The answer to one request.

    ``outcome`` is what the merchant acts on (see :class:`~mpesa.outcomes.Outcome`); ``code``/``description``
    are the gateway's own words; ``error`` describes a transport failure when there was no usable answer.
    """

    operation: Operation
    outcome: Outcome
    code: str | None = None
    description: str = ""
    http_status: int | None = None
    conversation_id: str | None = None
    transaction_id: str | None = None
    third_party_reference: str | None = None
    error: str | None = None
    raw: dict[str, Any] | str | None = field(default=None, repr=False)
    elapsed: float = 0.0
    sent: bool = True
    """False only when the request provably never reached the gateway (connection refused, name not resolved,
    refused before sending): nothing can have happened, and a payment may be tried again at once."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult(Result):
    """A transaction status query. ``outcome`` says whether the *query* worked; ``transaction_status`` says what
    happened to the transaction that was asked about."""

    transaction_status: TransactionStatus | None = None
    reversed: bool = False
    reversed_amount: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerNameResult(Result):
    """The customer's name as the gateway shows it: masked (e.g. ``J***``)."""

    msisdn: str | None = None
    first_name: str | None = None
    second_name: str | None = None
