"""The back office: the merchant's daily work on orders and M-Pesa payments, in Django's admin.

* **Orders** (``/admin/orders/order/``): the list (number, customer, masked phone, total, status, payment status,
  created and paid times; filters; search by order number, phone in any form or its last digits, M-Pesa
  transaction id, ThirdPartyReference), and the order page: contact details (the only thing staff may edit),
  lines, reservations, ONE payment timeline, the audit entries, and the buttons "Verificar agora" and
  "Reverter…" (``kulipa.backoffice.views``).
* **A precisar de atenção** (``/admin/payments/attentionitem/``): one queue, open first, newest first; each item's
  page offers reverse, force-confirm and dismiss, each on its own confirmation page.
* **Acções da equipa** (``/admin/backoffice/staffaction/``): the audit log, read-only.
* The index shows today's summary and the CSV export (``templates/backoffice/admin_index.html``).

Every control is behind its own permission (``backoffice.recheck_payment``, ``reverse_payment``,
``resolve_attention``, ``export_payments``), checked here and on the server for every path (the views, and again
by ``kulipa.backoffice.services``); a control the user may not use is not shown, and posting to it answers 403.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Exists, OuterRef, Q, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from kulipa.backoffice import selectors, services, views
from kulipa.backoffice.models import StaffAction
from kulipa.core.money import format_mzn
from kulipa.orders.models import Order
from kulipa.payments.admin import EMPTY, Column, ReadOnlyAdmin, choices_filter, columns, date_filter, shown
from kulipa.payments.models import AttentionItem, PaymentAttempt, Reversal
from mpesa import mask_msisdn

admin.site.site_header = _("Kulipa — back office")
admin.site.site_title = _("Kulipa — back office")
admin.site.index_title = _("Trabalho do dia")
admin.site.index_template = "backoffice/admin_index.html"


# --- the order list: search and filters ------------------------------------------------------------------------
_ORDER_NUMBER = re.compile(r"^[Kk]?0*(\d{1,15})$")
_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]+$")
PHONE_DIGITS = 9
"""A Mozambican mobile number without the country code: 84 123 4567."""


def order_search(term: str) -> Q:
    """Orders matching what staff typed: the order number (``K0000042`` or ``42``), a phone number in any form
    (``+258 84 123 4567``, ``841234567``) or its last digits, an M-Pesa transaction id, conversation id or
    ThirdPartyReference of any attempt (or a reversal's reference), the customer's name or e-mail."""
    term = term.strip()
    if not term:
        return Q()
    by_name = Q()
    for word in term.split():
        by_name &= Q(customer_name__icontains=word)
    found = by_name | Q(email__iexact=term)
    compact = term.replace(" ", "")
    if number := _ORDER_NUMBER.match(compact):
        found |= Q(pk=int(number.group(1)))
    if _PHONE_LIKE.match(term):
        digits = re.sub(r"\D", "", term)
        if len(digits) >= 3:
            tail = digits[-PHONE_DIGITS:]
            found |= Q(msisdn__endswith=tail) | Q(
                pk__in=PaymentAttempt.objects.filter(msisdn__endswith=tail).values("order_id")
            )
    if len(compact) >= 4:
        refs = {compact, compact.upper()}
        attempts = PaymentAttempt.objects.filter(
            Q(transaction_id__in=refs) | Q(third_party_reference__in=refs) | Q(conversation_id__in=refs)
        )
        reversals = Reversal.objects.filter(Q(reference__in=refs) | Q(transaction_id__in=refs))
        found |= (
            Q(mpesa_transaction_id__in=refs)
            | Q(public_id=compact)
            | Q(pk__in=attempts.values("order_id"))
            | Q(pk__in=reversals.values("attempt__order_id"))
        )
    return found


def open_attention() -> Exists:
    return Exists(AttentionItem.objects.filter(order_id=OuterRef("pk"), resolved_at__isnull=True))


class NeedsAttentionFilter(admin.SimpleListFilter):
    title = _("precisa de atenção")
    parameter_name = "atencao"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("sim", _("Sim")), ("nao", _("Não"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        needs = Q(status=Order.Status.NEEDS_ATTENTION) | Q(open_attention())
        if self.value() == "sim":
            return queryset.filter(needs)
        if self.value() == "nao":
            return queryset.exclude(needs)
        return queryset


# --- the bulk action ---------------------------------------------------------------------------------------------
@admin.action(description=_("Verificar agora o pagamento na M-Pesa"), permissions=["recheck"])
def recheck_payment_status(modeladmin: OrderAdmin, request: HttpRequest, queryset: QuerySet[Order]) -> None:
    """Queue a status query for each selected order's latest sent attempt (``staff_recheck``: permission, audit,
    queued after commit; the web request never waits on M-Pesa)."""
    queued = 0
    for order in queryset:
        if services.staff_recheck(user=request.user, order=order) is not None:
            queued += 1
    modeladmin.message_user(
        request,
        ngettext(
            "Verificação pedida à M-Pesa para %(n)s encomenda; o resultado aparece na página da encomenda.",
            "Verificação pedida à M-Pesa para %(n)s encomendas; o resultado aparece na página de cada uma.",
            queued,
        )
        % {"n": queued},
        messages.SUCCESS if queued else messages.WARNING,
    )


# --- the order admin ---------------------------------------------------------------------------------------------
ORDER_FIELDS = (
    "reference",
    "status",
    "payment",
    "total_mzn",
    "paid",
    "paid_amount_mzn",
    "mpesa_transaction_id",
    "attention_reason",
    "expires_at",
    "created",
    "updated",
)
"""The order's own facts on its page, all read-only."""


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin[Order]):
    list_display = ("reference", "customer", "phone", "total_mzn", "status_label", "payment", "created", "paid")
    list_display_links = ("reference", "customer")
    list_filter = (
        choices_filter("payment_status", _("estado do pagamento")),
        choices_filter("status", _("estado")),
        NeedsAttentionFilter,
        date_filter("created_at", _("criada em")),
    )
    date_hierarchy = "created_at"
    search_fields = ("customer_name",)  # shows the search box; the search itself is order_search
    search_help_text = _(
        "N.º da encomenda (K0000042), telefone (completo ou os últimos dígitos), ID da transacção M-Pesa ou "
        "referência (ThirdPartyReference), nome ou e-mail."
    )
    list_select_related = ("user",)
    list_per_page = 50
    ordering = ("-created_at", "-id")
    actions = (recheck_payment_status,)
    view_on_site = False  # the shop's order page is the customer's, not staff's
    change_form_template = "backoffice/order_change_form.html"
    fieldsets = (
        (_("Cliente"), {"fields": ("customer_name", "email", "delivery_address", "phone", "account")}),
        (
            _("Encomenda"),
            {"fields": ORDER_FIELDS},
        ),
    )
    # Everything but the contact details is read-only (the payment fields are also editable=False on the model).
    readonly_fields = ("phone", "account", *ORDER_FIELDS)

    # columns and read-only fields
    @admin.display(description=_("n.º"), ordering="pk")
    def reference(self, obj: Order) -> str:
        return obj.short_reference

    @admin.display(description=_("cliente"), ordering="customer_name")
    def customer(self, obj: Order) -> str:
        return obj.customer_name

    @admin.display(description=_("telefone"))
    def phone(self, obj: Order) -> str:
        return mask_msisdn(obj.msisdn)

    @admin.display(description=_("conta do cliente"))
    def account(self, obj: Order) -> str:
        return obj.user.email if obj.user is not None else gettext("sem conta (convidado)")

    @admin.display(description=_("total"), ordering="total")
    def total_mzn(self, obj: Order) -> str:
        return format_mzn(obj.total)

    @admin.display(description=_("estado"), ordering="status")
    def status_label(self, obj: Order) -> str:
        return obj.get_status_display()

    @admin.display(description=_("pagamento"), ordering="payment_status")
    def payment(self, obj: Order) -> str:
        return selectors.payment_status_label(obj)

    @admin.display(description=_("criada em"), ordering="created_at")
    def created(self, obj: Order) -> str:
        return display_for_value(obj.created_at, EMPTY)

    @admin.display(description=_("actualizada em"), ordering="updated_at")
    def updated(self, obj: Order) -> str:
        return display_for_value(obj.updated_at, EMPTY)

    @admin.display(description=_("paga em"), ordering="paid_at")
    def paid(self, obj: Order) -> str:
        return display_for_value(obj.paid_at, EMPTY)

    @admin.display(description=_("montante pago"))
    def paid_amount_mzn(self, obj: Order) -> str:
        return format_mzn(obj.paid_amount) if obj.paid_amount is not None else ""

    # search
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Order], search_term: str
    ) -> tuple[QuerySet[Order], bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.filter(order_search(search_term)), False

    # permissions
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_recheck_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(views.PERM_RECHECK)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Django answers an action the user may not run with "no action selected" (200): refuse it instead.
        action = request.POST.get("action") if request.method == "POST" else None
        if action and action not in self.get_actions(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)

    # the order page
    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        order = self.get_object(request, unquote(object_id))
        if order is not None and self.has_view_permission(request, order):
            context.update(views.order_page_context(request, order=order))
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        wrap = self._wrap
        return [
            path("exportar/", wrap(views.payments_export), name="orders_order_export"),
            path("<int:order_id>/verificar/", wrap(views.order_recheck), name="orders_order_recheck"),
            path("<int:order_id>/verificacao/", wrap(views.order_recheck_panel), name="orders_order_recheck_panel"),
            path(
                "<int:order_id>/reverter/<int:attempt_id>/",
                wrap(views.order_reverse),
                name="orders_order_reverse",
            ),
            path(
                "<int:order_id>/reverter/<int:attempt_id>/portal/",
                wrap(views.order_portal_reversal),
                name="orders_order_portal_reversal",
            ),
            *super().get_urls(),
        ]

    def _wrap(self, view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        def bound(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return view(request, self, *args, **kwargs)

        bound.__name__ = view.__name__
        bound.__doc__ = view.__doc__
        return self.admin_site.admin_view(bound)


# --- the attention queue -----------------------------------------------------------------------------------------
class OpenFilter(admin.SimpleListFilter):
    title = _("situação")
    parameter_name = "situacao"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("aberto", _("Por resolver")), ("resolvido", _("Resolvido"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "aberto":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolvido":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


ATTENTION = {
    "created_at": Column(_("quando")),
    "kind": Column(_("tipo")),
    "reason": Column(_("o que se passa"), ordering=False),
    "propose_reversal": Column(_("propõe reversão"), boolean=True),
    "resolved_at": Column(_("resolvido em")),
    "resolved_by": Column(_("resolvido por")),
    "resolution": Column(_("resolução"), ordering=False),
}


@admin.register(AttentionItem)
@columns(ATTENTION)
class AttentionItemAdmin(ReadOnlyAdmin, admin.ModelAdmin[AttentionItem]):
    """One queue: open items first, newest first."""

    list_display = (
        "show_created_at",
        "show_kind",
        "order_link",
        "summary",
        "situation",
        "show_resolved_by",
    )
    list_display_links = ("summary",)
    list_filter = (OpenFilter, choices_filter("kind", _("tipo")))
    list_select_related = ("order", "attempt")
    search_fields = ("reason",)
    ordering = (
        Case(When(resolved_at__isnull=True, then=Value(0)), default=Value(1)).asc(),
        "-created_at",
        "-id",
    )
    change_form_template = "backoffice/attention_change_form.html"
    fields = (
        "show_created_at",
        "show_kind",
        "order_link",
        "attempt_reference",
        "show_reason",
        "show_propose_reversal",
        "situation",
        "show_resolved_at",
        "show_resolved_by",
        "show_resolution",
    )
    readonly_fields = fields

    @admin.display(description=_("encomenda"), ordering="order_id")
    def order_link(self, obj: AttentionItem) -> str:
        if obj.order is None:
            return "—"
        url = reverse("admin:orders_order_change", args=[obj.order.pk])
        return format_html('<a href="{}">{}</a>', url, obj.order.short_reference)

    @admin.display(description=_("pagamento"))
    def attempt_reference(self, obj: AttentionItem) -> str:
        return obj.attempt.third_party_reference if obj.attempt is not None else "—"

    @admin.display(description=_("o que se passa"))
    def summary(self, obj: AttentionItem) -> str:
        return Truncator(obj.reason).chars(90)

    @admin.display(description=_("situação"), ordering="resolved_at")
    def situation(self, obj: AttentionItem) -> str:
        return gettext("por resolver") if obj.resolved_at is None else gettext("resolvido")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        item = self.get_object(request, unquote(object_id))
        if item is not None and self.has_view_permission(request, item):
            context.update(views.attention_page_context(request, item=item))
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        def wrap(action: str) -> Callable[..., HttpResponseBase]:
            def bound(request: HttpRequest, item_id: int) -> HttpResponseBase:
                return views.attention_action(request, self, item_id=item_id, action=action)

            bound.__name__ = f"attention_{action}"
            return self.admin_site.admin_view(bound)

        return [
            path("<int:item_id>/reverter/", wrap(views.REVERSE), name="payments_attentionitem_reverse"),
            path("<int:item_id>/confirmar/", wrap(views.FORCE_CONFIRM), name="payments_attentionitem_force_confirm"),
            path("<int:item_id>/arquivar/", wrap(views.DISMISS), name="payments_attentionitem_dismiss"),
            *super().get_urls(),
        ]


# --- the audit log -----------------------------------------------------------------------------------------------
AUDIT = {
    "created_at": Column(_("quando")),
    "actor_name": Column(_("quem")),
    "action": Column(_("acção")),
    "order": Column(_("encomenda")),
    "reason": Column(_("motivo"), ordering=False),
    "before": Column(_("antes"), ordering=False),
    "after": Column(_("depois"), ordering=False),
}


@admin.register(StaffAction)
@columns(AUDIT)
class StaffActionAdmin(ReadOnlyAdmin, admin.ModelAdmin[StaffAction]):
    """The audit log: append-only, read-only here."""

    list_display = shown("created_at", "actor_name", "action", "order", "reason")
    list_filter = (choices_filter("action", _("acção")), date_filter("created_at", _("quando")))
    search_fields = ("actor_name", "reason")
    list_select_related = ("order",)
    ordering = ("-created_at", "-id")
    fields = shown(*AUDIT)
    readonly_fields = fields
