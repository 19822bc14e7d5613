from django.urls import path

from kulipa.catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.product_list, name="product_list"),
    path("produto/<slug:slug>/", views.product_detail, name="product_detail"),
]
