"""What a response means for the money: the outcome classes every result is sorted into."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The question a merchant asks of every answer: did the money move?

    Only ``SUCCESS`` means it did. ``UNKNOWN`` means it may or may not have: the caller must find out with a
    transaction status query and must never send the same payment again. Every other class is a final "no".
    """

    SUCCESS = "success"
    DECLINED = "declined"
    """The customer cancelled the prompt on the phone."""
    INSUFFICIENT_FUNDS = "insufficient_funds"
    FAILED = "failed"
    """The gateway processed the request and refused it (for example a wrong PIN or a blocked account)."""
    INVALID_REQUEST = "invalid_request"
    """Something in the request is wrong; sending it again unchanged gives the same answer."""
    AUTH_ERROR = "auth_error"
    """API key, public key, origin, initiator or credential were not accepted."""
    UNKNOWN = "unknown"
    """Timeouts, dropped connections, 5xx, overload, unparseable bodies: the money may or may not have moved."""

    @property
    def is_final(self) -> bool:
        """Whether this outcome settles the question without a status query."""
        return self is not Outcome.UNKNOWN

    @property
    def money_moved(self) -> bool:
        return self is Outcome.SUCCESS
