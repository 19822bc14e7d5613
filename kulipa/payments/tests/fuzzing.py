"""Helpers shared by the shop's fuzzers (``test_fuzz_*.py``, marked ``fuzz``): the example budget and a snapshot of
everything an invalid request must not change."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import settings

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order, OrderLine
from kulipa.payments.models import AttentionItem, CallbackDelivery, PaymentAttempt, PaymentEvent, Reversal


def scaled(factor: float) -> int:
    """``factor`` times the loaded profile's example budget (``ci`` or ``thorough``, see the root conftest.py)."""
    return max(5, int(settings().max_examples * factor))


@dataclass(frozen=True)
class World:
    """The rows money and stock depend on, as plain values; compare two with ``==`` (or :meth:`diff`)."""

    orders: tuple[Any, ...]
    order_lines: int
    attempts: tuple[Any, ...]
    events: int
    reservations: tuple[Any, ...]
    products: tuple[Any, ...]
    deliveries: tuple[tuple[str, int], ...]
    attention_items: int
    reversals: int

    def diff(self, other: World) -> dict[str, tuple[Any, Any]]:
        """The fields that differ, as (self, other): for a readable assertion message."""
        return {
            name: (getattr(self, name), getattr(other, name))
            for name in self.__dataclass_fields__
            if getattr(self, name) != getattr(other, name)
        }

    @property
    def accepted_deliveries(self) -> int:
        return sum(n for state, n in self.deliveries if state != CallbackDelivery.State.REJECTED)

    @property
    def rejected_deliveries(self) -> int:
        return dict(self.deliveries).get(CallbackDelivery.State.REJECTED, 0)


def world() -> World:
    """Orders, lines, payment attempts, events, reservations, stock and prices, callback deliveries by state,
    attention items and reversals, read now."""
    return World(
        orders=tuple(
            Order.objects.order_by("pk").values_list(
                "pk", "status", "payment_status", "total", "msisdn", "customer_name", "paid_at", "expires_at"
            )
        ),
        order_lines=OrderLine.objects.count(),
        attempts=tuple(
            PaymentAttempt.objects.order_by("pk").values_list(
                "pk", "state", "msisdn", "amount", "conversation_id", "transaction_id", "result_code", "finished_at"
            )
        ),
        events=PaymentEvent.objects.count(),
        reservations=tuple(
            StockReservation.objects.order_by("pk").values_list("pk", "product_id", "quantity", "state", "expires_at")
        ),
        products=tuple(Product.objects.order_by("pk").values_list("pk", "stock_on_hand", "price", "is_active")),
        deliveries=tuple(sorted(Counter(CallbackDelivery.objects.values_list("state", flat=True)).items())),
        attention_items=AttentionItem.objects.count(),
        reversals=Reversal.objects.count(),
    )
