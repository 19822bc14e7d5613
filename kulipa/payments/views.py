"""The order page (payment as it happens), its JSON status, "try again", and the M-Pesa result callback.

Thin: access goes through ``order_get_for_viewer`` (anyone else gets 404), reads through
``kulipa.payments.selectors``, writes through ``kulipa.payments.services``. Nothing here calls M-Pesa.
"""

from __future__ import annotations

import hmac
import logging

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

from kulipa.core import limits
from kulipa.core.net import client_ip
from kulipa.observability.metrics import limit_hit
from kulipa.orders.errors import OrderNotCancellable
from kulipa.orders.selectors import order_get_for_viewer
from kulipa.payments import selectors, services, tasks
from kulipa.payments.conf import ASYNC, mpesa_str, mpesa_str_list, payment_mode

logger = logging.getLogger(__name__)


class RetryForm(forms.Form):
    msisdn = forms.CharField(
        label=gettext_lazy("Número M-Pesa"),
        required=False,
        max_length=20,
        widget=forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "tel", "placeholder": "84 123 4567"}),
    )
    after = forms.IntegerField(required=False, widget=forms.HiddenInput)


@never_cache
@require_GET
def order_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    """``/pedido/<public_id>/``: lines, totals, payment status with live updates, "try again"."""
    order = order_get_for_viewer(request=request, public_id=public_id)
    view = selectors.order_payment_view(order=order)
    form = RetryForm()  # not pre-filled: whoever holds the link sees the number masked only
    form.fields["msisdn"].widget.attrs["placeholder"] = view.masked_msisdn or "84 123 4567"
    return render(
        request,
        "payments/order_detail.html",
        {
            "order": order,
            "lines": list(order.lines.select_related("product")),
            "payment": view,
            "form": form,
        },
    )


@never_cache
@require_GET
def order_status(request: HttpRequest, public_id: str) -> JsonResponse:
    """``/pedido/<public_id>/estado/``: {status, payment_status, message, can_retry, seconds_left, paid, ...}.

    Polled every ~2 s by the order page: the viewer check plus one indexed query; never calls M-Pesa."""
    order = order_get_for_viewer(request=request, public_id=public_id)
    return JsonResponse(selectors.order_payment_view(order=order).as_json())


@require_POST
def payment_retry(request: HttpRequest, public_id: str) -> HttpResponse:
    """POST "try again" (optionally with another number): a new attempt with a new reference, then back to the
    order page. ``after`` names the attempt the page showed, so a double click yields one attempt.

    A guest order only from the session that placed it; abuse limits (``kulipa.core.limits``: per session, per
    address, prompts per number, attempts per order, one push in flight per number, units held) refuse with a
    message and change nothing."""
    order = order_get_for_viewer(request=request, public_id=public_id)
    form = RetryForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Pedido inválido."))
        return redirect(order.get_absolute_url())
    try:
        limits.retry_check(request, order=order)
        number = services.payment_retry_number(order=order, msisdn=form.cleaned_data["msisdn"] or None)
        limits.prompts_check(request, msisdn=number)
        attempt, created = services.payment_attempt_start(
            order=order, msisdn=number, after_attempt_id=form.cleaned_data["after"]
        )
    except (services.PaymentError, limits.LimitReached) as exc:
        messages.error(request, str(exc))
    else:
        if created:
            limits.prompt_sent(request, msisdn=attempt.msisdn)
        if attempt.state == attempt.State.QUEUED:
            tasks.queue_dispatch(attempt.pk)
    return redirect(order.get_absolute_url())


@require_POST
def order_cancel(request: HttpRequest, public_id: str) -> HttpResponse:
    """POST "cancel the order": an order awaiting payment with nothing in flight is cancelled and its stock
    released. Refused (with a message) while a payment is in flight or once paid."""
    order = order_get_for_viewer(request=request, public_id=public_id)
    try:
        if services.order_cancel_unpaid(order=order):
            messages.success(request, _("Encomenda cancelada. Os produtos voltaram a estar disponíveis."))
    except OrderNotCancellable as exc:
        messages.error(request, str(exc))
    return redirect(order.get_absolute_url())


CALLBACK_OVERLOADED = {
    "output_ResponseCode": "INS-16",
    "output_ResponseDesc": "Unable to handle the request due to a temporary overloading",
}
"""The body of a rate-limited callback's 429: M-Pesa's own code for "temporary overloading" (reference §4.1), in
the envelope of its answers, so the gateway reads it as "try later"."""


def _callback_sender(group: str, request: HttpRequest) -> str:
    """django-ratelimit key: the client address (behind the proxy too)."""
    return client_ip(request) or "unknown"


@csrf_exempt
@require_POST
def mpesa_callback(request: HttpRequest, token: str | None = None) -> HttpResponse:
    """``POST /api/mpesa/callback`` (or ``/api/mpesa/callback/<token>`` when ``CALLBACK_PATH_TOKEN`` is set).

    More than ``CALLBACK_RATE_LIMIT`` from one client address → 429 with M-Pesa's INS-16 (counted as limit
    ``callback_ip``). Wrong or missing token → 404, and in async mode the tokenless path is refused (404) even
    when no token is configured; a sender outside ``CALLBACK_ALLOWED_IPS`` (when set) → 403. Each of these changes
    nothing and is counted in ``CallbackRejection``. Otherwise the raw delivery is stored first and the
    acknowledgement returned; confirmation happens in a worker.
    """
    remote_ip = client_ip(request)
    usage = get_usage(
        request,
        group="mpesa_callback",
        key=_callback_sender,
        rate=mpesa_str("CALLBACK_RATE_LIMIT") or None,
        method=ALL,
        increment=True,
    )
    if usage is not None and usage["should_limit"]:
        logger.warning("callback from %s refused: over CALLBACK_RATE_LIMIT", remote_ip)
        services.callback_refuse(reason="rate_limited")
        limit_hit(limit="callback_ip")
        response = JsonResponse(CALLBACK_OVERLOADED, status=429)
        response["Retry-After"] = str(max(1, int(usage["time_left"])))
        return response
    expected = mpesa_str("CALLBACK_PATH_TOKEN")
    if expected:
        if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
            services.callback_refuse(reason="bad_token")
            raise Http404
    elif token is not None:
        services.callback_refuse(reason="bad_token")
        raise Http404
    elif payment_mode() == ASYNC:
        # Results that move money must come on a secret path: without one, async mode takes no callback at all
        # (payments settle by status query).
        logger.warning("callback from %s refused: async mode needs MPESA_CALLBACK_PATH_TOKEN", remote_ip)
        services.callback_refuse(reason="no_token")
        raise Http404
    allowed = mpesa_str_list("CALLBACK_ALLOWED_IPS")
    if allowed and remote_ip not in allowed:
        logger.warning("callback from %s refused: not in CALLBACK_ALLOWED_IPS", remote_ip)
        services.callback_refuse(reason="ip_not_allowed")
        return HttpResponseForbidden()
    receipt = services.callback_receive(headers=dict(request.headers), body=request.body, remote_ip=remote_ip)
    if receipt.status == 200:
        tasks.queue_callback(receipt.delivery_id)
    return JsonResponse(receipt.body, status=receipt.status)
