from django.urls import path

from benchmarks.floor import views
from kulipa.urls import urlpatterns as shop_urlpatterns

urlpatterns = [path("_floor/", views.insert), *shop_urlpatterns]
