from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from kulipa.core.config import SANDBOX, SIMULATOR


def shop(request: HttpRequest) -> dict[str, Any]:
    """Values every page needs: whether payments are simulated — the local simulator or Vodacom's sandbox (banner) —
    and the simulator's phone page."""
    mpesa = settings.MPESA
    return {
        "MPESA_SANDBOX": str(mpesa.get("ENVIRONMENT", "")).lower() in (SIMULATOR, SANDBOX),
        "MPESA_SANDBOX_PHONE_URL": mpesa["SANDBOX_PHONE_URL"],
    }
