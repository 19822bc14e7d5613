"""The back office's forms: what staff type before an action on money. They validate input only; the services
(``kulipa.backoffice.services``) check the permission, the state of the payment and the amounts again."""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.core.validators import MaxValueValidator
from django.utils.translation import gettext_lazy as _

from kulipa.core.money import format_mzn

MAX_EXPORT_DAYS = 366
YES, NO = "yes", "no"


def _amount_field(*, label: Any) -> forms.DecimalField:
    # localize: "12,50" in Portuguese as well as "12.50".
    return forms.DecimalField(label=label, max_digits=12, decimal_places=2, min_value=Decimal("0.01"), localize=True)


def _limit(field: forms.Field, maximum: Decimal) -> None:
    field.validators.append(MaxValueValidator(maximum))


class ReverseForm(forms.Form):
    """Reverse (part of) a paid attempt through the M-Pesa API."""

    amount = _amount_field(label=_("Montante a devolver (MT)"))
    reason = forms.CharField(
        label=_("Motivo"),
        max_length=300,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=_("Obrigatório; fica no registo e na reversão."),
    )
    restock = forms.TypedChoiceField(
        label=_("Repor o stock?"),
        choices=[(YES, _("Sim: os artigos vendidos voltam ao stock")), (NO, _("Não: o stock não muda"))],
        coerce=lambda value: value == YES,
        widget=forms.RadioSelect,
    )

    request_key = forms.CharField(widget=forms.HiddenInput, required=False, max_length=64)
    """One per rendering of the form: posting it twice (a double click) is one reversal."""

    def __init__(self, *args: Any, reversible: Decimal, full_by_default: bool, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial",
            {
                "amount": reversible,
                "restock": YES if full_by_default else NO,
                "request_key": secrets.token_urlsafe(24),
            },
        )
        super().__init__(*args, **kwargs)
        self.reversible = reversible
        amount = self.fields["amount"]
        _limit(amount, reversible)
        amount.help_text = _("No máximo %(left)s (o que ainda não foi devolvido deste pagamento).") % {
            "left": format_mzn(reversible)
        }

    def clean_reason(self) -> str:
        reason = str(self.cleaned_data["reason"]).strip()
        if not reason:
            raise forms.ValidationError(_("Indique o motivo."))
        return reason


class PortalReversalForm(forms.Form):
    """Record a reversal finance did in the M-Pesa portal (the API could not do it)."""

    portal_reference = forms.CharField(
        label=_("Referência da reversão no portal M-Pesa"),
        max_length=20,
        help_text=_("O ID da transacção de reversão que o portal mostra."),
    )
    amount = _amount_field(label=_("Montante devolvido (MT)"))
    reason = forms.CharField(label=_("Motivo"), max_length=300, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))

    def __init__(self, *args: Any, reversible: Decimal, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _limit(self.fields["amount"], reversible)

    def clean_portal_reference(self) -> str:
        reference = str(self.cleaned_data["portal_reference"]).strip()
        if not reference:
            raise forms.ValidationError(_("Indique a referência do portal."))
        return reference

    def clean_reason(self) -> str:
        reason = str(self.cleaned_data["reason"]).strip()
        if not reason:
            raise forms.ValidationError(_("Indique o motivo."))
        return reason


class NoteForm(forms.Form):
    """Dismiss an attention item: why nothing is to be done about it."""

    note = forms.CharField(
        label=_("Nota"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Obrigatória: porque é que não há nada a fazer."),
    )

    def clean_note(self) -> str:
        note = str(self.cleaned_data["note"]).strip()
        if not note:
            raise forms.ValidationError(_("Escreva uma nota."))
        return note


class ForceConfirmForm(NoteForm):
    """Confirm an order by hand, taking the money as it is. Needs a note and an explicit "I understand"."""

    understood = forms.BooleanField(
        label=_("Confirmo que verifiquei o pagamento e que a encomenda deve ser entregue."),
        required=True,
    )


class ExportForm(forms.Form):
    """A date range of payments, in Maputo dates, both ends included."""

    since = forms.DateField(label=_("De"), widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    until = forms.DateField(label=_("Até"), widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if isinstance(since, date) and isinstance(until, date):
            if since > until:
                raise forms.ValidationError(_("A data inicial é depois da final."))
            if until - since > timedelta(days=MAX_EXPORT_DAYS):
                raise forms.ValidationError(_("No máximo %(days)s dias de cada vez.") % {"days": MAX_EXPORT_DAYS})
        return data
