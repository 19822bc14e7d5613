"""Cart pages. Every change is a POST that works without JavaScript (redirect + message); with htmx
(``HX-Request``) the response is a fragment: the refreshed cart and out-of-band message area and cart count."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from kulipa.cart.forms import CartProductForm, CartQuantityForm, form_error_text
from kulipa.cart.services import Cart, CartError, cart_from_request
from kulipa.core.urls import url_or_default


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _next_url(request: HttpRequest, default: str) -> str:
    """Where to go back to after a cart change: the posted ``next`` if it is a local absolute path ("/..."),
    else ``default`` (a URL name). Never hands ``next`` to ``redirect()``: that would try to reverse a
    string like "foo" as a URL name and answer 500."""
    candidate = request.POST.get("next", "")
    if (
        candidate.startswith("/")
        and candidate.isprintable()
        and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return candidate
    return reverse(default)


def _cart_context(cart: Cart) -> dict[str, object]:
    return {
        "cart": cart,
        "lines": cart.lines(),
        "total": cart.total(),
        "checkout_url": url_or_default(name="orders:checkout", default="/checkout/"),
    }


def _respond(request: HttpRequest, cart: Cart, *, default_next: str) -> HttpResponse:
    if _is_htmx(request):
        return render(request, "cart/_htmx_update.html", _cart_context(cart))
    return HttpResponseRedirect(_next_url(request, default_next))


@require_GET
def cart_detail(request: HttpRequest) -> HttpResponse:
    return render(request, "cart/detail.html", _cart_context(cart_from_request(request)))


@require_POST
def cart_add(request: HttpRequest) -> HttpResponse:
    cart = cart_from_request(request)
    form = CartQuantityForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_error_text(form))
    else:
        try:
            line = cart.add(form.cleaned_data["product_id"], form.cleaned_data["quantity"])
        except CartError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("«%(name)s» no carrinho (%(quantity)s).") % {"name": line.product.name, "quantity": line.quantity},
            )
    return _respond(request, cart, default_next="cart:detail")


@require_POST
def cart_update(request: HttpRequest) -> HttpResponse:
    cart = cart_from_request(request)
    form = CartQuantityForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_error_text(form))
    else:
        try:
            line = cart.set(form.cleaned_data["product_id"], form.cleaned_data["quantity"])
        except CartError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("Quantidade de «%(name)s» alterada para %(quantity)s.")
                % {"name": line.product.name, "quantity": line.quantity},
            )
    return _respond(request, cart, default_next="cart:detail")


@require_POST
def cart_remove(request: HttpRequest) -> HttpResponse:
    cart = cart_from_request(request)
    form = CartProductForm(request.POST)
    if not form.is_valid():
        messages.error(request, form_error_text(form))
    else:
        cart.remove(form.cleaned_data["product_id"])
        messages.success(request, _("Produto removido do carrinho."))
    return _respond(request, cart, default_next="cart:detail")
