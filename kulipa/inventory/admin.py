"""Stock reservations are written only by ``kulipa.inventory.services``: the admin shows them, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from kulipa.inventory.models import StockReservation


@admin.register(StockReservation)
class StockReservationAdmin(admin.ModelAdmin[StockReservation]):
    list_display = ("order", "product", "quantity", "state", "expires_at", "created_at")
    list_filter = ("state",)
    search_fields = ("order__public_id", "product__name")
    list_select_related = ("order", "product")
    readonly_fields = ("order", "product", "quantity", "state", "expires_at", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
