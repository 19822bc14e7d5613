"""The back office's pages beyond Django's own: the parts of the order page, re-check, reverse (API or portal),
the attention item actions and the CSV export. Mounted by ``kulipa.backoffice.admin`` inside the admin (staff
login, ``admin_view``), each view called as ``view(request, model_admin, ...)``.

Every view checks, before anything else, that the user may see the record (the admin's view permission) and holds
the permission of the control (``PermissionDenied`` → 403, on GET as on POST); the services check it again.
Thin: forms validate, ``kulipa.backoffice.services`` act (audit, queue after commit), selectors read. The web
request never waits on M-Pesa.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase, HttpResponseNotAllowed, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from kulipa.backoffice import selectors, services
from kulipa.backoffice.forms import ExportForm, ForceConfirmForm, NoteForm, PortalReversalForm, ReverseForm
from kulipa.backoffice.models import StaffAction
from kulipa.backoffice.services import (
    PERM_EXPORT,
    PERM_FORCE_CONFIRM,
    PERM_RECHECK,
    PERM_RESOLVE,
    PERM_REVERSE,
    staff_can,
)
from kulipa.core.money import format_mzn
from kulipa.orders.models import Order
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.services import PaymentError
from mpesa import mask_msisdn

__all__ = ["PERM_EXPORT", "PERM_FORCE_CONFIRM", "PERM_RECHECK", "PERM_RESOLVE", "PERM_REVERSE"]

ModelAdmin = admin.ModelAdmin[Any]

REVERSE, FORCE_CONFIRM, DISMISS = "reverse", "force_confirm", "dismiss"


# --- helpers -----------------------------------------------------------------------------------------------------
def _require(request: HttpRequest, *perms: str) -> None:
    if not staff_can(request.user, *perms):
        raise PermissionDenied


def _visible(request: HttpRequest, model_admin: ModelAdmin, obj: Any) -> None:
    if not model_admin.has_view_permission(request, obj):
        raise PermissionDenied


def _order_url(order: Order) -> str:
    return reverse("admin:orders_order_change", args=[order.pk])


def _item_url(item: AttentionItem) -> str:
    return reverse("admin:payments_attentionitem_change", args=[item.pk])


def _page(
    request: HttpRequest, model_admin: ModelAdmin, template: str, context: dict[str, Any], *, status: int = 200
) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {**model_admin.admin_site.each_context(request), "opts": model_admin.opts, **context},
        status=status,
    )


def _error_text(exc: Exception) -> str:
    return str(exc) or _("Não foi possível fazer esta acção.")


# --- the order page ----------------------------------------------------------------------------------------------
def recheck_state(*, order: Order) -> dict[str, Any]:
    """The "Verificar agora" panel: the latest status query's result, and whether a re-check asked after it is
    still waiting for the worker ("a verificar…")."""
    query = (
        PaymentEvent.objects.filter(order_id=order.pk, kind=PaymentEvent.Kind.STATUS_QUERY)
        .order_by("-created_at", "-id")
        .first()
    )
    asked = (
        StaffAction.objects.filter(order_id=order.pk, action=StaffAction.Action.RECHECK)
        .order_by("-created_at", "-id")
        .first()
    )
    pending = (
        asked is not None
        and asked.after.get("status_query") == "queued"
        and (query is None or query.created_at < asked.created_at)
    )
    payload = query.payload if query is not None else {}
    outcome = {
        key: str(payload[key])
        for key in ("transaction_status", "outcome", "code", "description", "reversed")
        if payload.get(key) not in (None, "")
    }
    return {"order": order, "query": query, "query_outcome": outcome, "asked": asked, "pending": pending}


def order_page_context(request: HttpRequest, *, order: Order) -> dict[str, Any]:
    """What the order page shows besides its fields: lines, reservations, attempts (with what is left to reverse),
    the payment timeline, the audit entries, the re-check panel, and which buttons this user gets."""
    user = request.user
    attempts = list(PaymentAttempt.objects.filter(order_id=order.pk).order_by("created_at", "id"))
    may_reverse = staff_can(user, PERM_REVERSE)
    rows = []
    for attempt in attempts:
        reversible = (
            selectors.reversible_amount(attempt=attempt)
            if attempt.state == PaymentAttempt.State.SUCCEEDED
            else Decimal("0")
        )
        rows.append(
            {
                "attempt": attempt,
                "masked_msisdn": mask_msisdn(attempt.msisdn),
                "amount": format_mzn(attempt.amount),
                "reversible": reversible,
                "reversible_mzn": format_mzn(reversible),
                "reverse_url": reverse("admin:orders_order_reverse", args=[order.pk, attempt.pk])
                if may_reverse and reversible > 0
                else "",
            }
        )
    return {
        # Django titles the page "View encomenda" (its Portuguese has no "View %s"); the order's number says more.
        "title": _("Encomenda %(ref)s") % {"ref": order.short_reference},
        "subtitle": order.customer_name,
        "order": order,
        "lines": list(order.lines.select_related("product").order_by("pk")),
        "reservations": list(order.reservations.select_related("product").order_by("pk")),
        "attempt_rows": rows,
        "reversible_rows": [r for r in rows if r["reverse_url"]],
        "timeline": selectors.order_timeline(order=order),
        "audit": list(
            StaffAction.objects.filter(order_id=order.pk).select_related("reversal").order_by("-created_at", "-id")
        ),
        "open_items": list(AttentionItem.objects.filter(order_id=order.pk, resolved_at__isnull=True)),
        "can_recheck": staff_can(user, PERM_RECHECK) and bool(attempts),
        "recheck_url": reverse("admin:orders_order_recheck", args=[order.pk]),
        "recheck_panel_url": reverse("admin:orders_order_recheck_panel", args=[order.pk]),
        **recheck_state(order=order),
    }


def order_recheck(request: HttpRequest, model_admin: ModelAdmin, order_id: int) -> HttpResponseBase:
    """POST: "Verificar agora" — a status query for the order's latest attempt, queued (``staff_recheck``); back to
    the order page, which shows "a verificar…" until the worker's answer is in."""
    order = get_object_or_404(Order, pk=order_id)
    _visible(request, model_admin, order)
    _require(request, PERM_RECHECK)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if services.staff_recheck(user=request.user, order=order) is None:
        messages.warning(request, _("Esta encomenda não tem nenhum pagamento enviado à M-Pesa para verificar."))
    else:
        messages.success(
            request, _("Verificação pedida à M-Pesa. O resultado aparece nesta página dentro de momentos.")
        )
    return redirect(_order_url(order))


def order_recheck_panel(request: HttpRequest, model_admin: ModelAdmin, order_id: int) -> HttpResponseBase:
    """GET: the re-check panel alone (the order page polls it with htmx while "a verificar…")."""
    order = get_object_or_404(Order, pk=order_id)
    _visible(request, model_admin, order)
    context = {
        **recheck_state(order=order),
        "recheck_panel_url": reverse("admin:orders_order_recheck_panel", args=[order.pk]),
    }
    return TemplateResponse(request, "backoffice/_recheck_panel.html", context)


def _reverse_context(order: Order, attempt: PaymentAttempt) -> dict[str, Any]:
    reversible = selectors.reversible_amount(attempt=attempt)
    by_api = selectors.can_reverse_by_api(attempt=attempt)
    return {
        "order": order,
        "attempt": attempt,
        "subtitle": order.short_reference,
        "title": _("Reverter o pagamento %(ref)s") % {"ref": attempt.third_party_reference},
        "masked_msisdn": mask_msisdn(attempt.msisdn),
        "paid_mzn": format_mzn(attempt.amount),
        "reversible": reversible,
        "reversible_mzn": format_mzn(reversible),
        "by_api": by_api,
        "portal": selectors.portal_lookup(attempt=attempt) if not by_api else {},
        "open_reversals": list(Reversal.objects.filter(attempt_id=attempt.pk, state__in=Reversal.OPEN)),
        "order_url": _order_url(order),
        "reverse_url": reverse("admin:orders_order_reverse", args=[order.pk, attempt.pk]),
        "portal_url": reverse("admin:orders_order_portal_reversal", args=[order.pk, attempt.pk]),
    }


def what_will_happen(*, amount: Decimal | None, restock: bool, masked_msisdn: str, transaction_id: str) -> str:
    """The sentence under the reverse form: amount in MT, the masked number, restock or not."""
    if amount is None:
        return ""
    text = _("A M-Pesa vai devolver %(amount)s ao número %(msisdn)s (transacção %(tid)s).") % {
        "amount": format_mzn(amount),
        "msisdn": masked_msisdn,
        "tid": transaction_id or "—",
    }
    if restock:
        return text + " " + _("Os artigos vendidos voltam ao stock quando a reversão for confirmada.")
    return text + " " + _("O stock não muda.")


def _sentence(form: ReverseForm, ctx: dict[str, Any]) -> str:
    """What the reversal filled in ``form`` (valid) will do, for the review step."""
    attempt: PaymentAttempt = ctx["attempt"]
    return what_will_happen(
        amount=form.cleaned_data["amount"],
        restock=bool(form.cleaned_data["restock"]),
        masked_msisdn=ctx["masked_msisdn"],
        transaction_id=attempt.transaction_id,
    )


def _confirmed(request: HttpRequest) -> bool:
    """The review step was seen: money moves only on a POST that carries it (the first POST only reviews)."""
    return request.POST.get("confirm") == "1"


def _attempt_of(order_id: int, attempt_id: int) -> tuple[Order, PaymentAttempt]:
    order = get_object_or_404(Order, pk=order_id)
    attempt = get_object_or_404(PaymentAttempt, pk=attempt_id, order_id=order.pk)
    return order, attempt


def order_reverse(request: HttpRequest, model_admin: ModelAdmin, order_id: int, attempt_id: int) -> HttpResponseBase:
    """GET: the form to reverse one attempt (amount, reason, restock; or, when the API cannot reverse it, what
    finance needs to find it in the M-Pesa portal and the form to record that). POST: the review — the exact
    amount, number and stock effect in one sentence, with "Confirmar" and "Alterar"; POST with ``confirm=1``:
    ``staff_reverse`` (idempotent against a double click) → the order page."""
    order, attempt = _attempt_of(order_id, attempt_id)
    _visible(request, model_admin, order)
    _require(request, PERM_REVERSE)
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    ctx = _reverse_context(order, attempt)
    full = attempt.pays_order
    form = ReverseForm(
        request.POST if request.method == "POST" else None, reversible=ctx["reversible"], full_by_default=full
    )
    portal_form = PortalReversalForm(reversible=ctx["reversible"], initial={"amount": ctx["reversible"]})
    status = 200
    review = ""
    if request.method == "POST":
        if form.is_valid() and not _confirmed(request):
            review = _sentence(form, ctx)
        elif form.is_valid():
            try:
                reversal = services.staff_reverse(
                    user=request.user,
                    attempt_id=attempt.pk,
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    restock=bool(form.cleaned_data["restock"]),
                    request_key=form.cleaned_data["request_key"] or None,
                )
            except (PaymentError, ValueError) as exc:
                form.add_error(None, _error_text(exc))
            else:
                messages.success(
                    request,
                    _("Reversão %(ref)s de %(amount)s pedida; a M-Pesa responde dentro de momentos.")
                    % {"ref": reversal.reference, "amount": format_mzn(reversal.amount)},
                )
                return redirect(_order_url(order))
        if not review:
            status = 400
    return _page(
        request,
        model_admin,
        "backoffice/order_reverse.html",
        {**ctx, "form": form, "portal_form": portal_form, "review": review},
        status=status,
    )


def order_portal_reversal(
    request: HttpRequest, model_admin: ModelAdmin, order_id: int, attempt_id: int
) -> HttpResponseBase:
    """POST: record a reversal finance did in the M-Pesa portal (``staff_record_portal_reversal``) → the order page.
    GET: the same confirmation page as "Reverter…"."""
    order, attempt = _attempt_of(order_id, attempt_id)
    _visible(request, model_admin, order)
    _require(request, PERM_REVERSE)
    if request.method == "GET":
        return redirect(reverse("admin:orders_order_reverse", args=[order.pk, attempt.pk]))
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    ctx = _reverse_context(order, attempt)
    portal_form = PortalReversalForm(request.POST, reversible=ctx["reversible"])
    if portal_form.is_valid():
        try:
            reversal = services.staff_record_portal_reversal(
                user=request.user,
                attempt_id=attempt.pk,
                portal_reference=portal_form.cleaned_data["portal_reference"],
                amount=portal_form.cleaned_data["amount"],
                reason=portal_form.cleaned_data["reason"],
            )
        except (PaymentError, ValueError) as exc:
            portal_form.add_error(None, _error_text(exc))
        else:
            messages.success(
                request,
                _("Reversão feita no portal registada (%(ref)s, %(amount)s).")
                % {"ref": reversal.reference, "amount": format_mzn(reversal.amount)},
            )
            return redirect(_order_url(order))
    form = ReverseForm(reversible=ctx["reversible"], full_by_default=attempt.pays_order)
    return _page(
        request,
        model_admin,
        "backoffice/order_reverse.html",
        {**ctx, "form": form, "portal_form": portal_form, "review": ""},
        status=400,
    )


# --- the attention queue ----------------------------------------------------------------------------------------
def _attention_controls(request: HttpRequest, item: AttentionItem) -> dict[str, str]:
    """The actions this user may take on ``item`` now: name → URL (empty when none)."""
    if item.resolved_at is not None:
        return {}
    user = request.user
    controls: dict[str, str] = {}
    attempt = item.attempt
    if (
        attempt is not None
        and staff_can(user, PERM_REVERSE, PERM_RESOLVE)
        and attempt.state == PaymentAttempt.State.SUCCEEDED
        and selectors.reversible_amount(attempt=attempt) > 0
    ):
        controls[REVERSE] = reverse("admin:payments_attentionitem_reverse", args=[item.pk])
    needs_attention = item.order is not None and item.order.status == Order.Status.NEEDS_ATTENTION
    if needs_attention and staff_can(user, PERM_FORCE_CONFIRM, PERM_RESOLVE):
        controls[FORCE_CONFIRM] = reverse("admin:payments_attentionitem_force_confirm", args=[item.pk])
    if staff_can(user, PERM_RESOLVE):
        controls[DISMISS] = reverse("admin:payments_attentionitem_dismiss", args=[item.pk])
    return controls


def attention_page_context(request: HttpRequest, *, item: AttentionItem) -> dict[str, Any]:
    return {
        "title": _("A precisar de atenção: %(kind)s") % {"kind": item.get_kind_display()},
        "subtitle": _("por resolver") if item.resolved_at is None else _("resolvido"),
        "item": item,
        "controls": _attention_controls(request, item),
        "order_url": _order_url(item.order) if item.order is not None else "",
    }


ACTION_PERMS = {
    REVERSE: (PERM_REVERSE, PERM_RESOLVE),
    FORCE_CONFIRM: (PERM_FORCE_CONFIRM, PERM_RESOLVE),
    DISMISS: (PERM_RESOLVE,),
}


def attention_action(request: HttpRequest, model_admin: ModelAdmin, *, item_id: int, action: str) -> HttpResponseBase:
    """GET: the confirmation page of one action on an attention item; POST: do it (``staff_resolve_by_reversal``,
    ``staff_force_confirm`` or ``staff_dismiss``) → the item's page."""
    item = get_object_or_404(AttentionItem.objects.select_related("order", "attempt"), pk=item_id)
    _visible(request, model_admin, item)
    _require(request, *ACTION_PERMS[action])
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    data = request.POST if request.method == "POST" else None
    ctx: dict[str, Any] = {
        "item": item,
        "action": action,
        "subtitle": item.get_kind_display(),
        "item_url": _item_url(item),
        "order_url": _order_url(item.order) if item.order is not None else "",
        "resolved": item.resolved_at is not None,
    }
    form: ReverseForm | NoteForm
    if action == REVERSE:
        attempt = item.attempt
        if attempt is None:
            raise PermissionDenied  # never offered: the item names no payment
        reversible = selectors.reversible_amount(attempt=attempt)
        form = ReverseForm(data, reversible=reversible, full_by_default=attempt.pays_order)
        ctx.update(
            title=_("Resolver com uma reversão"),
            attempt=attempt,
            masked_msisdn=mask_msisdn(attempt.msisdn),
            reversible=reversible,
            reversible_mzn=format_mzn(reversible),
            by_api=selectors.can_reverse_by_api(attempt=attempt),
        )
    elif action == FORCE_CONFIRM:
        form = ForceConfirmForm(data)
        ctx["title"] = _("Confirmar a encomenda à mão")
    else:
        form = NoteForm(data)
        ctx["title"] = _("Arquivar sem fazer nada")
    status = 200
    review = ""
    if data is not None:
        if form.is_valid() and isinstance(form, ReverseForm) and not _confirmed(request):
            review = _sentence(form, ctx)  # money moves only after the review step
        elif form.is_valid():
            try:
                done = _attention_do(request, item=item, action=action, data=form.cleaned_data)
            except (PaymentError, ValueError) as exc:
                form.add_error(None, _error_text(exc))
            else:
                messages.success(request, done)
                return redirect(_item_url(item))
        if not review:
            status = 400
    ctx["form"] = form
    ctx["review"] = review
    return _page(request, model_admin, "backoffice/attention_action.html", ctx, status=status)


def _attention_do(request: HttpRequest, *, item: AttentionItem, action: str, data: dict[str, Any]) -> str:
    if action == REVERSE:
        reversal = services.staff_resolve_by_reversal(
            user=request.user,
            item_id=item.pk,
            amount=data["amount"],
            reason=data["reason"],
            restock=bool(data["restock"]),
        )
        return _("Reversão %(ref)s de %(amount)s pedida; o caso ficou resolvido.") % {
            "ref": reversal.reference,
            "amount": format_mzn(reversal.amount),
        }
    if action == FORCE_CONFIRM:
        order = services.staff_force_confirm(user=request.user, item_id=item.pk, note=data["note"])
        return _("Encomenda %(ref)s confirmada; o caso ficou resolvido.") % {"ref": order.short_reference}
    services.staff_dismiss(user=request.user, item_id=item.pk, note=data["note"])
    return _("Caso arquivado.")


# --- reports -----------------------------------------------------------------------------------------------------
class _Echo:
    """A file-like object that hands back what is written (for csv.writer in a streaming response)."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(header: list[str], rows: Iterable[dict[str, str]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"  # so that a spreadsheet opens the file as UTF-8 (accents in names)
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([row.get(column, "") for column in header])


def payments_export(request: HttpRequest, model_admin: ModelAdmin) -> HttpResponseBase:
    """GET ``?since=YYYY-MM-DD&until=YYYY-MM-DD`` (Maputo dates): the payments of those days as CSV
    (``kulipa-pagamentos-<since>-<until>.csv``), audited (``staff_export_logged``) before the file is handed out.
    Without dates: the form."""
    _require(request, PERM_EXPORT)
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    today = timezone.localdate()
    bound = "since" in request.GET or "until" in request.GET
    form = ExportForm(request.GET if bound else None, initial={"since": today - timedelta(days=6), "until": today})
    if not (bound and form.is_valid()):
        return _page(
            request,
            model_admin,
            "backoffice/export.html",
            {"form": form, "title": _("Exportar pagamentos (CSV)")},
            status=400 if bound else 200,
        )
    since, until = form.cleaned_data["since"], form.cleaned_data["until"]
    rows = list(selectors.payments_export_rows(since=since, until=until))
    services.staff_export_logged(user=request.user, since=since, until=until, rows=len(rows))
    header = list(selectors.EXPORT_COLUMNS)
    response = StreamingHttpResponse(_csv_lines(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="kulipa-pagamentos-{since:%Y-%m-%d}-{until:%Y-%m-%d}.csv"'
    return response
