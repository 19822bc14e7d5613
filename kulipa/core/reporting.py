"""What Django's error pages and reports may show of the settings (``DEFAULT_EXCEPTION_REPORTER_FILTER``).

Django's :class:`~django.views.debug.SafeExceptionReporterFilter` hides settings whose name contains API, AUTH,
TOKEN, KEY, SECRET, PASS, SIGNATURE or HTTP_COOKIE, also inside dicts (so ``MPESA["API_KEY"]``). Not covered by
those names but secret all the same: ``MPESA["SECURITY_CREDENTIAL"]`` and ``INITIATOR_IDENTIFIER`` (reversals),
``MPESA["CALLBACK_URL"]`` (its path holds the callback token), and passwords inside URLs (``REDIS_URL``,
``HUEY["url"]``, a cache ``LOCATION``).
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.regex_helper import _lazy_re_compile
from django.views.debug import SafeExceptionReporterFilter

_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)


class SecretsFilter(SafeExceptionReporterFilter):
    hidden_settings = _lazy_re_compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CREDENTIAL|INITIATOR|CALLBACK_URL", flags=re.I
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return _URL_PASSWORD.sub(lambda m: f"{m.group('prefix')}{self.cleansed_substitute}@", cleansed)
        return cleansed
