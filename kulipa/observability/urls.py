"""Health and metrics URLs, at the root: ``path("", include("kulipa.observability.urls"))``.

Normally :class:`kulipa.observability.middleware.ProbeMiddleware` answers these paths first (see there); the
patterns make them reversible and keep them served if that middleware is taken out.
"""

from django.urls import path

from kulipa.observability import views

app_name = "observability"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
]
