"""Payment records in the admin: everything read-only, every column labelled in Portuguese (and English).

Nothing here acts on money. What staff do about an order's payment (re-check it, reverse it, resolve an attention
item) lives in the back office (``kulipa.backoffice.admin``): the order page and the attention queue, each control
behind its own permission and recorded in the audit trail. Events are append-only (no change or delete
permission); the full MSISDN is never shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin.utils import display_for_value
from django.db.models import Model
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django_stubs_ext import StrOrPromise

from kulipa.payments.models import CallbackDelivery, PaymentAttempt, PaymentEvent, Reversal
from mpesa import mask_msisdn


class ReadOnlyAdmin:
    """No add, change or delete: these rows are written only by ``kulipa.payments.services``."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


EMPTY = "—"
"""What an empty value shows."""


@dataclass(frozen=True)
class Column:
    """A read-only column or field of a model field under a translated label (the payment models' fields have none
    of their own)."""

    label: StrOrPromise
    ordering: bool = True
    boolean: bool = False


def _value(obj: Model, name: str, *, boolean: bool = False) -> Any:
    """What a column shows: choices by their label, ``msisdn`` masked, an order by its number, times in Maputo (a
    read-only field of a method is shown as ``str(value)`` by Django, so it is formatted here)."""
    if name == "msisdn":
        return mask_msisdn(str(getattr(obj, name)))
    if name == "order":  # K0000042, not the order's str (which starts its unguessable link)
        order = getattr(obj, name)
        return order.short_reference if order is not None else EMPTY
    display = getattr(obj, f"get_{name}_display", None)
    value = display() if callable(display) else getattr(obj, name)
    return value if boolean else display_for_value(value, EMPTY)


_AdminT = TypeVar("_AdminT", bound=type)


def columns(spec: dict[str, Column]) -> Callable[[_AdminT], _AdminT]:
    """Class decorator: for each ``name`` of ``spec``, a display method ``show_<name>`` on the admin (use
    :func:`shown` for the names)."""

    def add(admin_class: _AdminT) -> _AdminT:
        for name, column in spec.items():

            def method(self: Any, obj: Model, name: str = name, boolean: bool = column.boolean) -> Any:
                return _value(obj, name, boolean=boolean)

            method.__name__ = f"show_{name}"
            display = admin.display(
                description=column.label,
                ordering=name if column.ordering else None,
                boolean=column.boolean or None,
            )
            setattr(admin_class, method.__name__, display(method))
        return admin_class

    return add


def shown(*names: str) -> tuple[str, ...]:
    """The admin names of the :func:`columns` methods for ``names``."""
    return tuple(f"show_{name}" for name in names)


def titled(filter_class: type[admin.FieldListFilter], title: StrOrPromise) -> type[admin.FieldListFilter]:
    """``filter_class`` under a translated ``title`` (Django titles a filter with the field's verbose name)."""

    class Titled(filter_class):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.title = title

    return Titled


def choices_filter(name: str, title: StrOrPromise) -> tuple[str, type[admin.FieldListFilter]]:
    return (name, titled(admin.ChoicesFieldListFilter, title))


def date_filter(name: str, title: StrOrPromise) -> tuple[str, type[admin.FieldListFilter]]:
    return (name, titled(admin.DateFieldListFilter, title))


def all_values_filter(name: str, title: StrOrPromise) -> tuple[str, type[admin.FieldListFilter]]:
    return (name, titled(admin.AllValuesFieldListFilter, title))


ATTEMPT = {
    "order": Column(_("encomenda")),
    "third_party_reference": Column(_("referência (ThirdPartyReference)")),
    "state": Column(_("estado")),
    "msisdn": Column(_("número M-Pesa")),
    "amount": Column(_("montante (MT)")),
    "mode": Column(_("modo")),
    "result_code": Column(_("código INS")),
    "result_description": Column(_("descrição da M-Pesa")),
    "conversation_id": Column(_("ID da conversa")),
    "transaction_id": Column(_("ID da transacção M-Pesa")),
    "push_started_at": Column(_("pedido enviado em")),
    "push_deadline": Column(_("prazo do PIN")),
    "finished_at": Column(_("terminada em")),
    "next_check_at": Column(_("próxima verificação")),
    "check_count": Column(_("verificações")),
    "pays_order": Column(_("paga a encomenda"), boolean=True),
    "created_at": Column(_("criada em")),
}


@admin.register(PaymentAttempt)
@columns(ATTEMPT)
class PaymentAttemptAdmin(ReadOnlyAdmin, admin.ModelAdmin[PaymentAttempt]):
    list_display = shown("third_party_reference", "order", "state", "amount", "result_code", "created_at")
    list_filter = (
        choices_filter("state", _("estado")),
        all_values_filter("mode", _("modo")),
        date_filter("created_at", _("criada em")),
    )
    search_fields = ("third_party_reference", "transaction_id", "conversation_id")
    search_help_text = _("Referência, ID da transacção ou da conversa M-Pesa.")
    fields = shown(*ATTEMPT)
    readonly_fields = fields
    list_select_related = ("order",)


EVENT = {
    "created_at": Column(_("quando")),
    "order": Column(_("encomenda")),
    "attempt": Column(_("tentativa")),
    "kind": Column(_("tipo")),
    "summary": Column(_("resumo")),
    "payload": Column(_("conteúdo (números mascarados)"), ordering=False),
}


@admin.register(PaymentEvent)
@columns(EVENT)
class PaymentEventAdmin(ReadOnlyAdmin, admin.ModelAdmin[PaymentEvent]):
    list_display = shown("created_at", "order", "attempt", "kind", "summary")
    list_filter = (choices_filter("kind", _("tipo")), date_filter("created_at", _("quando")))
    search_fields = ("summary", "order__public_id", "attempt__third_party_reference")
    fields = shown(*EVENT)
    readonly_fields = fields
    list_select_related = ("order", "attempt")


DELIVERY = {
    "received_at": Column(_("recebido em")),
    "remote_ip": Column(_("IP de origem")),
    "attempt": Column(_("tentativa")),
    "state": Column(_("estado")),
    "tries": Column(_("tentativas de processar")),
    "next_try_at": Column(_("próxima tentativa")),
    "outcome": Column(_("resultado")),
    "processed_at": Column(_("processado em")),
    "error": Column(_("erro")),
    "headers": Column(_("cabeçalhos"), ordering=False),
    "body": Column(_("corpo"), ordering=False),
}


@admin.register(CallbackDelivery)
@columns(DELIVERY)
class CallbackDeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin[CallbackDelivery]):
    list_display = shown("received_at", "remote_ip", "attempt", "state", "outcome", "tries", "processed_at")
    list_filter = (
        choices_filter("state", _("estado")),
        all_values_filter("outcome", _("resultado")),
        date_filter("received_at", _("recebido em")),
    )
    search_fields = ("attempt__third_party_reference",)
    fields = shown(*DELIVERY)
    readonly_fields = fields


REVERSAL = {
    "reference": Column(_("referência da reversão")),
    "attempt": Column(_("pagamento (tentativa)")),
    "amount": Column(_("montante (MT)")),
    "restock": Column(_("repõe stock"), boolean=True),
    "reason": Column(_("motivo")),
    "requested_by": Column(_("pedida por")),
    "external": Column(_("feita no portal M-Pesa"), boolean=True),
    "state": Column(_("estado")),
    "result_code": Column(_("código INS")),
    "result_description": Column(_("descrição da M-Pesa")),
    "transaction_id": Column(_("ID da transacção M-Pesa")),
    "sent_at": Column(_("enviada em")),
    "finished_at": Column(_("terminada em")),
    "next_check_at": Column(_("próxima verificação")),
    "check_count": Column(_("verificações")),
    "created_at": Column(_("criada em")),
}


@admin.register(Reversal)
@columns(REVERSAL)
class ReversalAdmin(ReadOnlyAdmin, admin.ModelAdmin[Reversal]):
    list_display = shown("reference", "attempt", "amount", "state", "restock", "requested_by", "created_at")
    list_filter = (choices_filter("state", _("estado")), date_filter("created_at", _("criada em")))
    search_fields = ("reference", "attempt__third_party_reference", "attempt__transaction_id")
    fields = shown(*REVERSAL)
    readonly_fields = fields
    list_select_related = ("attempt",)
