"""Money formatting for Mozambican meticais (MZN, written "MT").

Portuguese (the default): ``1.250,00 MT``. English: ``MT 1,250.00``. Amounts are ``Decimal`` (or ``int``);
a ``float`` is refused, because money that went through a float may already be wrong.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.utils import translation

CENT = Decimal("0.01")
SYMBOL = "MT"


def _group(digits: str, separator: str) -> str:
    """'1250000' -> '1.250.000' (with separator '.')."""
    head = len(digits) % 3 or 3
    parts = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return separator.join(parts)


def format_mzn(amount: Decimal | int, language: str | None = None) -> str:
    """Format ``amount`` as meticais for ``language`` (default: the active language).

    Rounds half up to the cent. ``format_mzn(Decimal("1250"))`` is ``"1.250,00 MT"`` in Portuguese and
    ``"MT 1,250.00"`` in English. Any language that is not English gets the Portuguese form. Raises
    ``TypeError`` for anything but a Decimal or an int (a float above all), ``ValueError`` for NaN, infinity or an
    amount too large to hold in centavos.
    """
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise TypeError(f"format_mzn needs a Decimal or int, not {type(amount).__name__}")
    try:
        value = Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # NaN, infinity, or more digits than the decimal context holds
        raise ValueError("format_mzn needs a finite amount that fits in centavos") from None
    if not value.is_finite():  # a quiet NaN quantizes to itself
        raise ValueError("format_mzn needs a finite amount, not NaN")
    sign = "-" if value < 0 else ""
    units, cents = f"{abs(value):f}".split(".")
    lang = (language or translation.get_language() or "pt").lower()
    if lang.startswith("en"):
        return f"{sign}{SYMBOL} {_group(units, ',')}.{cents}"
    return f"{sign}{_group(units, '.')},{cents} {SYMBOL}"
