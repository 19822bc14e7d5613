"""What the checkout page showed, so that the order placed (and the amount pushed to M-Pesa) is the one the
customer confirmed.

The page carries a signed snapshot of its lines and total. On submit the snapshot is compared with the cart as
it is now (see the checkout view) and, authoritatively, with the locked product rows inside ``order_create``;
any difference means the page is shown again with what changed, and nothing is created.

Public API::

    from kulipa.orders.snapshot import (
        CheckoutSnapshot, SnapshotLine, snapshot_build, snapshot_changes, snapshot_current,
        snapshot_from_cart, snapshot_load, snapshot_sign,
    )

    snapshot_from_cart(cart) -> CheckoutSnapshot             # the lines the page shows (active products)
    snapshot_current(quantities=...) -> CheckoutSnapshot     # reads the DB; inactive/deleted → not for sale
    snapshot_build(quantities=..., products=...)             # pure: the same from product rows you already have
    snapshot_sign(snapshot) -> str                           # for the hidden form field
    snapshot_load(signed) -> CheckoutSnapshot | None         # None: forged, expired or malformed
    snapshot_changes(confirmed=..., current=...) -> list[str]  # translated sentences; [] = nothing changed

The snapshot never sets a price: prices always come from the database, the snapshot is only compared with them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.utils.translation import gettext as _

from kulipa.catalog.models import Product
from kulipa.core.money import format_mzn

if TYPE_CHECKING:
    from kulipa.cart.services import Cart

SALT = "kulipa.checkout.snapshot"
MAX_AGE = timedelta(days=1)
_VERSION = 1


@dataclass(frozen=True)
class SnapshotLine:
    product_id: int
    name: str
    unit_price: Decimal
    quantity: int
    # False only in a snapshot of the cart as it is now: the product was deactivated or deleted (a deleted one
    # has no name and a zero price). A snapshot shown to the customer (and so signed) has only True.
    for_sale: bool = True

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class CheckoutSnapshot:
    lines: tuple[SnapshotLine, ...]
    total: Decimal  # sum of the line totals of the lines for sale

    @property
    def quantities(self) -> dict[int, int]:
        """``{product id: quantity}`` in line order (what ``order_create`` is asked to buy)."""
        return {line.product_id: line.quantity for line in self.lines}


def _total(lines: tuple[SnapshotLine, ...]) -> Decimal:
    return sum((line.line_total for line in lines if line.for_sale), Decimal("0.00"))


def snapshot_build(*, quantities: Mapping[int, int], products: Mapping[int, Product]) -> CheckoutSnapshot:
    """The snapshot of ``quantities`` priced from ``products`` (e.g. rows locked by ``order_create``).

    Pure. A product missing from ``products`` or inactive gives a line that is not for sale.
    """
    lines = []
    for pid, qty in quantities.items():
        product = products.get(pid)
        if product is None:
            lines.append(
                SnapshotLine(product_id=pid, name="", unit_price=Decimal("0.00"), quantity=qty, for_sale=False)
            )
        else:
            lines.append(
                SnapshotLine(
                    product_id=pid,
                    name=product.name,
                    unit_price=product.price,
                    quantity=qty,
                    for_sale=bool(product.is_active),
                )
            )
    frozen = tuple(lines)
    return CheckoutSnapshot(lines=frozen, total=_total(frozen))


def snapshot_current(*, quantities: Mapping[int, int]) -> CheckoutSnapshot:
    """The snapshot of ``quantities`` (e.g. the session's cart, read before ``Cart.lines()`` drops anything)
    at today's database prices; deactivated or deleted products show up as lines not for sale."""
    products = Product.objects.filter(pk__in=list(quantities)).in_bulk()
    return snapshot_build(quantities=quantities, products=products)


def snapshot_from_cart(cart: Cart) -> CheckoutSnapshot:
    """The lines and total the checkout page shows (``Cart.lines()``: active products, database prices)."""
    lines = tuple(
        SnapshotLine(
            product_id=line.product.id, name=line.product.name, unit_price=line.unit_price, quantity=line.quantity
        )
        for line in cart.lines()
    )
    return CheckoutSnapshot(lines=lines, total=_total(lines))


def _money(value: Decimal) -> str:
    return format(value, "f")


def snapshot_sign(snapshot: CheckoutSnapshot) -> str:
    """A compact, signed (not encrypted) string for the checkout form. Raises ``ValueError`` for a line not
    for sale: the page never offers one."""
    if not all(line.for_sale for line in snapshot.lines):
        raise ValueError("a checkout snapshot to sign has only lines for sale")
    payload = {
        "v": _VERSION,
        "l": [[line.product_id, line.name, _money(line.unit_price), line.quantity] for line in snapshot.lines],
        "t": _money(snapshot.total),
    }
    return signing.dumps(payload, salt=SALT, compress=True)


def _decimal(value: Any) -> Decimal | None:
    if not isinstance(value, str):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def snapshot_load(signed: str) -> CheckoutSnapshot | None:
    """The snapshot :func:`snapshot_sign` made, or None when the signature is wrong, it is older than
    ``MAX_AGE`` or its content is not a snapshot. Never raises for anything a client can send."""
    if not signed or not isinstance(signed, str):
        return None
    try:
        data = signing.loads(signed, salt=SALT, max_age=MAX_AGE)
    except (signing.BadSignature, ValueError, TypeError, zlib.error):  # SignatureExpired is a BadSignature
        return None
    if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("l"), list):
        return None
    total = _decimal(data.get("t"))
    if total is None:
        return None
    lines: list[SnapshotLine] = []
    for item in data["l"]:
        if not isinstance(item, list) or len(item) != 4:
            return None
        pid, name, raw_price, qty = item
        price = _decimal(raw_price)
        if not _is_int(pid) or not isinstance(name, str) or price is None or not _is_int(qty):
            return None
        lines.append(SnapshotLine(product_id=pid, name=name, unit_price=price, quantity=qty))
    if len({line.product_id for line in lines}) != len(lines):
        return None
    return CheckoutSnapshot(lines=tuple(lines), total=total)


def _gone_text(name: str) -> str:
    if not name:
        return _("Um produto do carrinho já não está à venda.")
    return _("«%(name)s» já não está à venda.") % {"name": name}


def snapshot_changes(*, confirmed: CheckoutSnapshot, current: CheckoutSnapshot) -> list[str]:
    """What differs between the page the customer confirmed and the cart/prices now, as translated sentences
    for the customer, in the confirmed lines' order, then products added, then the total. Empty: nothing.

    Compared per product: price, quantity, still for sale, added or removed. A renamed product is not a
    change (the sentences use the name the customer saw). A line not for sale on both sides is not a change
    either (``order_create`` refuses it as unavailable).
    """
    changes: list[str] = []
    now = {line.product_id: line for line in current.lines}
    for seen in confirmed.lines:
        line = now.get(seen.product_id)
        name = seen.name or (line.name if line is not None else "")
        if line is None:
            changes.append(_("Produto retirado do carrinho: «%(name)s».") % {"name": name})
        elif not line.for_sale:
            if seen.for_sale:
                changes.append(_gone_text(name))
        elif not seen.for_sale:
            changes.append(
                _("Produto adicionado ao carrinho: %(quantity)s × «%(name)s».")
                % {"quantity": line.quantity, "name": line.name}
            )
        else:
            if line.unit_price != seen.unit_price:
                changes.append(
                    _("Preço de «%(name)s» mudou de %(old)s para %(new)s.")
                    % {"name": name, "old": format_mzn(seen.unit_price), "new": format_mzn(line.unit_price)}
                )
            if line.quantity != seen.quantity:
                changes.append(
                    _("Quantidade de «%(name)s» mudou de %(old)s para %(new)s.")
                    % {"name": name, "old": seen.quantity, "new": line.quantity}
                )
    confirmed_ids = {line.product_id for line in confirmed.lines}
    for line in current.lines:
        if line.product_id in confirmed_ids:
            continue
        if line.for_sale:
            changes.append(
                _("Produto adicionado ao carrinho: %(quantity)s × «%(name)s».")
                % {"quantity": line.quantity, "name": line.name}
            )
        else:
            changes.append(_gone_text(line.name))
    if current.total != confirmed.total:
        changes.append(
            _("O total mudou de %(old)s para %(new)s.")
            % {"old": format_mzn(confirmed.total), "new": format_mzn(current.total)}
        )
    return changes
