from decimal import Decimal

import pytest
from django.template import Context, Template
from django.utils import translation

from kulipa.core.money import format_mzn


@pytest.mark.parametrize(
    ("amount", "language", "expected"),
    [
        (Decimal("1250"), "pt", "1.250,00 MT"),
        (Decimal("1250"), "en", "MT 1,250.00"),
        (Decimal("0.5"), "pt", "0,50 MT"),
        (Decimal("999.995"), "pt", "1.000,00 MT"),  # half up to the cent
        (Decimal("1234567.8"), "pt", "1.234.567,80 MT"),
        (Decimal("1234567.8"), "en", "MT 1,234,567.80"),
        (Decimal("-75"), "pt", "-75,00 MT"),
        (350, "pt", "350,00 MT"),
        (Decimal("120"), "pt-br", "120,00 MT"),
    ],
)
def test_format_mzn(amount, language, expected):
    assert format_mzn(amount, language) == expected


def test_format_mzn_refuses_float():
    with pytest.raises(TypeError):
        format_mzn(12.5)  # type: ignore[arg-type]


def test_format_mzn_defaults_to_active_language():
    with translation.override("en"):
        assert format_mzn(Decimal("2500")) == "MT 2,500.00"
    with translation.override("pt"):
        assert format_mzn(Decimal("2500")) == "2.500,00 MT"


def test_mzn_filter_uses_active_language():
    template = Template("{% load money %}{{ amount|mzn }}|{{ missing|mzn }}")
    with translation.override("pt"):
        assert template.render(Context({"amount": Decimal("1250.5")})) == "1.250,50 MT|"
    with translation.override("en"):
        assert template.render(Context({"amount": Decimal("1250.5")})) == "MT 1,250.50|"
