"""The listener's URLconf: the callback routes of ``kulipa.payments.urls`` (taken from there, so a changed path
changes both), under the same ``payments`` namespace. Everything else is 404, answered in plain text: the shop's
error pages need the shop's URLs."""

from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, include, path

from kulipa.payments import urls as payment_urls
from kulipa.payments import views as payment_views

callback_patterns = [
    p for p in payment_urls.urlpatterns if isinstance(p, URLPattern) and p.callback is payment_views.mpesa_callback
]
if not callback_patterns:
    raise ImproperlyConfigured("kulipa.payments.urls has no route to views.mpesa_callback")

urlpatterns = [path("", include((callback_patterns, payment_urls.app_name)))]

handler400 = "kulipa.callback_listener.views.bad_request"
handler403 = "kulipa.callback_listener.views.permission_denied"
handler404 = "kulipa.callback_listener.views.not_found"
handler500 = "kulipa.callback_listener.views.server_error"
