"""Checkout over HTTP with Django's test client."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order, OrderLine
from kulipa.orders.selectors import SESSION_ORDERS_KEY
from kulipa.orders.tests.conftest import put_in_cart
from kulipa.orders.tests.factories import product_make

pytestmark = pytest.mark.django_db

CHECKOUT = "/checkout/"


def form_data(client, **overrides):
    """The fields of a freshly rendered checkout form (with its hidden token and snapshot), plus overrides."""
    response = client.get(CHECKOUT)
    assert response.status_code == 200
    data = {
        "customer_name": "Ana Cossa",
        "msisdn": "84 123 4567",
        "email": "ana@example.com",
        "delivery_address": "Av. Julius Nyerere 123, Maputo",
        "checkout_token": response.context["form"].initial["checkout_token"],
        "snapshot": response.context["snapshot"],
    }
    data.update(overrides)
    return data


def test_urls():
    assert reverse("orders:checkout") == CHECKOUT
    assert reverse("orders:history") == "/conta/encomendas/"
    assert reverse("orders:detail", kwargs={"public_id": "abc"}) == "/pedido/abc/"


def test_empty_cart_redirects_to_cart_with_message(client):
    response = client.get(CHECKOUT, follow=True)
    assert response.redirect_chain[-1][0] == reverse("cart:detail")
    assert "vazio" in response.content.decode()


def test_get_shows_lines_and_db_total(client):
    a, b = product_make(price="150.50", name="Caju torrado"), product_make(price="20.00", name="Café")
    put_in_cart(client, {a.pk: 2, b.pk: 1})
    response = client.get(CHECKOUT)
    html = response.content.decode()
    assert "Caju torrado" in html and "Café" in html
    assert "321,00 MT" in html
    assert 'name="checkout_token"' in html
    assert (
        response.context["form"].initial["checkout_token"]
        != client.get(CHECKOUT).context["form"].initial["checkout_token"]
    )


def test_get_prefills_name_and_email_for_logged_in_user(client, django_user_model):
    user = django_user_model.objects.create_user(
        email="ana@example.com", password="x", first_name="Ana", last_name="Cossa"
    )
    client.force_login(user)
    put_in_cart(client, {product_make().pk: 1})
    form = client.get(CHECKOUT).context["form"]
    assert form.initial["customer_name"] == "Ana Cossa"
    assert form.initial["email"] == "ana@example.com"


def test_happy_path_creates_one_order_and_hands_over_to_payments(client, payment_calls):
    a, b = product_make(price="150.50", stock=5), product_make(price="20.00", stock=5)
    put_in_cart(client, {a.pk: 2, b.pk: 1})
    response = client.post(CHECKOUT, form_data(client))
    order = Order.objects.get()
    assert response.status_code == 303
    assert response["Location"] == order.get_absolute_url()
    assert order.total == Decimal("321.00")
    assert order.msisdn == "258841234567"  # normalised
    assert (order.customer_name, order.email) == ("Ana Cossa", "ana@example.com")
    assert order.delivery_address.startswith("Av. Julius")
    assert order.session_key == client.session.session_key
    assert order.user is None
    assert OrderLine.objects.filter(order=order).count() == 2
    assert dict(order.reservations.values_list("product_id", "quantity")) == {a.pk: 2, b.pk: 1}
    assert [c["order"].pk for c in payment_calls] == [order.pk]
    session = client.session
    assert not session.get(CART_SESSION_KEY)
    assert order.public_id in session[SESSION_ORDERS_KEY]
    assert client.get(response["Location"]).status_code == 200


def test_logged_in_order_belongs_to_user(client, django_user_model, payment_calls):
    user = django_user_model.objects.create_user(email="ana@example.com", password="x")
    client.force_login(user)
    put_in_cart(client, {product_make().pk: 1})
    client.post(CHECKOUT, form_data(client))
    assert Order.objects.get().user == user


def test_tampered_price_fields_are_ignored(client, payment_calls):
    p = product_make(price="500.00", stock=5)
    put_in_cart(client, {p.pk: 2})
    data = form_data(
        client,
        price="1.00",
        unit_price="1.00",
        total="1.00",
        amount="1",
        paid_at="2020-01-01",
        status="paid",
        payment_status="paid",
        **{f"price_{p.pk}": "1.00", "lines-0-unit_price": "1.00"},
    )
    response = client.post(CHECKOUT, data)
    assert response.status_code == 303
    order = Order.objects.get()
    assert order.total == Decimal("1000.00")
    assert order.lines.get().unit_price == Decimal("500.00")
    assert (order.status, order.payment_status, order.paid_at) == ("awaiting_payment", "pending", None)


@pytest.mark.parametrize(
    ("msisdn", "expected"),
    [
        ("12345", "Número inválido"),
        ("84 123 456", "Número inválido"),
        ("+27 84 123 4567", "Número inválido"),
        ("82 123 4567", "números Vodacom"),
        ("+258 86 123 4567", "números Vodacom"),
        ("", "obrigatório"),
    ],
)
def test_invalid_phone_shows_clear_error_and_creates_nothing(client, payment_calls, msisdn, expected):
    put_in_cart(client, {product_make().pk: 1})
    response = client.post(CHECKOUT, form_data(client, msisdn=msisdn))
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert "msisdn" in response.context["form"].errors
    assert not Order.objects.exists()
    assert not StockReservation.objects.exists()
    assert payment_calls == []
    assert client.session.get(CART_SESSION_KEY)  # the cart is kept


@pytest.mark.parametrize("msisdn", ["841234567", "+258 85 123 4567", "00258841234567", "258-84-123-4567"])
def test_phone_formats_are_normalised(client, payment_calls, msisdn):
    put_in_cart(client, {product_make().pk: 1})
    assert client.post(CHECKOUT, form_data(client, msisdn=msisdn)).status_code == 303
    assert Order.objects.get().msisdn[:5] in ("25884", "25885")


def test_missing_token_is_refused(client, payment_calls):
    put_in_cart(client, {product_make().pk: 1})
    response = client.post(CHECKOUT, form_data(client, checkout_token=""))
    assert response.status_code == 200
    assert not Order.objects.exists()


def test_double_submit_same_token_gives_one_order(client, payment_calls):
    p = product_make(stock=1)
    put_in_cart(client, {p.pk: 1})
    data = form_data(client)
    first = client.post(CHECKOUT, data)
    second = client.post(CHECKOUT, data)  # cart is empty now and stock is 0: still the same order page
    order = Order.objects.get()
    assert first.status_code == second.status_code == 303
    assert first["Location"] == second["Location"] == order.get_absolute_url()
    assert StockReservation.objects.count() == 1
    assert len(payment_calls) == 1


def test_double_submit_with_cart_still_in_session(client, payment_calls):
    """The second request was read before the first one saved the session (cart still there)."""
    p = product_make(stock=5)
    put_in_cart(client, {p.pk: 1})
    data = form_data(client)
    client.post(CHECKOUT, data)
    put_in_cart(client, {p.pk: 1})
    session = client.session
    session[SESSION_ORDERS_KEY] = []
    session.save()
    response = client.post(CHECKOUT, data)
    assert response.status_code == 303
    assert Order.objects.count() == 1


def test_out_of_stock_goes_back_to_cart_naming_product(client, payment_calls):
    p = product_make(stock=1, name="Caju piri-piri")
    put_in_cart(client, {p.pk: 2})
    response = client.post(CHECKOUT, form_data(client), follow=True)
    assert response.redirect_chain[0] == (reverse("cart:detail"), 302)
    assert "Caju piri-piri" in response.content.decode()
    assert "stock" in response.content.decode()
    assert not Order.objects.exists()
    assert payment_calls == []


def test_checkout_view_never_talks_to_mpesa(client, payment_calls, monkeypatch):
    import httpx

    def boom(*args, **kwargs):
        raise AssertionError("network call from the checkout view")

    monkeypatch.setattr(httpx.Client, "send", boom)
    monkeypatch.setattr(httpx.AsyncClient, "send", boom)
    put_in_cart(client, {product_make().pk: 1})
    assert client.post(CHECKOUT, form_data(client)).status_code == 303


def test_checkout_creates_the_first_attempt_with_the_order(client, payment_calls):
    put_in_cart(client, {product_make().pk: 1})
    response = client.post(CHECKOUT, form_data(client))
    order = Order.objects.get()
    assert response.status_code == 303
    attempt = order.payment_attempts.get()
    assert attempt.state == "queued" and attempt.amount == order.total and attempt.msisdn == "258841234567"
    assert order.payment_status == Order.PaymentStatus.PENDING
    assert [c["attempt"].pk for c in payment_calls] == [attempt.pk]  # queued once, after commit
