from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _


class CartProductForm(forms.Form):
    """Which product a cart button is about. Any other POST field (a price, say) is ignored."""

    product_id = forms.IntegerField(
        min_value=1,
        widget=forms.HiddenInput,
        error_messages={
            "required": _("Este produto não existe ou já não está à venda."),
            "invalid": _("Este produto não existe ou já não está à venda."),
            "min_value": _("Este produto não existe ou já não está à venda."),
        },
    )


class CartQuantityForm(CartProductForm):
    """Product and quantity, 1..settings.MAX_LINE_QUANTITY."""

    quantity = forms.IntegerField(
        label=_("Quantidade"),
        initial=1,
        error_messages={
            "required": _("Indique a quantidade."),
            "invalid": _("A quantidade tem de ser um número inteiro."),
        },
    )

    def clean_quantity(self) -> int:
        quantity: int = self.cleaned_data["quantity"]
        if quantity < 1:
            raise forms.ValidationError(_("A quantidade tem de ser pelo menos 1."))
        if quantity > settings.MAX_LINE_QUANTITY:
            raise forms.ValidationError(
                _("A quantidade máxima por produto é %(max)s."), params={"max": settings.MAX_LINE_QUANTITY}
            )
        return quantity


def form_error_text(form: forms.Form) -> str:
    """First error of the form, for a one-line message."""
    for errors in form.errors.values():
        for error in errors:
            return str(error)
    return str(_("Pedido inválido."))
