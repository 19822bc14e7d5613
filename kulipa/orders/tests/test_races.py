"""Thread races on orders (``transaction=True``): double submit and concurrent expiry jobs."""

from __future__ import annotations

import pytest

from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order, OrderLine
from kulipa.orders.tests.factories import age, order_make, product_make, run_concurrently
from kulipa.payments.services import orders_expire_due as order_expire_due

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("threads", [2, 6])
def test_concurrent_double_submit_creates_one_order(threads):
    a, b = product_make(stock=10), product_make(stock=10)
    results = run_concurrently(lambda _i: order_make({a.pk: 1, b.pk: 2}, token="double-click-token-1"), threads)
    assert all(kind == "ok" for kind, _ in results), results
    assert len({order.pk for _, order in results}) == 1
    assert Order.objects.count() == 1
    assert OrderLine.objects.count() == 2
    assert StockReservation.objects.count() == 2


def test_concurrent_expiry_jobs_expire_each_order_once():
    p = product_make(stock=20)
    orders = [order_make({p.pk: 1}) for _ in range(6)]
    for order in orders:
        age(order)
    results = run_concurrently(lambda _i: order_expire_due(), 4)
    assert all(kind == "ok" for kind, _ in results), results
    assert sum(v for _, v in results) == 6
    assert set(Order.objects.values_list("status", flat=True)) == {Order.Status.EXPIRED}
    assert set(StockReservation.objects.values_list("state", flat=True)) == {StockReservation.State.RELEASED}
