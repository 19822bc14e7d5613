"""The shopping cart, kept in the session (guests and logged-in customers alike).

Public API (used by checkout in ``kulipa.orders``)::

    from kulipa.cart.services import Cart, CartError, CartLine, cart_from_request

    cart = cart_from_request(request)      # or Cart(session=request.session)
    cart.add(product_id, quantity=1)       # raises CartError, cart unchanged
    cart.set(product_id, quantity)         # raises CartError, cart unchanged
    cart.remove(product_id)                # no error if absent
    cart.clear()                           # e.g. after the order is placed
    cart.lines() -> list[CartLine]         # product, quantity, unit_price, line_total, available
    cart.total() -> Decimal                # sum of line totals, prices read from the database now
    cart.as_quantities() -> dict[int, int] # product id -> quantity, active products only
    cart.session_quantities()              # product id -> quantity as stored, deactivated/deleted ones too
    len(cart)                              # number of units (shown in the header), no database query
    cart.is_empty                          # True when there are no lines

The session stores only ``{"<product id>": quantity}`` under ``SESSION_KEY``; prices, names and stock are
always read from the database, so a changed price shows up in the cart at once and nothing the browser sends
can change a price. Lines whose product was deleted or deactivated are dropped when the cart is read.

Django's ``login()`` keeps session data (it only cycles the key), so the cart survives logging in;
``logout()`` flushes the session and so empties the cart.

Stock is checked when adding/updating (``quantity <= available``), but that is advice only: the authoritative
check is the stock reservation made at checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from kulipa.catalog.models import Product
from kulipa.inventory.selectors import available_for

SESSION_KEY = "cart"


class CartError(ValueError):
    """A cart change was refused; ``str(error)`` is a translated message for the customer."""


@dataclass(frozen=True)
class CartLine:
    product: Product
    quantity: int
    unit_price: Decimal
    line_total: Decimal
    available: int

    @property
    def exceeds_stock(self) -> bool:
        """More in the cart than can be bought now (someone else bought or reserved units meanwhile)."""
        return self.quantity > self.available

    @property
    def max_quantity(self) -> int:
        """Largest quantity the quantity input allows for this line."""
        return max(1, min(max(self.available, self.quantity), settings.MAX_LINE_QUANTITY))


def _max_line_quantity() -> int:
    return int(settings.MAX_LINE_QUANTITY)


class Cart:
    """A cart backed by a session. Every change is validated first; a refused change leaves it untouched."""

    def __init__(self, *, session: SessionBase) -> None:
        self.session = session
        self._lines: list[CartLine] | None = None

    # --- reading ------------------------------------------------------------------------------------------
    def _stored(self) -> dict[int, int]:
        """The session's ``{product id: quantity}``, ignoring anything malformed."""
        raw: Any = self.session.get(SESSION_KEY, {})
        result: dict[int, int] = {}
        if not isinstance(raw, dict):
            return result
        for key, value in raw.items():
            try:
                pid, qty = int(key), int(value)
            except (TypeError, ValueError):
                continue
            if pid > 0 and qty > 0:
                result[pid] = qty
        return result

    def _save(self, quantities: dict[int, int]) -> None:
        self.session[SESSION_KEY] = {str(pid): qty for pid, qty in quantities.items()}
        self.session.modified = True
        self._lines = None

    def __len__(self) -> int:
        """Number of units in the cart (not lines), read from the session only."""
        return sum(self._stored().values())

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, int) and product_id in self._stored()

    @property
    def is_empty(self) -> bool:
        return not self.lines()

    def lines(self) -> list[CartLine]:
        """The cart's lines in the order they were added, with current prices and available stock."""
        if self._lines is not None:
            return self._lines
        stored = self._stored()
        products = Product.objects.filter(id__in=stored, is_active=True).in_bulk()
        if set(products) != set(stored):  # deleted or deactivated meanwhile: drop them
            stored = {pid: qty for pid, qty in stored.items() if pid in products}
            self._save(stored)
        available = available_for(products=[products[pid] for pid in stored])
        self._lines = [
            CartLine(
                product=products[pid],
                quantity=qty,
                unit_price=products[pid].price,
                line_total=products[pid].price * qty,
                available=available.get(pid, 0),
            )
            for pid, qty in stored.items()
        ]
        return self._lines

    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines()), Decimal("0.00"))

    def as_quantities(self) -> dict[int, int]:
        """``{product id: quantity}`` for the lines that can be ordered (active products)."""
        return {line.product.id: line.quantity for line in self.lines()}

    def session_quantities(self) -> dict[int, int]:
        """``{product id: quantity}`` as the session holds it, without reading the database: products deleted or
        deactivated since are still there (until :meth:`lines` drops them). Checkout compares this with what
        its page showed, so that a product that stopped being for sale counts as a change."""
        return self._stored()

    # --- writing ------------------------------------------------------------------------------------------
    def add(self, product_id: int, quantity: int = 1) -> CartLine:
        """Add ``quantity`` units (to an existing line, if any). Returns the resulting line."""
        self._check_quantity(quantity)
        stored = self._stored()
        product = self._get_product(product_id)
        new_quantity = stored.get(product.id, 0) + quantity
        if new_quantity > _max_line_quantity():
            raise CartError(
                _("Pode comprar no máximo %(max)s unidades de «%(name)s» por encomenda.")
                % {"max": _max_line_quantity(), "name": product.name}
            )
        available = self._check_stock(product, new_quantity)
        stored[product.id] = new_quantity
        self._save(stored)
        return self._line(product, new_quantity, available)

    def set(self, product_id: int, quantity: int) -> CartLine:
        """Set a line's quantity (adds the line if absent). Use :meth:`remove` to delete a line."""
        self._check_quantity(quantity)
        product = self._get_product(product_id)
        available = self._check_stock(product, quantity)
        stored = self._stored()
        stored[product.id] = quantity
        self._save(stored)
        return self._line(product, quantity, available)

    def remove(self, product_id: int) -> None:
        stored = self._stored()
        if stored.pop(product_id, None) is not None:
            self._save(stored)

    def clear(self) -> None:
        self.session.pop(SESSION_KEY, None)
        self.session.modified = True
        self._lines = None

    # --- helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def _line(product: Product, quantity: int, available: int) -> CartLine:
        """The line just written, from the product row and stock already read (no second read of them)."""
        return CartLine(
            product=product,
            quantity=quantity,
            unit_price=product.price,
            line_total=product.price * quantity,
            available=available,
        )

    @staticmethod
    def _check_quantity(quantity: int) -> None:
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise CartError(_("A quantidade tem de ser um número inteiro."))
        if quantity < 1:
            raise CartError(_("A quantidade tem de ser pelo menos 1."))
        if quantity > _max_line_quantity():
            raise CartError(_("A quantidade máxima por produto é %(max)s.") % {"max": _max_line_quantity()})

    @staticmethod
    def _get_product(product_id: int) -> Product:
        if isinstance(product_id, bool) or not isinstance(product_id, int):
            raise CartError(_("Este produto não existe ou já não está à venda."))
        product = Product.objects.filter(id=product_id, is_active=True).first()
        if product is None:
            raise CartError(_("Este produto não existe ou já não está à venda."))
        return product

    @staticmethod
    def _check_stock(product: Product, quantity: int) -> int:
        """Refuse ``quantity`` above what is available; returns what is available."""
        available = available_for(products=[product]).get(product.id, 0)
        if available <= 0:
            raise CartError(_("«%(name)s» está esgotado.") % {"name": product.name})
        if quantity > available:
            raise CartError(
                ngettext(
                    "Só há %(count)s unidade disponível de «%(name)s».",
                    "Só há %(count)s unidades disponíveis de «%(name)s».",
                    available,
                )
                % {"count": available, "name": product.name}
            )
        return available


def cart_from_request(request: HttpRequest) -> Cart:
    """The cart of this visitor (needs ``SessionMiddleware``)."""
    return Cart(session=request.session)
