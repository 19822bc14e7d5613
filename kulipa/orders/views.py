"""Checkout and order history. Thin: forms validate, services write (the order and its first payment attempt in
one transaction), selectors read; the push is queued after commit. Never calls M-Pesa."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from kulipa.cart.services import Cart, cart_from_request
from kulipa.core import limits
from kulipa.core.limits import LimitReached
from kulipa.inventory.errors import OutOfStock
from kulipa.orders.errors import CheckoutChanged, OrderError
from kulipa.orders.forms import CheckoutForm
from kulipa.orders.models import Order
from kulipa.orders.selectors import (
    order_get_by_checkout_token,
    order_list_for_session,
    order_list_for_user,
    remember_order_in_session,
)
from kulipa.orders.snapshot import snapshot_changes, snapshot_current, snapshot_from_cart, snapshot_load, snapshot_sign
from kulipa.payments import tasks
from kulipa.payments.services import checkout_place

logger = logging.getLogger(__name__)

SNAPSHOT_FIELD = "snapshot"  # hidden field of the checkout form: the signed snapshot of what the page showed


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def _checkout_initial(request: HttpRequest) -> dict[str, str]:
    user = request.user
    if not user.is_authenticated:
        return {}
    return {"customer_name": user.get_full_name(), "email": user.email}


def _placed(request: HttpRequest, order: Order) -> HttpResponse:
    cart_from_request(request).clear()
    remember_order_in_session(request=request, order=order)
    return HttpResponseSeeOther(order.get_absolute_url())


def _checkout_page(
    request: HttpRequest,
    form: CheckoutForm,
    *,
    changes: list[str] | None = None,
    limit: LimitReached | None = None,
    cart: Cart | None = None,
) -> HttpResponse:
    """The checkout page for the cart as it is now, with a freshly signed snapshot of exactly what it shows.
    ``changes``: why the page is shown again instead of placing the order (nothing was created). ``limit``: an
    abuse limit refused the order (nothing was created): its sentence is shown, status 429. ``cart``: a cart
    whose lines this request has just read (the GET); otherwise a new one is read, so that prices are read after
    ``order_create`` ran, not before."""
    cart = cart if cart is not None else cart_from_request(request)
    snapshot = snapshot_from_cart(cart)
    return render(
        request,
        "orders/checkout.html",
        {
            "form": form,
            "lines": cart.lines(),
            "total": cart.total(),
            "cart_url": reverse("cart:detail"),
            "snapshot": snapshot_sign(snapshot),
            "snapshot_field": SNAPSHOT_FIELD,
            "changes": changes or [],
            "limit": limit.message if limit is not None else "",
        },
        status=429 if limit is not None else 200,
    )


@never_cache
@require_http_methods(["GET", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    """GET: the form with the cart lines and total (from the database) and a signed snapshot of them.
    POST: if the cart, prices and availability are still what that page showed, place the order for exactly
    that, queue the payment, 303 to the order page; otherwise show the page again (200) with what changed and
    create nothing. Prices are never read from the request (the snapshot is only compared with the database).
    An abuse limit (``kulipa.core.limits``) shows the page again with its sentence (429), creating nothing."""
    if request.method == "POST":
        # A second click after the first one went through: show the order it created.
        earlier = order_get_by_checkout_token(request=request, checkout_token=request.POST.get("checkout_token", ""))
        if earlier is not None:
            return _placed(request, earlier)
    cart = cart_from_request(request)
    cart_url = reverse("cart:detail")
    in_session = cart.session_quantities()  # before lines() drops deactivated products: they are a change
    confirmed = snapshot_load(request.POST.get(SNAPSHOT_FIELD, "")) if request.method == "POST" else None
    # POST asks only the session (no query): the snapshot comparison below reads the products once.
    empty = not in_session if request.method == "POST" else cart.is_empty
    if empty and not (confirmed is not None and confirmed.lines):
        messages.info(request, _("O seu carrinho está vazio. Escolha os produtos antes de finalizar a compra."))
        return redirect(cart_url)
    if request.method != "POST":
        return _checkout_page(request, CheckoutForm(initial=_checkout_initial(request)), cart=cart)
    form = CheckoutForm(request.POST)
    valid = form.is_valid()
    if confirmed is None:
        return _checkout_page(
            request, form, changes=[_("A página de pagamento expirou ou foi alterada; confirme de novo.")]
        )
    changes: list[str] = []
    if not valid or in_session != confirmed.quantities:  # else prices are compared under the lock, at no cost
        changes = snapshot_changes(confirmed=confirmed, current=snapshot_current(quantities=in_session))
    if changes or not valid:
        return _checkout_page(request, form, changes=changes)
    data = form.cleaned_data
    try:
        limits.checkout_check(request, msisdn=data["msisdn"])  # counts this try; saves a new session
        order, attempt = checkout_place(
            quantities=confirmed.quantities,
            confirmed=confirmed,
            customer_name=data["customer_name"],
            msisdn=data["msisdn"],
            email=data["email"],
            delivery_address=data["delivery_address"],
            user=request.user if request.user.is_authenticated else None,
            session_key=request.session.session_key or "",
            checkout_token=data["checkout_token"],
            client_ip=limits.address_key(request),
        )
    except LimitReached as exc:  # too many orders or prompts, a push already on that phone, too much stock held
        return _checkout_page(request, form, limit=exc)
    except CheckoutChanged as exc:  # changed between the check above and the locked rows
        return _checkout_page(request, form, changes=exc.changes)
    except OutOfStock as exc:
        messages.error(request, exc.message)
        return redirect(cart_url)
    except OrderError as exc:
        messages.error(request, str(exc))
        return redirect(cart_url)
    if attempt is not None:
        limits.prompt_sent(request, msisdn=attempt.msisdn)
        tasks.queue_dispatch(attempt.pk)
    return _placed(request, order)


@require_GET
def order_history(request: HttpRequest) -> HttpResponse:
    """Logged in: the customer's own orders. Guest: the orders placed from this device, and a login link."""
    if request.user.is_authenticated:
        orders = order_list_for_user(user=request.user)
    else:
        orders = order_list_for_session(request=request)
    return render(request, "orders/history.html", {"orders": orders[:100]})
