from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("i18n/", include("django.conf.urls.i18n")),
    path(settings.ADMIN_PATH, admin.site.urls),  # KULIPA_ADMIN_PATH, default admin/
    path("", include("kulipa.observability.urls")),
    path("carrinho/", include("kulipa.cart.urls")),
    path("conta/", include("kulipa.accounts.urls")),
    path("", include("kulipa.orders.urls")),
    path("", include("kulipa.payments.urls")),
    path("", include("kulipa.catalog.urls")),
]
