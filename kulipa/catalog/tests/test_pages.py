from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from kulipa.catalog.tests.factories import make_product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order

pytestmark = pytest.mark.django_db


def test_home_lists_active_products_with_price_and_stock(client):
    make_product(name="Castanha de caju", price=Decimal("1350.00"), stock_on_hand=7)
    make_product(name="Capulana antiga", is_active=False)

    html = client.get("/").content.decode()

    assert "Castanha de caju" in html
    assert "1.350,00 MT" in html
    assert "7 disponíveis" in html
    assert "Capulana antiga" not in html


def test_detail_page_shows_product_and_add_form(client):
    product = make_product(name="Sumo de maracujá", description="Natural.", stock_on_hand=3)

    response = client.get(reverse("catalog:product_detail", kwargs={"slug": product.slug}))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Sumo de maracujá" in html
    assert "Só restam 3" in html
    assert 'max="3"' in html
    assert reverse("cart:add") in html


def test_inactive_or_unknown_product_is_404(client):
    product = make_product(is_active=False)
    assert client.get(product.get_absolute_url()).status_code == 404
    assert client.get("/produto/nao-existe/").status_code == 404


def test_sold_out_product_says_esgotado_and_cannot_be_added(client):
    product = make_product(name="Mel do Niassa", stock_on_hand=0)

    html = client.get(product.get_absolute_url()).content.decode()

    assert "Esgotado" in html
    assert reverse("cart:add") not in html


def test_live_reservations_reduce_the_stock_shown(client):
    product = make_product(stock_on_hand=2)
    order = Order.objects.create(
        customer_name="Ana", msisdn="258841234567", total=Decimal("100.00"), expires_at=timezone.now()
    )
    StockReservation.objects.create(
        order=order, product=product, quantity=2, expires_at=timezone.now() + timedelta(minutes=10)
    )

    assert "Esgotado" in client.get(product.get_absolute_url()).content.decode()


def test_portuguese_even_when_the_phone_asks_for_english(client):
    make_product(price=Decimal("1250.00"))

    response = client.get("/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")

    html = response.content.decode()
    assert '<html lang="pt">' in html
    assert "Adicionar ao carrinho" in html
    assert "1.250,00 MT" in html


def test_english_after_choosing_it_with_the_switch(client):
    make_product(price=Decimal("1250.00"), stock_on_hand=0)

    response = client.post("/i18n/setlang/", {"language": "en", "next": "/"}, follow=True)

    html = response.content.decode()
    assert '<html lang="en">' in html
    assert "Sold out" in html
    assert "Products" in html
    assert "MT 1,250.00" in html
    # and back to Portuguese
    html = client.post("/i18n/setlang/", {"language": "pt", "next": "/"}, follow=True).content.decode()
    assert "Esgotado" in html


def test_sandbox_banner_is_shown_without_real_mpesa_credentials(client, settings):
    settings.MPESA = {
        **settings.MPESA,
        "ENVIRONMENT": "simulator",
        "API_KEY": "",
        "SANDBOX_PHONE_URL": "http://127.0.0.1:8899/phone",
    }

    html = client.get("/").content.decode()

    assert "SANDBOX — pagamentos simulados" in html
    assert 'href="http://127.0.0.1:8899/phone"' in html


def test_no_sandbox_banner_in_production(client, settings):
    settings.MPESA = {**settings.MPESA, "API_KEY": "live-key", "ENVIRONMENT": "live"}

    assert "SANDBOX" not in client.get("/").content.decode()


def test_admin_product_list_shows_stock_and_searches(admin_client):
    make_product(name="Piri-piri em pó", stock_on_hand=4)
    make_product(name="Sabão de coco")

    html = admin_client.get("/admin/catalog/product/?q=piri").content.decode()

    assert "Piri-piri em pó" in html
    assert "Sabão de coco" not in html
