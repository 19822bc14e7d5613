"""Properties of how the shop writes money (``kulipa.core.money.format_mzn`` and the ``mzn`` template filter).

Every amount the database can hold (12 digits, 2 places, negatives for refunds) is written so that reading it back
gives the amount rounded half up to the centavo, in Portuguese (``1.250,00 MT``) and English (``MT 1,250.00``);
a float, a bool or text is refused with ``TypeError``; NaN, infinity and amounts too large with ``ValueError``;
the filter turns text that is not a finite number into nothing rather than an error page.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.template import Context, Template
from hypothesis import given, settings
from hypothesis import strategies as st

from kulipa.core.money import format_mzn
from kulipa.payments.tests.fuzzing import scaled

pytestmark = pytest.mark.fuzz

CENT = Decimal("0.01")
PT = re.compile(r"(-?)([0-9]{1,3}(?:\.[0-9]{3})*),([0-9]{2}) MT")
EN = re.compile(r"(-?)MT ([0-9]{1,3}(?:,[0-9]{3})*)\.([0-9]{2})")
stored_amounts = st.decimals(min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"), places=2)
any_finite = st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**20), max_value=10**20)


def read_back(text: str, language: str) -> Decimal:
    match = (EN if language == "en" else PT).fullmatch(text)
    assert match, f"{text!r} is not money written in {language}"
    sign, units, cents = match.groups()
    return Decimal(f"{sign}{units.replace('.', '').replace(',', '')}.{cents}")


@given(stored_amounts | any_finite | st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["pt", "en"]))
@settings(max_examples=scaled(5))
def test_every_amount_reads_back_as_itself_rounded_half_up_to_the_centavo(amount: Decimal | int, language: str) -> None:
    expected = Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)
    assert read_back(format_mzn(amount, language), language) == expected


@given(st.floats() | st.booleans() | st.text(max_size=10) | st.none() | st.binary(max_size=4))
@settings(max_examples=scaled(1))
def test_anything_but_a_decimal_or_an_int_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        format_mzn(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "amount", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("1E+30"), 10**40]
)
def test_nan_infinity_and_amounts_too_large_are_a_value_error(amount: Decimal | int) -> None:
    """Regression (found by the properties above): these raised ``decimal.InvalidOperation``, which no caller
    expects from a formatting helper."""
    with pytest.raises(ValueError, match="finite amount"):
        format_mzn(amount, "pt")


@given(
    st.text(max_size=20)
    | stored_amounts.map(str)
    | st.sampled_from(["NaN", "-Infinity", "inf", "sNaN", " 1 ", "1E+100", "9" * 40])
)
@settings(max_examples=scaled(2))
def test_the_filter_writes_text_holding_an_amount_and_nothing_for_other_text(text: str) -> None:
    """Regression included: "NaN", "Infinity" or "1E+100" made the filter raise (an error page)."""
    rendered = Template("{% load money %}{{ value|mzn }}").render(Context({"value": text}))
    try:
        amount = Decimal(text)
    except ArithmeticError:
        amount = None
    if text == "" or amount is None or not amount.is_finite() or abs(amount) >= 10**26:
        assert rendered == ""
    else:
        assert read_back(rendered, "pt") == amount.quantize(CENT, rounding=ROUND_HALF_UP)
