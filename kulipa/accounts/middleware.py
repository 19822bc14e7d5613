"""Staff sessions end sooner than customers'.

A customer stays logged in for ``SESSION_COOKIE_AGE`` (30 days, renewed as the session changes); a staff member —
who can reverse payments — is logged out ``STAFF_SESSION_SECONDS`` (8 hours) after logging in, however busy the
session: an absolute end, not an idle one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponse
from django.utils import timezone


def staff_session_cap(*, session: SessionBase) -> bool:
    """End ``session`` at the latest ``STAFF_SESSION_SECONDS`` from now, unless it already ends sooner. Returns
    whether it changed.

    Idempotent: a session capped at login keeps that end on every later request (it is fixed, not sliding), so
    the end is the login time + ``STAFF_SESSION_SECONDS``. A session of a customer made staff meanwhile is capped
    on its next request."""
    latest = timezone.now() + timedelta(seconds=int(settings.STAFF_SESSION_SECONDS))
    if session.get_expiry_date() <= latest:
        return False
    session.set_expiry(latest)
    return True


class StaffSessionMiddleware:
    """After each response of a logged-in staff member, cap the session (:func:`staff_session_cap`).

    After the view, so that the login request itself leaves with the short cookie; place it after
    ``SessionMiddleware`` and ``AuthenticationMiddleware`` (its response step then runs before the session is
    saved)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            staff_session_cap(session=request.session)
        return response
