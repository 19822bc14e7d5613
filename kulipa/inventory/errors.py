"""Errors raised by ``kulipa.inventory.services``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.translation import gettext as _
from django.utils.translation import ngettext


@dataclass(frozen=True)
class Shortage:
    product_id: int
    name: str
    requested: int
    available: int


class OutOfStock(Exception):
    """Some requested quantities exceed what is available. Nothing was reserved.

    ``product_ids`` / ``names`` list the short products (ascending id); ``shortages`` has the details.
    ``message`` is a translated sentence for the customer naming them.
    """

    def __init__(self, shortages: Sequence[Shortage]) -> None:
        self.shortages = tuple(shortages)
        self.product_ids = [s.product_id for s in self.shortages]
        self.names = [s.name for s in self.shortages]
        super().__init__(", ".join(f"{s.name} (#{s.product_id}): {s.requested} > {s.available}" for s in shortages))

    @property
    def message(self) -> str:
        names = ", ".join(f"«{name}»" for name in self.names)
        return ngettext(
            "Já não há stock suficiente do produto %(names)s. Ajuste o carrinho e tente de novo.",
            "Já não há stock suficiente dos produtos %(names)s. Ajuste o carrinho e tente de novo.",
            len(self.names),
        ) % {"names": names}


class UnknownProduct(Exception):
    """A product id that does not exist was asked for."""

    def __init__(self, product_ids: Sequence[int]) -> None:
        self.product_ids = list(product_ids)
        super().__init__(_("Produto desconhecido: %(ids)s") % {"ids": self.product_ids})
