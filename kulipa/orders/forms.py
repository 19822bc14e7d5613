"""The checkout form: who pays and where it goes. No prices, no quantities: those come from the cart and DB."""

from __future__ import annotations

import secrets
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from mpesa import ValidationError as MpesaValidationError
from mpesa import normalize_msisdn


def new_checkout_token() -> str:
    """A fresh token for one rendering of the checkout form (dedups a double submit)."""
    return secrets.token_urlsafe(32)


class CheckoutForm(forms.Form):
    customer_name = forms.CharField(
        label=_("Nome"),
        max_length=120,
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    msisdn = forms.CharField(
        label=_("Número M-Pesa"),
        max_length=24,
        help_text=_("Número Vodacom (84 ou 85). Vai receber um pedido no telemóvel para confirmar com o PIN."),
        widget=forms.TextInput(
            attrs={"inputmode": "tel", "autocomplete": "tel-national", "placeholder": "84 123 4567"}
        ),
    )
    email = forms.EmailField(
        label=_("E-mail (opcional)"),
        required=False,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    delivery_address = forms.CharField(
        label=_("Morada de entrega (opcional)"),
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "street-address"}),
    )
    checkout_token = forms.CharField(widget=forms.HiddenInput, max_length=64, min_length=16)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound and not self.initial.get("checkout_token"):
            self.initial["checkout_token"] = new_checkout_token()

    def clean_customer_name(self) -> str:
        name = " ".join(self.cleaned_data["customer_name"].split())
        if not name:
            raise forms.ValidationError(_("Indique o seu nome."))
        return name

    def clean_msisdn(self) -> str:
        raw = self.cleaned_data["msisdn"]
        try:
            return normalize_msisdn(raw)
        except MpesaValidationError:
            digits = "".join(ch for ch in raw if ch.isdigit())
            if digits.startswith("00258"):  # the international prefix written as 00, as normalize_msisdn allows
                digits = digits[2:]
            local = digits[3:] if digits.startswith("258") and len(digits) == 12 else digits
            if len(local) == 9 and local[0] == "8" and local[:2] not in ("84", "85"):
                raise forms.ValidationError(
                    _(
                        "O pagamento M-Pesa só funciona com números Vodacom (começados por 84 ou 85). "
                        "Indique um número Vodacom."
                    ),
                    code="not_vodacom",
                ) from None
            raise forms.ValidationError(
                _("Número inválido. Escreva os 9 algarismos do seu número Vodacom, por exemplo 84 123 4567."),
                code="invalid_msisdn",
            ) from None
