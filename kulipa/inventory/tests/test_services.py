from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.errors import OutOfStock
from kulipa.inventory.models import StockReservation
from kulipa.inventory.selectors import available_quantities
from kulipa.inventory.services import (
    CommitResult,
    reservations_commit,
    reservations_create,
    reservations_hold_until,
    reservations_purge_expired,
    reservations_release,
)
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import age, order_make, product_make

pytestmark = pytest.mark.django_db

State = StockReservation.State


def available(product: Product) -> int:
    return available_quantities(product_ids=[product.pk])[product.pk]


def commit(order: Order) -> CommitResult:
    """As order_mark_paid does: hold the order lock, then commit."""
    with transaction.atomic():
        Order.objects.select_for_update().get(pk=order.pk)
        return reservations_commit(order=order)


def test_create_reserves_and_counts_against_available():
    p = product_make(stock=5)
    order = order_make({p.pk: 2})
    (r,) = order.reservations.all()
    assert (r.product_id, r.quantity, r.state, r.expires_at) == (p.pk, 2, State.ACTIVE, order.expires_at)
    assert available(p) == 3
    p.refresh_from_db()
    assert p.stock_on_hand == 5  # nothing leaves the shelf until paid


def test_create_out_of_stock_names_every_short_product_and_reserves_nothing():
    a, b, c = product_make(stock=1, name="Caju"), product_make(stock=5), product_make(stock=0, name="Café")
    other = order_make({b.pk: 1})
    with pytest.raises(OutOfStock) as info, transaction.atomic():
        reservations_create(order=other, quantities={a.pk: 2, c.pk: 1}, expires_at=other.expires_at)
    assert info.value.product_ids == sorted([a.pk, c.pk])
    assert set(info.value.names) == {"Caju", "Café"}
    assert "Caju" in info.value.message
    assert other.reservations.count() == 1


@pytest.mark.django_db(transaction=True)
def test_create_requires_a_transaction():
    p = product_make()
    order = order_make({p.pk: 1})
    with pytest.raises(RuntimeError):
        reservations_create(order=order, quantities={p.pk: 1}, expires_at=order.expires_at)


def test_reservations_expire_lazily_without_any_job():
    p = product_make(stock=2)
    first = order_make({p.pk: 2})
    assert available(p) == 0
    with pytest.raises(OutOfStock):
        order_make({p.pk: 1})
    age(first)
    assert first.reservations.get().state == State.ACTIVE  # nobody tidied up
    assert available(p) == 2
    second = order_make({p.pk: 2})
    assert second.reservations.get().quantity == 2
    assert available(p) == 0


def test_hold_lengthens_and_shortens_live_reservations():
    p = product_make(stock=3)
    order = order_make({p.pk: 1})
    original = order.expires_at
    with transaction.atomic():
        assert reservations_hold_until(order=order, until=original - timedelta(minutes=5)) is True
    assert order.reservations.get().expires_at == original - timedelta(minutes=5)
    later = original + timedelta(minutes=3)
    with transaction.atomic():
        assert reservations_hold_until(order=order, until=later) is True
    assert order.reservations.get().expires_at == later


def test_hold_reacquires_a_lapsed_reservation_only_if_stock_is_there():
    p = product_make(stock=1)
    order = order_make({p.pk: 1})
    age(order)
    until = timezone.now() + timedelta(minutes=5)
    with transaction.atomic():
        assert reservations_hold_until(order=order, until=until) is True
    assert order.reservations.get().expires_at == until
    assert available(p) == 0

    age(order)
    order_make({p.pk: 1})  # someone else takes the unit meanwhile
    with transaction.atomic():
        assert reservations_hold_until(order=order, until=until + timedelta(minutes=1)) is False
    assert order.reservations.get().expires_at < timezone.now()  # not resurrected: no oversell
    assert available(p) == 0


def test_hold_ignores_released_reservations():
    p = product_make(stock=1)
    order = order_make({p.pk: 1})
    reservations_release(order=order)
    with transaction.atomic():
        reservations_hold_until(order=order, until=timezone.now() + timedelta(hours=1))
    assert order.reservations.get().state == State.RELEASED
    assert available(p) == 1


def test_commit_decrements_stock_and_is_idempotent():
    p = product_make(stock=5)
    order = order_make({p.pk: 2})
    assert commit(order) is CommitResult.COMMITTED
    p.refresh_from_db()
    assert p.stock_on_hand == 3
    assert order.reservations.get().state == State.COMMITTED
    assert available(p) == 3
    assert commit(order) is CommitResult.COMMITTED
    p.refresh_from_db()
    assert p.stock_on_hand == 3  # no second decrement


def test_commit_multi_product():
    a, b = product_make(stock=5), product_make(stock=2)
    order = order_make({b.pk: 2, a.pk: 1})
    assert commit(order) is CommitResult.COMMITTED
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.stock_on_hand, b.stock_on_hand) == (4, 0)


def test_commit_lapsed_with_stock_reacquires():
    p = product_make(stock=3)
    order = order_make({p.pk: 2})
    age(order)
    assert commit(order) is CommitResult.REACQUIRED
    p.refresh_from_db()
    assert p.stock_on_hand == 1
    assert order.reservations.get().state == State.COMMITTED
    assert commit(order) is CommitResult.COMMITTED
    p.refresh_from_db()
    assert p.stock_on_hand == 1


def test_commit_released_with_stock_reacquires():
    p = product_make(stock=3)
    order = order_make({p.pk: 2})
    reservations_release(order=order)
    assert commit(order) is CommitResult.REACQUIRED
    p.refresh_from_db()
    assert p.stock_on_hand == 1


def test_commit_lapsed_without_stock_changes_nothing():
    a, b = product_make(stock=5), product_make(stock=1)
    order = order_make({a.pk: 1, b.pk: 1})
    age(order)
    other = order_make({b.pk: 1})  # the last unit of b is now held by someone else
    assert commit(order) is CommitResult.OUT_OF_STOCK
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.stock_on_hand, b.stock_on_hand) == (5, 1)
    assert set(order.reservations.values_list("state", flat=True)) == {State.ACTIVE}
    assert other.reservations.get().state == State.ACTIVE


def test_commit_never_drives_stock_negative():
    p = product_make(stock=3)
    order = order_make({p.pk: 3})
    Product.objects.filter(pk=p.pk).update(stock_on_hand=1)  # staff counted the shelf again
    assert commit(order) is CommitResult.OUT_OF_STOCK
    p.refresh_from_db()
    assert p.stock_on_hand == 1
    assert order.reservations.get().state == State.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_commit_requires_a_transaction():
    p = product_make()
    order = order_make({p.pk: 1})
    with pytest.raises(RuntimeError):
        reservations_commit(order=order)


def test_release_is_idempotent_and_frees_stock():
    p = product_make(stock=2)
    order = order_make({p.pk: 2})
    assert reservations_release(order=order) == 1
    assert reservations_release(order=order) == 0
    assert available(p) == 2


def test_release_does_not_touch_committed():
    p = product_make(stock=2)
    order = order_make({p.pk: 1})
    commit(order)
    assert reservations_release(order=order) == 0
    assert order.reservations.get().state == State.COMMITTED


def test_purge_expired_leaves_orders_awaiting_payment_alone():
    p = product_make(stock=5)
    waiting, cancelled = order_make({p.pk: 1}), order_make({p.pk: 1})
    age(waiting)
    age(cancelled)
    Order.objects.filter(pk=cancelled.pk).update(status=Order.Status.CANCELLED)
    assert reservations_purge_expired() == 1
    assert cancelled.reservations.get().state == State.RELEASED
    assert waiting.reservations.get().state == State.ACTIVE
    assert reservations_purge_expired() == 0


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
@pytest.mark.django_db(transaction=True)
def test_sqlite_transactions_take_the_write_lock_at_begin():
    """BEGIN IMMEDIATE really is in effect: inside atomic(), before any write, another writer is locked out."""
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    path = connection.settings_dict["NAME"]
    assert path != ":memory:" and "mode=memory" not in str(path)  # threads share one file
    connection.ensure_connection()
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # free outside a transaction
        other.execute("ROLLBACK")
        with transaction.atomic():
            Product.objects.exists()  # a read only
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
