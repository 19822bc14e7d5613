from django.urls import path

from kulipa.accounts import views

app_name = "accounts"

urlpatterns = [
    path("registar/", views.signup, name="signup"),
    path("entrar/", views.LoginView.as_view(), name="login"),
    path("sair/", views.LogoutView.as_view(), name="logout"),
]
