"""Order lines in the admin, read-only. The order page itself is the back office's (``kulipa.backoffice.admin``):
it shows the lines, the reservations and the payment timeline, and lets staff correct the contact details.

Payment and state fields of ``Order`` are ``editable=False`` on the model, so no ModelForm can contain them; the
back office lists them in ``readonly_fields`` so the admin only displays them. Orders are created by checkout
only (no "add"), never deleted here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from kulipa.orders.models import OrderLine


@admin.register(OrderLine)
class OrderLineAdmin(admin.ModelAdmin[OrderLine]):
    """Reachable by URL; not listed on the index (the lines are on their order's page)."""

    list_display = ("order_reference", "name", "price", "qty")
    search_fields = ("product_name",)
    fields = ("order_reference", "name", "price", "qty")
    readonly_fields = fields
    list_select_related = ("order",)

    @admin.display(description=_("encomenda"), ordering="order_id")
    def order_reference(self, obj: OrderLine) -> str:
        return obj.order.short_reference

    @admin.display(description=_("produto"), ordering="product_name")
    def name(self, obj: OrderLine) -> str:
        return obj.product_name

    @admin.display(description=_("preço unitário (MT)"), ordering="unit_price")
    def price(self, obj: OrderLine) -> Any:
        return obj.unit_price

    @admin.display(description=_("quantidade"), ordering="quantity")
    def qty(self, obj: OrderLine) -> int:
        return obj.quantity

    def get_model_perms(self, request: HttpRequest) -> dict[str, bool]:
        return {}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
