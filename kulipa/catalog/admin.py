from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from kulipa.catalog.models import Product
from kulipa.inventory.selectors import available_quantities


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin[Product]):
    list_display = ("name", "price", "stock_on_hand", "available", "is_active", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "slug", "description")
    prepopulated_fields = {"slug": ("name",)}
    list_editable = ("is_active",)
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description=_("disponível"))
    def available(self, obj: Product) -> int:
        """On hand minus live reservations (what customers see)."""
        return available_quantities(product_ids=[obj.id]).get(obj.id, 0)
