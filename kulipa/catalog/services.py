"""Catalogue writes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from kulipa.catalog.demo import DEMO_PRODUCTS
from kulipa.catalog.models import Product


@dataclass(frozen=True)
class DemoCatalogResult:
    created: int
    updated: int


def product_upsert(
    *, slug: str, name: str, description: str, price: Decimal, stock_on_hand: int, image: str = ""
) -> tuple[Product, bool]:
    """Create or update the product with ``slug`` (active); returns ``(product, created)``."""
    if not isinstance(price, Decimal):
        raise TypeError("price must be a Decimal")
    return Product.objects.update_or_create(
        slug=slug,
        defaults={
            "name": name,
            "description": description,
            "price": price,
            "stock_on_hand": stock_on_hand,
            "image": image,
            "is_active": True,
        },
    )


@transaction.atomic
def demo_catalog_load() -> DemoCatalogResult:
    """Load the demo products. Idempotent: running it again resets their name, price, stock and image."""
    created = 0
    for item in DEMO_PRODUCTS:
        _product, was_created = product_upsert(**item, image=f"catalog/{item['slug']}.svg")
        created += was_created
    return DemoCatalogResult(created=created, updated=len(DEMO_PRODUCTS) - created)
