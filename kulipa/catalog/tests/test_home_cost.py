"""The home page's cost and its memoised product cards (kulipa/catalog/cards.py): a fixed number of queries
however many products, and cards that are never stale and never carry another visitor's CSRF token."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.tests.factories import make_product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order

pytestmark = pytest.mark.django_db

# The products, and the units their live reservations hold. A first visit has no session to read.
HOME_QUERIES = 2

_TOKEN = re.compile(
    r'<form class="add-to-cart"[^>]*>\s*<input type="hidden" name="csrfmiddlewaretoken" value="([^"]+)"'
)


def _card_token(html: str) -> str:
    match = _TOKEN.search(html)
    assert match is not None, "no add-to-cart form with a CSRF token on the home page"
    return match.group(1)


@pytest.mark.parametrize("products", [3, 20])
def test_home_page_queries_do_not_grow_with_the_products(client, django_assert_num_queries, products):
    for _ in range(products):
        make_product()
    client.get("/")  # once: what is measured is not the first rendering
    with django_assert_num_queries(HOME_QUERIES):
        response = client.get("/")
    assert response.content.decode().count('class="add-to-cart"') == products


def test_a_reserved_unit_or_a_new_price_shows_on_the_next_visit(client):
    product = make_product(name="Castanha de caju", price=Decimal("1350.00"), stock_on_hand=7)
    assert "7 disponíveis" in client.get("/").content.decode()

    order = Order.objects.create(
        customer_name="Ana", msisdn="258841234567", total=Decimal("1350.00"), expires_at=timezone.now()
    )
    StockReservation.objects.create(
        order=order, product=product, quantity=4, expires_at=timezone.now() + timedelta(minutes=10)
    )
    html = client.get("/").content.decode()
    assert "Só restam 3" in html and 'max="3"' in html

    product.price = Decimal("1400.00")
    product.save()
    html = client.get("/").content.decode()
    assert "1.400,00 MT" in html and "1.350,00 MT" not in html


def test_each_visitor_adds_to_cart_with_their_own_token():
    product = make_product(name="Mel do Niassa")
    ana, rui = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    ana_token = _card_token(ana.get("/").content.decode())
    rui_token = _card_token(rui.get("/").content.decode())  # the same card, from the memo

    data = {"product_id": product.pk, "quantity": 1, "next": "/"}
    refused = rui.post("/carrinho/adicionar/", {**data, "csrfmiddlewaretoken": ana_token})
    added = rui.post("/carrinho/adicionar/", {**data, "csrfmiddlewaretoken": rui_token})

    assert refused.status_code == 403
    assert added.status_code == 302
    assert rui.session[CART_SESSION_KEY] == {str(product.pk): 1}
