"""Answer the probes before anything else looks at the request.

Load balancers and Prometheus reach each process by its address (``http://10.0.0.5:8000/readyz``): Django's host
validation would answer 400 (the address is not in ``ALLOWED_HOSTS``, checked by ``CommonMiddleware``) and
``SECURE_SSL_REDIRECT`` would answer 301 to https. Placed first in ``settings.MIDDLEWARE``, this middleware
answers ``/healthz``, ``/readyz`` and ``/metrics`` itself and the rest of the stack (sessions, language, CSRF,
authentication) never runs for them. Every other path goes on unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from kulipa.observability import views

PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": views.healthz,
    "/readyz": views.readyz,
    "/metrics": views.metrics,
}


class ProbeMiddleware:
    """Serves :data:`PROBES` by exact path (``request.path_info``), before host checks and HTTPS redirects."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)
