"""The admin shows orders but cannot write payment or state fields."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import order_make, product_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser(email="admin@example.com", password="x")
    client.force_login(admin)
    return client


def inline_management(client, url):
    """The inline formsets' management and hidden fields as the change page renders them (whatever inlines other
    apps add, e.g. kulipa.payments' attempts and events)."""
    response = client.get(url)
    data = {}
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name, field in management.fields.items():
            data[management.add_prefix(name)] = management.initial.get(name, field.initial)
        for form in formset.forms:
            for field in form.hidden_fields():
                if field.value() is not None:
                    data[field.html_name] = field.value()
    return data


def test_admin_pages_render(staff_client):
    order = order_make({product_make().pk: 1})
    assert staff_client.get(reverse("admin:orders_order_changelist")).status_code == 200
    response = staff_client.get(reverse("admin:orders_order_change", args=[order.pk]))
    assert response.status_code == 200
    assert order.lines.get().product_name in response.content.decode()
    assert staff_client.get(reverse("admin:inventory_stockreservation_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:orders_orderline_changelist")).status_code == 200
    r = StockReservation.objects.get()
    assert staff_client.get(reverse("admin:inventory_stockreservation_change", args=[r.pk])).status_code == 200


def test_admin_post_cannot_change_payment_fields(staff_client):
    order = order_make({product_make(price="250.00").pk: 2})
    url = reverse("admin:orders_order_change", args=[order.pk])
    data = {
        "customer_name": "Nome corrigido",
        "email": "novo@example.com",
        "delivery_address": "Rua nova",
        # Attempts to write what only kulipa.payments may write:
        "total": "1.00",
        "status": Order.Status.PAID,
        "payment_status": Order.PaymentStatus.PAID,
        "paid_at_0": "2026-01-01",
        "paid_at_1": "10:00:00",
        "paid_at": "2026-01-01 10:00:00",
        "paid_amount": "500.00",
        "mpesa_transaction_id": "FAKE123",
        "attention_reason": "x",
        "msisdn": "258851111111",
        "expires_at": "2099-01-01 00:00:00",
        "_save": "Save",
        **inline_management(staff_client, url),
    }
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    fresh = Order.objects.get(pk=order.pk)
    assert fresh.customer_name == "Nome corrigido"  # the save did happen
    assert fresh.total == Decimal("500.00")
    assert fresh.status == Order.Status.AWAITING_PAYMENT
    assert fresh.payment_status == Order.PaymentStatus.NOT_STARTED
    assert fresh.paid_at is None
    assert fresh.paid_amount is None
    assert fresh.mpesa_transaction_id == ""
    assert fresh.attention_reason == ""
    assert fresh.msisdn == order.msisdn
    assert fresh.expires_at == order.expires_at


def test_admin_cannot_add_or_delete_orders_or_touch_reservations(staff_client):
    order = order_make({product_make().pk: 1})
    assert staff_client.get(reverse("admin:orders_order_add")).status_code == 403
    assert staff_client.post(reverse("admin:orders_order_delete", args=[order.pk]), {"post": "yes"}).status_code == 403
    r = StockReservation.objects.get()
    url = reverse("admin:inventory_stockreservation_change", args=[r.pk])
    staff_client.post(url, {"state": "released", "quantity": "9"})
    r.refresh_from_db()
    assert (r.state, r.quantity) == (StockReservation.State.ACTIVE, 1)
    assert Order.objects.filter(pk=order.pk).exists()


def test_payment_fields_are_not_editable_on_the_model():
    for name in ("total", "status", "payment_status", "paid_at", "paid_amount", "mpesa_transaction_id"):
        assert Order._meta.get_field(name).editable is False
