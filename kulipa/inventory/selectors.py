"""Read-only stock questions. Writes live in ``kulipa.inventory.services``."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Sum
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation


def reserved_quantities(*, product_ids: Iterable[int], exclude_order_id: int | None = None) -> dict[int, int]:
    """Units held by live (active, unexpired) reservations, per product id."""
    rows = StockReservation.objects.filter(
        product_id__in=list(product_ids),
        state=StockReservation.State.ACTIVE,
        expires_at__gt=timezone.now(),
    )
    if exclude_order_id is not None:
        rows = rows.exclude(order_id=exclude_order_id)
    return {row["product_id"]: row["total"] for row in rows.values("product_id").annotate(total=Sum("quantity"))}


def available_quantities(*, product_ids: Iterable[int]) -> dict[int, int]:
    """What a customer can still buy, per product id: on hand minus live reservations, never below zero."""
    ids = list(product_ids)
    on_hand = dict(Product.objects.filter(id__in=ids).values_list("id", "stock_on_hand"))
    reserved = reserved_quantities(product_ids=ids)
    return {pid: max(0, on_hand[pid] - reserved.get(pid, 0)) for pid in on_hand}


def available_for(*, products: Iterable[Product]) -> dict[int, int]:
    """:func:`available_quantities` of product rows the caller has just read: their ``stock_on_hand`` as read, so
    one query (the live reservations) instead of two. As advisory as the other: the checkout's locked rows
    decide."""
    rows = list(products)
    reserved = reserved_quantities(product_ids=[p.pk for p in rows])
    return {p.pk: max(0, p.stock_on_hand - reserved.get(p.pk, 0)) for p in rows}
