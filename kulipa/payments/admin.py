"""Payments in the admin: everything read-only. Events are append-only (no change or delete permission).

The order admin (``kulipa.orders.admin.OrderAdmin``) is re-registered here with the payment inlines and two
actions that queue work (the admin never calls M-Pesa itself): "recheck status" and "reverse payment".
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kulipa.orders.admin import OrderAdmin
from kulipa.orders.models import Order
from kulipa.payments import services, tasks
from kulipa.payments.models import AttentionItem, CallbackDelivery, PaymentAttempt, PaymentEvent, Reversal


class _ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


ATTEMPT_FIELDS = (
    "third_party_reference",
    "state",
    "masked_msisdn",
    "amount",
    "mode",
    "result_code",
    "result_description",
    "conversation_id",
    "transaction_id",
    "push_started_at",
    "push_deadline",
    "finished_at",
    "next_check_at",
    "check_count",
    "pays_order",
    "created_at",
)


class _MaskedMsisdn:
    """The ``"masked_msisdn"`` column (the full number is never shown)."""

    @admin.display(description=gettext_lazy("número"))
    def masked_msisdn(self, obj: PaymentAttempt) -> str:
        from mpesa import mask_msisdn

        return mask_msisdn(obj.msisdn)


class PaymentAttemptInline(_ReadOnly, _MaskedMsisdn, admin.TabularInline[PaymentAttempt, Order]):
    model = PaymentAttempt
    extra = 0
    can_delete = False
    fields = (
        "third_party_reference",
        "state",
        "masked_msisdn",
        "amount",
        "result_code",
        "transaction_id",
        "created_at",
    )
    readonly_fields = fields
    show_change_link = True


class PaymentEventInline(_ReadOnly, admin.TabularInline[PaymentEvent, Order]):
    model = PaymentEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "summary", "attempt")
    readonly_fields = fields
    ordering = ("created_at", "id")


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(_ReadOnly, _MaskedMsisdn, admin.ModelAdmin[PaymentAttempt]):
    list_display = ("third_party_reference", "order", "state", "amount", "result_code", "created_at")
    list_filter = ("state", "mode", "created_at")
    search_fields = ("third_party_reference", "transaction_id", "conversation_id", "order__public_id")
    fields = ("order", *ATTEMPT_FIELDS)
    readonly_fields = fields
    list_select_related = ("order",)


@admin.register(PaymentEvent)
class PaymentEventAdmin(_ReadOnly, admin.ModelAdmin[PaymentEvent]):
    list_display = ("created_at", "order", "attempt", "kind", "summary")
    list_filter = ("kind", "created_at")
    search_fields = ("summary", "order__public_id", "attempt__third_party_reference")
    fields = ("created_at", "order", "attempt", "kind", "summary", "payload")
    readonly_fields = fields
    list_select_related = ("order", "attempt")


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(_ReadOnly, admin.ModelAdmin[CallbackDelivery]):
    list_display = ("received_at", "remote_ip", "attempt", "state", "outcome", "tries", "processed_at")
    list_filter = ("state", "outcome", "received_at")
    search_fields = ("attempt__third_party_reference",)
    fields = (
        "received_at",
        "remote_ip",
        "attempt",
        "state",
        "tries",
        "next_try_at",
        "outcome",
        "processed_at",
        "error",
        "headers",
        "body",
    )
    readonly_fields = fields


@admin.register(Reversal)
class ReversalAdmin(_ReadOnly, admin.ModelAdmin[Reversal]):
    list_display = ("reference", "attempt", "amount", "state", "restock", "requested_by", "created_at")
    list_filter = ("state", "created_at")
    search_fields = ("reference", "attempt__third_party_reference", "attempt__transaction_id")
    fields = (
        "reference",
        "attempt",
        "amount",
        "restock",
        "reason",
        "requested_by",
        "state",
        "result_code",
        "result_description",
        "transaction_id",
        "sent_at",
        "finished_at",
        "next_check_at",
        "check_count",
        "created_at",
    )
    readonly_fields = fields


@admin.register(AttentionItem)
class AttentionItemAdmin(_ReadOnly, admin.ModelAdmin[AttentionItem]):
    list_display = ("created_at", "kind", "order", "attempt", "propose_reversal", "resolved_at")
    list_filter = ("kind", "resolved_at", "created_at")
    fields = (
        "created_at",
        "kind",
        "order",
        "attempt",
        "reason",
        "propose_reversal",
        "resolved_at",
        "resolved_by",
        "resolution",
    )
    readonly_fields = fields


@admin.action(description=gettext_lazy("Verificar de novo o estado do pagamento (M-Pesa)"))
def recheck_payment_status(
    modeladmin: admin.ModelAdmin[Order], request: HttpRequest, queryset: QuerySet[Order]
) -> None:
    queued = 0
    for order in queryset:
        attempt_id = services.order_payment_recheck(order=order)
        if attempt_id is not None:
            tasks.queue_reconcile(attempt_id, force=True)
            queued += 1
    modeladmin.message_user(
        request, _("Consulta de estado pedida para %(n)s encomenda(s).") % {"n": queued}, messages.SUCCESS
    )


@admin.action(description=gettext_lazy("Reverter o pagamento (devolver o dinheiro pela M-Pesa)"))
def reverse_payment(modeladmin: admin.ModelAdmin[Order], request: HttpRequest, queryset: QuerySet[Order]) -> None:
    requested = 0
    for order in queryset.filter(status__in=[Order.Status.PAID, Order.Status.NEEDS_ATTENTION]):
        attempts = PaymentAttempt.objects.filter(order=order, state=PaymentAttempt.State.SUCCEEDED).exclude(
            transaction_id=""
        )
        for attempt in attempts:
            try:
                reversal = services.payment_reversal_request(
                    attempt_id=attempt.pk, requested_by=request.user.get_username(), reason="admin action"
                )
            except services.PaymentError as exc:
                modeladmin.message_user(request, f"{order.short_reference}: {exc}", messages.ERROR)
            else:
                tasks.queue_reversal(reversal.pk)
                requested += 1
    modeladmin.message_user(request, _("Reversão pedida para %(n)s pagamento(s).") % {"n": requested}, messages.INFO)


admin.site.unregister(Order)


@admin.register(Order)
class PaymentsOrderAdmin(OrderAdmin):
    inlines = [*OrderAdmin.inlines, PaymentAttemptInline, PaymentEventInline]
    actions = [*(OrderAdmin.actions or []), recheck_payment_status, reverse_payment]
