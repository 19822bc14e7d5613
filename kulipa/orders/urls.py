from django.urls import path

from kulipa.orders import views
from kulipa.payments import views as payment_views

app_name = "orders"

urlpatterns = [
    path("checkout/", views.checkout, name="checkout"),
    # The order page (lines, live payment status, "try again") belongs to kulipa.payments.
    path("pedido/<str:public_id>/", payment_views.order_detail, name="detail"),
    path("conta/encomendas/", views.order_history, name="history"),
]
