"""``/healthz``, ``/readyz`` and ``/metrics``. Thin: the checks live in :mod:`.checks`, the scrape in
:mod:`.collectors`.

These views are normally answered by :class:`kulipa.observability.middleware.ProbeMiddleware` before any other
middleware (probes come by IP address, which ``ALLOWED_HOSTS`` would refuse, and over plain HTTP, which
``SECURE_SSL_REDIRECT`` would redirect); the URL patterns in :mod:`.urls` serve them when that middleware is not
installed. They use nothing of the request but its method and headers (no session, no user, no CSRF).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseNotFound, JsonResponse
from django.utils.cache import add_never_cache_headers
from prometheus_client.exposition import choose_encoder

from kulipa.observability import checks, collectors

SAFE_METHODS = ("GET", "HEAD")


def _never_cached(response: HttpResponse) -> HttpResponse:
    add_never_cache_headers(response)
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """Alive: the process serves requests. Touches nothing else (no database), so a database outage does not get
    every web process restarted by its supervisor."""
    if request.method not in SAFE_METHODS:
        return HttpResponseNotAllowed(SAFE_METHODS)
    return _never_cached(JsonResponse({"status": "alive"}))


def readyz(request: HttpRequest) -> HttpResponse:
    """Ready: 200 when every required check passes, else 503; the body names each check and its result."""
    if request.method not in SAFE_METHODS:
        return HttpResponseNotAllowed(SAFE_METHODS)
    results = checks.readiness()
    ready = not any(r.blocks for r in results)
    body = {"status": "ready" if ready else "not ready", "checks": {r.name: r.as_json() for r in results}}
    return _never_cached(JsonResponse(body, status=200 if ready else 503))


def _authorized(request: HttpRequest) -> bool:
    """``Authorization: Bearer <METRICS_TOKEN>`` (constant-time compare). Without a configured token: only with
    ``DEBUG`` (a developer's machine); in production ``/metrics`` then does not exist."""
    expected = str(getattr(settings, "METRICS_TOKEN", "") or "")
    if not expected:
        return bool(settings.DEBUG)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition (text format, or OpenMetrics when asked for) of this machine's processes and of
    the database. 404 without the right bearer token: the endpoint does not advertise itself."""
    if not _authorized(request):
        return _never_cached(HttpResponseNotFound(b"", content_type="text/plain"))
    if request.method not in SAFE_METHODS:
        return HttpResponseNotAllowed(SAFE_METHODS)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(collectors.scrape_registry())
    return _never_cached(HttpResponse(body, content_type=content_type))
