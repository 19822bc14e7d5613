"""The checkout benchmark's database side, run as a child with the stack's environment:
``python -m benchmarks.checkout_db seed STOCK`` or ``... stats``; prints one JSON document.

``seed``: the demo catalogue (``demo_catalog_load``), every active product's stock set to ``STOCK``.
``stats``: orders, attempts by state, and per product units sold (COMMITTED reservations), units held (ACTIVE
reservations, expired or not) and stock on hand, with the units oversold: sold + held above the initial stock.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.floor.settings")
    import django

    django.setup()


def seed(stock: int) -> dict[str, Any]:
    from kulipa.catalog.models import Product
    from kulipa.catalog.services import demo_catalog_load

    demo_catalog_load()
    updated = Product.objects.filter(is_active=True).update(stock_on_hand=stock)
    from django.conf import settings

    limits = {name: getattr(settings, name) for name in dir(settings) if name.startswith("LIMIT_")}
    return {"products": updated, "stock_each": stock, "limits": limits}


def stats(initial: int) -> dict[str, Any]:
    from django.db.models import Count, Sum

    from benchmarks.floor.models import Hit
    from kulipa.catalog.models import Product
    from kulipa.inventory.models import StockReservation
    from kulipa.orders.models import Order
    from kulipa.payments.models import PaymentAttempt

    attempts = dict(PaymentAttempt.objects.values_list("state").annotate(n=Count("id")).order_by())
    orders = dict(Order.objects.values_list("status").annotate(n=Count("id")).order_by())
    by_product: dict[int, dict[str, int]] = {}
    rows = StockReservation.objects.values_list("product_id", "state").annotate(units=Sum("quantity")).order_by()
    for product_id, state, units in rows:
        by_product.setdefault(product_id, {})[state] = units or 0
    oversold = 0
    stock_mismatch = 0
    sold_total = held_total = 0
    for product in Product.objects.filter(is_active=True):
        states = by_product.get(product.pk, {})
        sold = states.get(StockReservation.State.COMMITTED, 0)
        held = states.get(StockReservation.State.ACTIVE, 0)
        sold_total += sold
        held_total += held
        oversold += max(0, sold + held - initial)
        stock_mismatch += abs(initial - sold - product.stock_on_hand)
    return {
        "orders": sum(orders.values()),
        "orders_by_status": orders,
        "attempts": sum(attempts.values()),
        "attempts_by_state": attempts,
        "units_sold": sold_total,
        "units_held": held_total,
        "units_oversold": oversold,
        "stock_on_hand_mismatch": stock_mismatch,
        "floor_rows": Hit.objects.count(),
    }


def main() -> None:
    _setup()
    command, number = sys.argv[1], int(sys.argv[2])
    result = seed(number) if command == "seed" else stats(number)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
