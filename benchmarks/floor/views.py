from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from benchmarks.floor.models import Hit


@csrf_exempt  # the load generator posts without a session; the shop's pay request does carry CSRF and a session
@require_POST
def insert(request: HttpRequest) -> HttpResponse:
    """One INSERT in one transaction, through the whole middleware stack: what the framework itself does here."""
    with transaction.atomic():
        Hit.objects.create()
    return HttpResponse(b"ok", content_type="text/plain")
