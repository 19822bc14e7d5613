"""Read-only catalogue questions. Stock shown to customers always comes from
``kulipa.inventory.selectors.available_quantities`` (on hand minus live reservations)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from kulipa.catalog.models import Product
from kulipa.inventory.selectors import available_for


@dataclass(frozen=True)
class ProductStock:
    """A product with what a customer can still buy of it right now."""

    product: Product
    available: int

    @property
    def sold_out(self) -> bool:
        return self.available <= 0

    @property
    def max_orderable(self) -> int:
        """Largest quantity the add-to-cart form offers: stock, capped at ``settings.MAX_LINE_QUANTITY``."""
        return max(0, min(self.available, settings.MAX_LINE_QUANTITY))


def product_list_active() -> QuerySet[Product]:
    """Products customers may see and buy (``is_active``), by name."""
    return Product.objects.filter(is_active=True).order_by("name")


def product_stock_list(*, products: Iterable[Product]) -> list[ProductStock]:
    """Pair each product with its available quantity (one query for all of them: the rows' own stock on hand)."""
    items = list(products)
    available = available_for(products=items)
    return [ProductStock(product=p, available=available.get(p.id, 0)) for p in items]
