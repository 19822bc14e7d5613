"""Who is asking: the client address of a request.

Every caller that limits, allows or logs by address (the callback allow-list, the abuse limits) asks here, so that
running behind a reverse proxy is one setting and not a change in each caller.
"""

from __future__ import annotations

from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The address of the client that sent ``request``; ``None`` when the server did not say."""
    return request.META.get("REMOTE_ADDR") or None
