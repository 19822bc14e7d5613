"""Admin for orders. Staff may correct the customer's contact details; nothing else is writable here.

Payment and state fields (total, status, payment_status, paid_at, paid_amount, mpesa_transaction_id, ...) are
``editable=False`` on the model, so no ModelForm can contain them, and they are listed in ``readonly_fields``
so the admin only displays them. Orders are created by checkout only (no "add"), never deleted here.

Extending (``kulipa.payments.admin``): subclass and re-register, keeping these inlines::

    from kulipa.orders.admin import OrderAdmin

    admin.site.unregister(Order)

    @admin.register(Order)
    class PaymentsOrderAdmin(OrderAdmin):
        inlines = [*OrderAdmin.inlines, PaymentAttemptInline, PaymentEventInline]
        actions = [...]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponseBase

from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order, OrderLine

PAYMENT_FIELDS = (
    "total",
    "status",
    "payment_status",
    "paid_at",
    "paid_amount",
    "mpesa_transaction_id",
    "attention_reason",
)


_ChildModelT = TypeVar("_ChildModelT", bound=Model)

OrderAction: TypeAlias = Callable[["OrderAdmin", HttpRequest, QuerySet[Order]], HttpResponseBase | None]


class ReadOnlyInline(admin.TabularInline[_ChildModelT, Order]):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrderLineInline(ReadOnlyInline[OrderLine]):
    model = OrderLine
    fields = ("product", "product_name", "unit_price", "quantity", "line_total")
    readonly_fields = fields


class StockReservationInline(ReadOnlyInline[StockReservation]):
    model = StockReservation
    fields = ("product", "quantity", "state", "expires_at", "updated_at")
    readonly_fields = fields


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin[Order]):
    list_display = ("short_reference", "customer_name", "total", "status", "payment_status", "created_at")
    list_filter = ("status", "payment_status", "created_at")
    search_fields = ("public_id", "customer_name", "msisdn", "email", "mpesa_transaction_id")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    inlines = [OrderLineInline, StockReservationInline]
    # None of its own; declared here (as Django's default) so that subclasses can extend it by class access.
    actions: Sequence[OrderAction | str] | None = ()
    fields = (
        "public_id",
        "user",
        "customer_name",
        "msisdn",
        "email",
        "delivery_address",
        *PAYMENT_FIELDS,
        "expires_at",
        "checkout_token",
        "session_key",
        "created_at",
        "updated_at",
    )
    # Everything but the contact details is read-only (the payment fields are also editable=False).
    readonly_fields = (
        "public_id",
        "user",
        "msisdn",
        *PAYMENT_FIELDS,
        "expires_at",
        "checkout_token",
        "session_key",
        "created_at",
        "updated_at",
    )

    @admin.display(description="ref.", ordering="pk")
    def short_reference(self, obj: Order) -> str:
        return obj.short_reference

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(OrderLine)
class OrderLineAdmin(admin.ModelAdmin[OrderLine]):
    list_display = ("order", "product_name", "unit_price", "quantity")
    search_fields = ("product_name", "order__public_id")
    readonly_fields = ("order", "product", "product_name", "unit_price", "quantity")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
