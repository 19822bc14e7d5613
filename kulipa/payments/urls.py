"""Payment URLs. Include at the root: ``path("", include("kulipa.payments.urls"))``.

The order page itself (``/pedido/<public_id>/``, ``orders:detail``) is wired by ``kulipa.orders.urls`` to
``kulipa.payments.views.order_detail``.
"""

from django.urls import path

from kulipa.payments import views

app_name = "payments"

urlpatterns = [
    path("pedido/<str:public_id>/estado/", views.order_status, name="status"),
    path("pedido/<str:public_id>/pagar/", views.payment_retry, name="retry"),
    path("pedido/<str:public_id>/cancelar/", views.order_cancel, name="cancel"),
    path("api/mpesa/callback", views.mpesa_callback, name="callback"),
    path("api/mpesa/callback/<str:token>", views.mpesa_callback, name="callback_token"),
]
