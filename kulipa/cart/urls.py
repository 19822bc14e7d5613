from django.urls import path

from kulipa.cart import views

app_name = "cart"

urlpatterns = [
    path("", views.cart_detail, name="detail"),
    path("adicionar/", views.cart_add, name="add"),
    path("actualizar/", views.cart_update, name="update"),
    path("remover/", views.cart_remove, name="remove"),
]
