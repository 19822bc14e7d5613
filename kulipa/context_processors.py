from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def shop(request: HttpRequest) -> dict[str, Any]:
    """Values every page needs: whether payments go to the sandbox (banner) and the sandbox phone page."""
    mpesa = settings.MPESA
    return {
        "MPESA_SANDBOX": not mpesa["API_KEY"] or mpesa["ENVIRONMENT"] == "sandbox",
        "MPESA_SANDBOX_PHONE_URL": mpesa["SANDBOX_PHONE_URL"],
    }
