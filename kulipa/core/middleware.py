"""Language selection: Portuguese for everyone unless the customer picked another language with the switch.

Replaces ``django.middleware.locale.LocaleMiddleware`` in ``settings.MIDDLEWARE``. Django's middleware would
follow the phone's ``Accept-Language`` header, so a Mozambican customer with an English-language phone would get
the English shop without asking for it. This one honours only the language cookie that Django's
``set_language`` view (``/i18n/setlang/``) writes, and otherwise uses ``settings.LANGUAGE_CODE``.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.cache import patch_vary_headers


def language_from_cookie(*, request: HttpRequest) -> str:
    """The language the customer chose (cookie), if it is one of ``settings.LANGUAGES``; else the default."""
    chosen = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
    supported = {code for code, _name in settings.LANGUAGES}
    return chosen if chosen in supported else settings.LANGUAGE_CODE


class ChosenLanguageMiddleware:
    """Activate the chosen language (cookie) or the default; ignore ``Accept-Language``.

    Must come after ``SessionMiddleware`` and before ``CommonMiddleware`` (same place as LocaleMiddleware).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        language = language_from_cookie(request=request)
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()  # type: ignore[attr-defined]
        response = self.get_response(request)
        patch_vary_headers(response, ("Cookie",))
        response.headers.setdefault("Content-Language", language)
        translation.deactivate()
        return response
