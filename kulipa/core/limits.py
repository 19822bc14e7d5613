"""Abuse limits: how many orders, "try again"s and payment prompts one customer can cause, and how much stock one
customer can hold. Every limit and its default is listed in docs/payments.md ("Abuse limits") and settings.py.

Two kinds, each where it can be kept:

* **Counting windows** (django-ratelimit over the cache; Redis with ``REDIS_URL``, else a file cache shared by the
  processes of one machine): checkouts per session and per address, "try again" per session and per address,
  payment prompts per phone number. The views ask here before they call a service.
* **Invariants in the database**, kept under concurrency: one prompt in flight per phone number (a partial unique
  constraint on ``PaymentAttempt``), units held in live reservations per session, address and phone number
  (``kulipa.inventory.services``, under the holder lock), attempts per order (``kulipa.payments.services``, under
  the order lock). The services raise the errors built here.

A limit that applies raises :class:`LimitReached`: a translated sentence for the customer, nothing ordered,
pushed or reserved, and one count in ``kulipa_limits_hit_total{limit=…}``. Setting a window to "" or a cap to 0
turns that limit off.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django_ratelimit.core import get_usage  # type: ignore[import-untyped]

from kulipa.core.net import client_ip
from kulipa.observability.metrics import limit_hit
from kulipa.orders.selectors import SESSION_ORDERS_KEY
from mpesa import mask_msisdn

if TYPE_CHECKING:
    from kulipa.orders.models import Order

logger = logging.getLogger("kulipa.limits")


class LimitReached(Exception):
    """An abuse limit refused the request. ``str(error)`` is the translated sentence for the customer; ``limit``
    names the limit (the metric's label). Nothing was created, pushed or reserved."""

    def __init__(self, *, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


def refuse(*, limit: str, message: str) -> LimitReached:
    """Count one hit of ``limit`` and return the error to raise."""
    limit_hit(limit=limit)
    logger.info("abuse limit %s refused a request", limit)
    return LimitReached(limit=limit, message=message)


# --- who is asking ------------------------------------------------------------------------------------------
def address_key(request: HttpRequest) -> str | None:
    """The client address the limits count by: the IPv4 address, or the /64 network of an IPv6 one (one customer
    line gets a whole /64). ``None`` when the server does not know the address (then address limits do not apply)."""
    ip = client_ip(request)
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def session_key(request: HttpRequest) -> str:
    """This browser session's key, creating the session first if it has none yet."""
    if not request.session.session_key:
        request.session.save()
    return request.session.session_key or ""


def placed_here(*, request: HttpRequest, order: Order) -> bool:
    """Whether this request comes from the session that placed ``order`` (a guest order), or from its customer's
    account (``order_get_for_viewer`` lets nobody else see an account's order). Holding a guest order's link is
    enough to look at it, not to send payment prompts for it."""
    if order.user_id is not None:
        return True
    key = request.session.session_key
    if key and key == order.session_key:
        return True
    placed = request.session.get(SESSION_ORDERS_KEY, [])  # survives the new session key a login gives
    return isinstance(placed, list) and order.public_id in placed


# --- settings -----------------------------------------------------------------------------------------------
def cap(name: str) -> int:
    """An integer cap from settings (``LIMIT_…``); 0 means no cap."""
    return max(0, int(getattr(settings, name, 0) or 0))


# --- counting windows ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    limit: str
    """The limit's name: the metric label and the django-ratelimit group."""
    setting: str
    """The setting holding its rate, django-ratelimit syntax: "5/10m" is 5 per 10 minutes."""


CHECKOUT_PER_SESSION = Window("checkout_session", "LIMIT_CHECKOUTS_PER_SESSION")
CHECKOUT_PER_ADDRESS = Window("checkout_ip", "LIMIT_CHECKOUTS_PER_IP")
RETRY_PER_SESSION = Window("retry_session", "LIMIT_RETRIES_PER_SESSION")
RETRY_PER_ADDRESS = Window("retry_ip", "LIMIT_RETRIES_PER_IP")
PROMPTS_PER_PHONE = Window("prompts_phone", "LIMIT_PROMPTS_PER_PHONE")


def _usage(request: HttpRequest, window: Window, value: str | None, *, increment: bool) -> dict[str, Any] | None:
    rate = str(getattr(settings, window.setting, "") or "")
    if not rate or not value:
        return None

    def key(group: str, request: HttpRequest) -> str:
        return value

    try:
        usage: dict[str, Any] | None = get_usage(
            request, group=f"kulipa.{window.limit}", key=key, rate=rate, increment=increment
        )
    except Exception:  # the cache is down: the database invariants still hold; do not refuse every customer
        logger.exception("abuse limit %s not checked: the cache failed", window.limit)
        return None
    if usage is not None and usage["limit"] == 0 and usage["time_left"] == -1:
        logger.error("abuse limit %s not checked: the cache did not answer", window.limit)
        return None  # django-ratelimit's answer when the cache failed; fail open as above
    return usage


def _minutes(usage: dict[str, Any]) -> int:
    return max(1, math.ceil(int(usage["time_left"]) / 60))


def _wait(usage: dict[str, Any]) -> str:
    minutes = _minutes(usage)
    return ngettext(
        "Tente de novo dentro de %(minutes)d minuto.", "Tente de novo dentro de %(minutes)d minutos.", minutes
    ) % {"minutes": minutes}


def _count(request: HttpRequest, window: Window, value: str | None, message: str) -> None:
    """Count this request in ``window``; refuse it when it is one too many."""
    usage = _usage(request, window, value, increment=True)
    if usage is not None and usage["should_limit"]:
        raise refuse(limit=window.limit, message=f"{message} {_wait(usage)}")


def checkout_check(request: HttpRequest, *, msisdn: str) -> None:
    """Before placing an order: count it for this session and this address (every try counts), and check that
    ``msisdn`` may get another prompt. Raises :class:`LimitReached`. Call :func:`prompt_sent` once pushed."""
    message = _("Demasiadas encomendas em pouco tempo: a encomenda não foi feita e nada foi cobrado.")
    _count(request, CHECKOUT_PER_SESSION, session_key(request), message)
    _count(request, CHECKOUT_PER_ADDRESS, address_key(request), message)
    prompts_check(request, msisdn=msisdn)


def retry_check(request: HttpRequest, *, order: Order) -> None:
    """Before "try again": only from the session that placed a guest order, and counted for this session and
    this address. Raises :class:`LimitReached`. Then check the number with :func:`prompts_check`."""
    if not placed_here(request=request, order=order):
        raise refuse(
            limit="retry_other_session",
            message=_(
                "Só pode pedir o pagamento de novo no dispositivo onde fez a encomenda. Nada foi enviado para o "
                "telemóvel."
            ),
        )
    message = _("Demasiadas tentativas de pagamento em pouco tempo: nada foi enviado para o telemóvel.")
    _count(request, RETRY_PER_SESSION, session_key(request), message)
    _count(request, RETRY_PER_ADDRESS, address_key(request), message)


def prompts_check(request: HttpRequest, *, msisdn: str) -> None:
    """Refuse a new prompt to ``msisdn`` when it already had ``LIMIT_PROMPTS_PER_PHONE`` in the window. Counts
    nothing: :func:`prompt_sent` counts the prompts actually queued (at most one is in flight per number, which the
    database keeps, so checking first and counting after cannot let a burst through)."""
    usage = _usage(request, PROMPTS_PER_PHONE, msisdn, increment=False)
    if usage is not None and usage["count"] >= usage["limit"]:
        raise refuse(
            limit=PROMPTS_PER_PHONE.limit,
            message=_(
                "O número %(number)s já recebeu vários pedidos de pagamento nos últimos minutos: nada foi enviado. "
                "Use outro número ou espere."
            )
            % {"number": mask_msisdn(msisdn)}
            + " "
            + _wait(usage),
        )


def prompt_sent(request: HttpRequest, *, msisdn: str) -> None:
    """Count one prompt queued for ``msisdn``."""
    _usage(request, PROMPTS_PER_PHONE, msisdn, increment=True)


# --- database invariants (raised by the services) --------------------------------------------------------------
def phone_busy(*, msisdn: str) -> LimitReached:
    """A prompt to ``msisdn`` is still in flight (any order): the customer answers it, or waits for it to end."""
    return refuse(
        limit="phone_in_flight",
        message=_(
            "Já há um pedido de pagamento M-Pesa à espera de resposta no número %(number)s. Responda-lhe no "
            "telemóvel, ou espere que termine, e tente de novo. Nada foi enviado nem cobrado."
        )
        % {"number": mask_msisdn(msisdn)},
    )


def units_held(*, holder: str) -> LimitReached:
    """Too many units already held in unpaid orders by this session / address / phone number (``holder``)."""
    return refuse(
        limit=f"units_held_{holder}",
        message=_(
            "Já tem demasiados produtos reservados em encomendas por pagar. Pague ou cancele uma delas, ou espere "
            "que expire, e tente de novo. Nada foi reservado nem cobrado."
        ),
    )


def attempts_per_order() -> LimitReached:
    """The order already had ``LIMIT_ATTEMPTS_PER_ORDER`` payment attempts."""
    return refuse(
        limit="attempts_per_order",
        message=_(
            "Esta encomenda já teve demasiadas tentativas de pagamento: nada foi enviado. Pode cancelá-la e fazer "
            "uma nova encomenda."
        ),
    )
