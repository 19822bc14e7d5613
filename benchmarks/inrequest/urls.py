"""The shop's URLs (``kulipa.urls``, unchanged) plus ``/bench/pay-in-request/``."""

from django.urls import include, path

from benchmarks.inrequest.views import pay_in_request

urlpatterns = [
    path("bench/pay-in-request/", pay_in_request, name="bench_pay_in_request"),
    path("", include("kulipa.urls")),
]
