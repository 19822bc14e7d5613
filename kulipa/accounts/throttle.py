"""Login throttling on the shop's login and the back office's (django-axes): who is locked out, for how long, and
what they are told.

django-axes records every failed login in the database (``axes.AccessAttempt``, by e-mail, address and browser)
and refuses a login — whatever the password — while either

* the same e-mail failed ``AXES_FAILURE_LIMIT`` times from the same address (someone guessing one account's
  password; limit ``"login_user_ip"``), or
* the same address failed ``LOGIN_IP_FAILURE_LIMIT`` times whatever the e-mail (password spraying across many
  accounts; limit ``"login_ip"``; higher, because many customers share a mobile operator's address),

counting failures no further apart than ``AXES_COOLOFF_TIME``. The lock lifts by itself once the cool-off has passed
since the last counted failure: logins tried while locked are refused *without* being counted
(``AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False``), so nobody can keep a lock on longer than that, and a
stranger elsewhere cannot lock a customer out at all (the e-mail counts together with the address).
A staff member is unlocked at once with ``manage.py axes_reset_username <e-mail>`` (or ``axes_reset_ip <address>``).

Addresses come from :func:`kulipa.core.net.client_ip` (``AXES_CLIENT_IP_CALLABLE``). Every refused login counts
into :func:`kulipa.observability.metrics.limit_hit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Sum
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext

from kulipa.observability.metrics import limit_hit

BY_USER_AND_IP = "login_user_ip"
BY_IP = "login_ip"
_LIMIT_ATTR = "kulipa_login_limit"
"""Request attribute naming the limit that refused the login (for the metric)."""


def cool_off() -> timedelta:
    """How long a lock lasts after the last counted failure (``AXES_COOLOFF_TIME``)."""
    value = get_cool_off()
    return value if isinstance(value, timedelta) else timedelta(0)


def lockout_message() -> str:
    """The sentence shown on a login form while it is locked (in the active language)."""
    minutes = max(1, round(cool_off().total_seconds() / 60))
    return ngettext(
        "Demasiadas tentativas de entrada falhadas. Por segurança, espere %(minutes)d minuto e tente de novo.",
        "Demasiadas tentativas de entrada falhadas. Por segurança, espere %(minutes)d minutos e tente de novo.",
        minutes,
    ) % {"minutes": minutes}


def login_username(request: HttpRequest, credentials: Mapping[str, Any] | None) -> str | None:
    """``AXES_USERNAME_CALLABLE``: the e-mail tried, trimmed and lower-case (as accounts store it), so that changing
    the letter case does not start a fresh count."""
    raw = credentials.get("username") if credentials else request.POST.get("username")
    return raw.strip().lower() if isinstance(raw, str) else None


class LoginThrottleHandler(AxesDatabaseHandler):  # type: ignore[misc]
    """django-axes' database handler (``AXES_HANDLER``) with a second, higher limit by address alone.

    ``AXES_LOCKOUT_PARAMETERS`` counts e-mail + address; this adds the failures from the address whatever the
    e-mail, compared with ``settings.LOGIN_IP_FAILURE_LIMIT``. Reads only; the records stay django-axes' own, so
    its commands (``axes_reset_username``, ``axes_reset_ip``, ``axes_list_attempts``) see and clear both."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        failures: int = super().get_failures(request, credentials)
        limit: int = get_failure_limit(request, credentials)
        if failures >= limit:
            setattr(request, _LIMIT_ATTR, BY_USER_AND_IP)
            return failures
        from_address = (
            AccessAttempt.objects.filter(
                ip_address=request.axes_ip_address,  # type: ignore[attr-defined]
                attempt_time__gte=get_cool_off_threshold(request),
            ).aggregate(total=Sum("failures_since_start"))["total"]
            or 0
        )
        if from_address >= int(settings.LOGIN_IP_FAILURE_LIMIT):
            setattr(request, _LIMIT_ATTR, BY_IP)
            return limit  # as locked as the e-mail + address limit
        return failures


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Mapping[str, Any] | None
) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: the login page the view rendered (its form already says why, see
    :class:`ThrottledLoginForm`), answered with 429 and ``Retry-After``; a plain sentence when there is no page."""
    if original_response is not None and original_response.status_code == 200:
        response = original_response
        response.status_code = 429
        response.reason_phrase = "Too Many Requests"
    else:
        response = HttpResponse(lockout_message(), status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(int(cool_off().total_seconds()))
    return response


class ThrottledLoginForm(AuthenticationForm):
    """A login form that, while the login is locked, says so instead of "wrong password" (the password may well be
    right: django-axes refused to check it). Base of the shop's and the back office's login forms."""

    def get_invalid_login_error(self) -> forms.ValidationError:
        if getattr(self.request, "axes_locked_out", False):
            return forms.ValidationError(lockout_message(), code="locked_out")
        return super().get_invalid_login_error()


@receiver(user_locked_out, dispatch_uid="kulipa.accounts.throttle.count_lockout")
def count_lockout(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    """Every login refused by a lock (the one that reached the limit included) counts as a limit hit."""
    limit_hit(limit=getattr(request, _LIMIT_ATTR, BY_USER_AND_IP))
