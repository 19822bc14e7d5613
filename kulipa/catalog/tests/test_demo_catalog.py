from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

from kulipa.catalog.models import Product

pytestmark = pytest.mark.django_db


def test_demo_catalog_loads_about_twenty_products_and_is_idempotent(client):
    call_command("load_demo_catalog")
    first = Product.objects.count()
    Product.objects.filter(slug="capulana-mare").update(price=Decimal("1.00"))

    call_command("load_demo_catalog")

    assert 18 <= first <= 25
    assert Product.objects.count() == first
    assert Product.objects.get(slug="capulana-mare").price == Decimal("450.00")
    assert Product.objects.filter(stock_on_hand__gte=1, stock_on_hand__lte=3).count() >= 2
    assert all(finders.find(p.image) for p in Product.objects.all())
    assert "Capulana" in client.get("/").content.decode()
