from decimal import Decimal

import pytest

from mpesa import ValidationError, mask_msisdn, normalize_msisdn, validate_amount, validate_reference
from mpesa.validation import format_amount


@pytest.mark.parametrize(
    "typed",
    ["841234567", "84 123 4567", "+258 84 123 4567", "258841234567", "00258841234567", "+258-84-123-45-67"],
)
def test_customer_typed_numbers_normalise_to_the_gateway_form(typed: str) -> None:
    assert normalize_msisdn(typed) == "258841234567"


def test_vodacom_85_numbers_are_accepted() -> None:
    assert normalize_msisdn("85 765 4321") == "258857654321"


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("821234567", "Vodacom"),  # mcel/Tmcel: not M-Pesa
        ("861234567", "Vodacom"),  # Movitel
        ("84123456", "9 digits"),
        ("8412345678", "9 digits"),
        ("27841234567", "9 digits"),
        ("84-abc-4567", "digits"),
        ("", "digits"),
        ("٨٤١٢٣٤٥٦٧", "digits"),  # Arabic-Indic digits are digits to Python, not to the gateway
    ],
)
def test_numbers_that_cannot_pay_with_mpesa_are_refused_with_a_reason(typed: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as excinfo:
        normalize_msisdn(typed)
    assert excinfo.value.field == "msisdn"


def test_masking_keeps_prefix_and_last_three_digits() -> None:
    assert mask_msisdn("258841234567") == "25884****567"
    assert mask_msisdn("123") == "***"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", Decimal("10.00")),
        (10, Decimal("10.00")),
        ("1250.5", Decimal("1250.50")),
        (Decimal("0.01"), Decimal("0.01")),
    ],
)
def test_amounts_are_decimals_with_two_places(value: object, expected: Decimal) -> None:
    assert validate_amount(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, "-1", "10.001", "abc", "NaN", "Infinity", 10.5, True])
def test_bad_amounts_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        validate_amount(value)  # type: ignore[arg-type]


def test_wire_amount_has_no_decimals_for_whole_meticais() -> None:
    assert format_amount(Decimal("10.00")) == "10"
    assert format_amount(Decimal("10.50")) == "10.50"


@pytest.mark.parametrize("value", ["", "has space", "x" * 21, "#ref-1234", "ação"])
def test_references_must_be_short_and_alphanumeric(value: str) -> None:
    with pytest.raises(ValidationError):
        validate_reference(value)


def test_twenty_alphanumerics_is_a_valid_reference() -> None:
    assert validate_reference("A" * 20) == "A" * 20
