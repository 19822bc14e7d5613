"""``{% load money %}`` then ``{{ amount|mzn }}``: "1.250,00 MT" (pt) / "MT 1,250.00" (en).

The filter formats in the active language with :func:`kulipa.core.money.format_mzn`. ``None`` or ``""`` gives
an empty string; a string holding a number is read as Decimal (one that does not, or holds NaN or infinity, gives
an empty string); a float raises ``TypeError``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

from kulipa.core.money import format_mzn

register = template.Library()


@register.filter(name="mzn")
def mzn(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            return format_mzn(Decimal(value))
        except (InvalidOperation, ValueError):  # not a number, or NaN, infinity, too large: not an amount
            return ""
    return format_mzn(value)
