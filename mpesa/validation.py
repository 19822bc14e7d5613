"""Checks applied to every request before anything is sent, and the masking used in logs.

The gateway rejects a 9-digit number with INS-2051, a reference with spaces with INS-1/INS-17/INS-19 and so on
(reference §7.1); catching these locally gives the customer a clear message and costs no round trip.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from mpesa.errors import ValidationError

COUNTRY_CODE = "258"
VODACOM_PREFIXES = ("84", "85")
_REFERENCE = re.compile(r"^[A-Za-z0-9]{1,20}$")
_SHORT_CODE = re.compile(r"^[0-9]{5,6}$")
_SEPARATORS = re.compile(r"[\s\-().]")


def normalize_msisdn(value: str) -> str:
    """Return the 12-digit form ``2588Xxxxxxxx`` the gateway wants, from what a customer types.

    Accepts ``84 123 4567``, ``841234567``, ``+258 84 123 4567``, ``00258841234567`` and ``258841234567``.
    Only Vodacom numbers (84, 85) can pay with M-Pesa; anything else raises :class:`ValidationError`.
    """
    if not isinstance(value, str):
        raise ValidationError("msisdn", "must be a string of digits")
    digits = _SEPARATORS.sub("", value.strip())
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit() or not digits.isascii():
        raise ValidationError("msisdn", "must contain only digits, spaces or a leading +")
    if len(digits) == 9:
        digits = COUNTRY_CODE + digits
    if len(digits) != 12 or not digits.startswith(COUNTRY_CODE):
        raise ValidationError("msisdn", "must be a Mozambican number: 9 digits, optionally after +258")
    if digits[3:5] not in VODACOM_PREFIXES:
        raise ValidationError("msisdn", "must be a Vodacom number starting with 84 or 85")
    return digits


def mask_msisdn(value: str) -> str:
    """``258841234567`` → ``25884****567``: enough to tell numbers apart in a log, not enough to call them."""
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    if len(digits) < 8:
        return "*" * len(digits)
    return f"{digits[:5]}{'*' * (len(digits) - 8)}{digits[-3:]}"


def validate_amount(value: Decimal | int | str, *, field: str = "amount") -> Decimal:
    """A positive amount in meticais with at most two decimal places, as a ``Decimal``.

    Floats are refused: ``0.1 + 0.2`` is not money.
    """
    if isinstance(value, (float, bool)):
        raise ValidationError(field, "must be a Decimal, an int or a string, never a float")
    try:
        # An int goes in as it is: str() of one with more than 4300 digits raises ValueError.
        amount = value if isinstance(value, Decimal | int) else Decimal(str(value).strip())
        amount = Decimal(amount)
    except InvalidOperation:
        raise ValidationError(field, f"{value!r:.40} is not a number") from None
    if not amount.is_finite():
        raise ValidationError(field, "must be a finite number")
    if amount <= 0:
        raise ValidationError(field, "must be greater than zero")
    try:
        cents = amount.quantize(Decimal("0.01"))
    except InvalidOperation:  # more digits than the decimal context holds
        raise ValidationError(field, "is too large") from None
    if amount != cents:
        raise ValidationError(field, "must have at most two decimal places")
    return cents


def format_amount(amount: Decimal) -> str:
    """The wire form of an amount: ``"10"`` for whole meticais, ``"10.50"`` otherwise."""
    if amount == amount.to_integral_value():
        return str(amount.quantize(Decimal(1)))
    return str(amount.quantize(Decimal("0.01")))


def validate_reference(value: str, *, field: str = "reference") -> str:
    """A transaction or third-party reference: 1 to 20 letters and digits, nothing else."""
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value):
        raise ValidationError(field, "must be 1 to 20 letters or digits (no spaces or symbols)")
    return value


def validate_short_code(value: str, *, field: str = "service_provider_code") -> str:
    """A merchant short code: 5 or 6 digits (the sandbox uses ``171717``)."""
    if not isinstance(value, str) or not _SHORT_CODE.fullmatch(value):
        raise ValidationError(field, "must be 5 or 6 digits")
    return value
