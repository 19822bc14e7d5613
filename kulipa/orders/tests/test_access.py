"""Who sees which order: the order page (orders:detail) and the history page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from kulipa.orders.selectors import SESSION_ORDERS_KEY
from kulipa.orders.tests.factories import order_make, product_make

pytestmark = pytest.mark.django_db

HISTORY = "/conta/encomendas/"


@pytest.fixture
def ana(django_user_model):
    return django_user_model.objects.create_user(email="ana@example.com", password="x")


@pytest.fixture
def bento(django_user_model):
    return django_user_model.objects.create_user(email="bento@example.com", password="x")


def test_another_customers_order_is_404(client, ana, bento):
    order = order_make({product_make().pk: 1}, user=ana)
    url = order.get_absolute_url()
    assert client.get(url).status_code == 404  # guest with the link
    client.force_login(bento)
    assert client.get(url).status_code == 404
    client.force_login(ana)
    assert client.get(url).status_code == 200


def test_unknown_order_is_404(client):
    assert client.get(reverse("orders:detail", kwargs={"public_id": "nope"})).status_code == 404


def test_guest_order_is_visible_with_its_link(client):
    order = order_make({product_make().pk: 1})
    assert client.get(order.get_absolute_url()).status_code == 200


def test_history_lists_only_own_orders_newest_first(client, ana, bento):
    p = product_make(stock=20)
    older, newer = order_make({p.pk: 1}, user=ana), order_make({p.pk: 2}, user=ana)
    foreign = order_make({p.pk: 1}, user=bento)
    guest = order_make({p.pk: 1})
    client.force_login(ana)
    response = client.get(HISTORY)
    assert response.status_code == 200
    assert [o.pk for o in response.context["orders"]] == [newer.pk, older.pk]
    html = response.content.decode()
    assert newer.get_absolute_url() in html
    assert foreign.get_absolute_url() not in html
    assert guest.get_absolute_url() not in html
    assert newer.short_reference in html


def test_guest_history_shows_orders_from_this_device_only(client, ana):
    p = product_make(stock=20)
    mine = order_make({p.pk: 1})
    not_mine = order_make({p.pk: 1})
    accounts = order_make({p.pk: 1}, user=ana)
    session = client.session
    session[SESSION_ORDERS_KEY] = [mine.public_id, accounts.public_id]  # an account's order never leaks
    session.save()
    response = client.get(HISTORY)
    assert response.status_code == 200
    assert [o.pk for o in response.context["orders"]] == [mine.pk]
    assert not_mine.get_absolute_url() not in response.content.decode()
    assert reverse("accounts:login") in response.content.decode()


def test_guest_history_empty(client):
    response = client.get(HISTORY)
    assert response.status_code == 200
    assert list(response.context["orders"]) == []
