from __future__ import annotations

from decimal import Decimal
from itertools import count
from typing import Any

from kulipa.catalog.models import Product

_seq = count(1)


def make_product(**overrides: Any) -> Product:
    n = next(_seq)
    values: dict[str, Any] = {
        "name": f"Produto {n}",
        "slug": f"produto-{n}",
        "price": Decimal("100.00"),
        "stock_on_hand": 10,
        "is_active": True,
    }
    values.update(overrides)
    return Product.objects.create(**values)
