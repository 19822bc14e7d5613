"""Plain-text error answers of the callback listener (no templates: the shop's pages link to the shop)."""

from django.http import HttpRequest, HttpResponse


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _plain(400, "Bad Request")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _plain(403, "Forbidden")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _plain(404, "Not Found")


def server_error(request: HttpRequest) -> HttpResponse:
    return _plain(500, "Server Error")
