from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.errors import OutOfStock
from kulipa.inventory.models import StockReservation
from kulipa.orders.errors import EmptyOrder, InvalidQuantity, OrderNotCancellable, OrderTooLarge, ProductUnavailable
from kulipa.orders.models import Order, OrderLine
from kulipa.orders.tests.factories import age, attempt_make, order_make, product_make
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services import order_cancel_unpaid as order_cancel
from kulipa.payments.services import orders_expire_due as order_expire_due

pytestmark = pytest.mark.django_db

State = StockReservation.State


def test_order_create_copies_db_prices_and_reserves(settings):
    a, b = product_make(price="150.50", stock=5, name="Caju"), product_make(price="20.00", stock=5)
    before = timezone.now()
    order = order_make({a.pk: 2, b.pk: 3}, session_key="abc")
    assert order.total == Decimal("361.00")
    assert order.status == Order.Status.AWAITING_PAYMENT
    assert order.payment_status == Order.PaymentStatus.NOT_STARTED
    assert order.session_key == "abc"
    assert order.user is None
    expected = before + timedelta(minutes=settings.RESERVATION_MINUTES)
    assert expected <= order.expires_at <= timezone.now() + timedelta(minutes=settings.RESERVATION_MINUTES)
    lines = {line.product_id: line for line in order.lines.all()}
    assert lines[a.pk].product_name == "Caju"
    assert (lines[a.pk].unit_price, lines[a.pk].quantity) == (Decimal("150.50"), 2)
    reservations = {r.product_id: r.quantity for r in order.reservations.filter(state=State.ACTIVE)}
    assert reservations == {a.pk: 2, b.pk: 3}
    # Later catalogue edits do not change the order.
    Product.objects.filter(pk=a.pk).update(price=Decimal("999.00"), name="Outro")
    line = OrderLine.objects.get(order=order, product=a)
    assert (line.product_name, line.unit_price) == ("Caju", Decimal("150.50"))


def test_order_create_sets_user(django_user_model):
    user = django_user_model.objects.create_user(email="ana@example.com", password="x")
    order = order_make({product_make().pk: 1}, user=user)
    assert order.user == user


@pytest.mark.parametrize("quantities", [{}, None])
def test_order_create_refuses_empty(quantities):
    with pytest.raises(EmptyOrder):
        order_make(quantities or {})


@pytest.mark.parametrize("qty", [0, -1, 21, True, "2"])
def test_order_create_refuses_bad_quantities(qty):
    p = product_make()
    with pytest.raises(InvalidQuantity):
        order_make({p.pk: qty})
    assert not Order.objects.exists()


def test_order_create_refuses_inactive_and_unknown_products():
    active, inactive = product_make(), product_make(active=False, name="Velho")
    with pytest.raises(ProductUnavailable) as info:
        order_make({active.pk: 1, inactive.pk: 1})
    assert info.value.product_ids == [inactive.pk]
    assert "Velho" in str(info.value)
    with pytest.raises(ProductUnavailable):
        order_make({active.pk: 1, 987654: 1})
    assert not Order.objects.exists()


def test_order_create_refuses_total_above_max(settings):
    settings.MAX_ORDER_TOTAL = Decimal("1000.00")
    p = product_make(price="600.00")
    assert order_make({p.pk: 1}).total == Decimal("600.00")
    with pytest.raises(OrderTooLarge):
        order_make({p.pk: 2})
    assert Order.objects.count() == 1


def test_order_create_out_of_stock_creates_nothing():
    a, b = product_make(stock=5), product_make(stock=1, name="Piri-piri")
    with pytest.raises(OutOfStock) as info:
        order_make({a.pk: 1, b.pk: 2})
    assert info.value.names == ["Piri-piri"]
    assert not Order.objects.exists()
    assert not OrderLine.objects.exists()
    assert not StockReservation.objects.exists()


def test_same_checkout_token_twice_returns_the_same_order():
    p = product_make(stock=1)
    first = order_make({p.pk: 1}, token="same-token-123456")
    second = order_make({p.pk: 1}, token="same-token-123456")  # stock is now 0: still no error
    assert second.pk == first.pk
    assert Order.objects.count() == 1
    assert StockReservation.objects.count() == 1


# --- expiry ------------------------------------------------------------------------------------------------


def test_expire_due_releases_and_is_idempotent():
    p = product_make(stock=2)
    due, fresh = order_make({p.pk: 1}), order_make({p.pk: 1})
    age(due)
    assert order_expire_due() == 1
    due.refresh_from_db()
    fresh.refresh_from_db()
    assert due.status == Order.Status.EXPIRED
    assert due.payment_status == Order.PaymentStatus.NOT_STARTED  # payment fields untouched
    assert due.reservations.get().state == State.RELEASED
    assert fresh.status == Order.Status.AWAITING_PAYMENT
    assert fresh.reservations.get().state == State.ACTIVE
    assert order_expire_due() == 0
    assert due.reservations.get().state == State.RELEASED


def test_expire_due_skips_orders_with_an_attempt_in_flight():
    p = product_make(stock=5)
    # Four customers (one push in flight per phone number).
    orders = {
        state: order_make({p.pk: 1}, msisdn=f"25884000010{i}") for i, state in enumerate(PaymentAttempt.IN_FLIGHT)
    }
    for state, order in orders.items():
        attempt_make(order=order, state=state)
        age(order)
    assert order_expire_due() == 0
    assert set(Order.objects.values_list("status", flat=True)) == {Order.Status.AWAITING_PAYMENT}
    # Once the attempt finished (failed), the order can expire.
    finished = orders[PaymentAttempt.State.QUEUED]
    PaymentAttempt.objects.filter(order=finished).update(state=PaymentAttempt.State.FAILED)
    assert order_expire_due() == 1
    finished.refresh_from_db()
    assert finished.status == Order.Status.EXPIRED


def test_expire_due_leaves_paid_orders_alone():
    p = product_make(stock=5)
    order = order_make({p.pk: 1})
    age(order)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.PAID)
    assert order_expire_due() == 0


def test_expire_due_accepts_now():
    p = product_make(stock=5)
    order = order_make({p.pk: 1})
    assert order_expire_due(now=order.expires_at - timedelta(seconds=1)) == 0
    assert order_expire_due(now=order.expires_at + timedelta(seconds=1)) == 1


# --- cancel ------------------------------------------------------------------------------------------------


def test_cancel_releases_stock_and_is_idempotent():
    p = product_make(stock=1)
    order = order_make({p.pk: 1})
    assert order_cancel(order=order) is True
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert order.reservations.get().state == State.RELEASED
    assert order_cancel(order=order) is False


def test_cancel_refused_with_attempt_in_flight_or_when_paid():
    p = product_make(stock=5)
    order = order_make({p.pk: 1})
    attempt_make(order=order)
    with pytest.raises(OrderNotCancellable):
        order_cancel(order=order)
    paid = order_make({p.pk: 1})
    Order.objects.filter(pk=paid.pk).update(status=Order.Status.PAID)
    with pytest.raises(OrderNotCancellable):
        order_cancel(order=paid)
