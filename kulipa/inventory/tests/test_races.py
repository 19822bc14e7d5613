"""Real thread races (``transaction=True``) against the database under test: SQLite (BEGIN IMMEDIATE) or
PostgreSQL (SELECT … FOR UPDATE, ascending pk)."""

from __future__ import annotations

import pytest
from django.db import transaction

from kulipa.catalog.models import Product
from kulipa.inventory.errors import OutOfStock
from kulipa.inventory.models import StockReservation
from kulipa.inventory.selectors import available_quantities
from kulipa.inventory.services import CommitResult, reservations_commit
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import order_make, product_make, run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


def test_oversell_race_stock_3_ten_buyers():
    p = product_make(stock=3)
    n = 10
    results = run_concurrently(lambda i: order_make({p.pk: 1}, token=f"race-{i}"), n)
    ok = [v for kind, v in results if kind == "ok"]
    errors = [v for kind, v in results if kind == "error"]
    assert len(ok) == 3
    assert len(errors) == n - 3
    assert all(isinstance(e, OutOfStock) for e in errors), errors
    assert Order.objects.count() == 3
    assert StockReservation.objects.filter(product=p, state=StockReservation.State.ACTIVE).count() == 3
    assert available_quantities(product_ids=[p.pk])[p.pk] == 0
    p.refresh_from_db()
    assert p.stock_on_hand == 3


def test_multi_product_orders_in_opposite_orders_neither_deadlock_nor_oversell():
    a, b, c = product_make(stock=4), product_make(stock=4), product_make(stock=50)
    n = 12

    def buy(i: int) -> Order:
        # Half the threads list the products one way, half the other way round.
        quantities = {a.pk: 1, b.pk: 1, c.pk: 1} if i % 2 else {c.pk: 1, b.pk: 1, a.pk: 1}
        return order_make(quantities, token=f"multi-{i}")

    results = run_concurrently(buy, n)
    errors = [v for kind, v in results if kind == "error"]
    assert all(isinstance(e, OutOfStock) for e in errors), errors  # no deadlock, no lock timeout
    assert sum(kind == "ok" for kind, _ in results) == 4
    assert available_quantities(product_ids=[a.pk, b.pk, c.pk]) == {a.pk: 0, b.pk: 0, c.pk: 46}


def test_concurrent_commits_of_one_order_decrement_once():
    p = product_make(stock=5)
    order = order_make({p.pk: 2})

    def pay(_i: int) -> CommitResult:
        with transaction.atomic():
            Order.objects.select_for_update().get(pk=order.pk)  # the caller's lock (order_mark_paid)
            return reservations_commit(order=order)

    results = run_concurrently(pay, 4)
    assert [v for _, v in results] == [CommitResult.COMMITTED] * 4
    p.refresh_from_db()
    assert p.stock_on_hand == 3


def test_commits_of_different_orders_never_go_below_zero():
    p = product_make(stock=2)
    orders = [order_make({p.pk: 1}) for _ in range(2)]
    Product.objects.filter(pk=p.pk).update(stock_on_hand=1)  # one unit went missing from the shelf

    def pay(i: int) -> CommitResult:
        with transaction.atomic():
            Order.objects.select_for_update().get(pk=orders[i].pk)
            return reservations_commit(order=orders[i])

    results = sorted(v.value for _, v in run_concurrently(pay, 2))
    assert results == sorted([CommitResult.COMMITTED.value, CommitResult.OUT_OF_STOCK.value])
    p.refresh_from_db()
    assert p.stock_on_hand == 0
