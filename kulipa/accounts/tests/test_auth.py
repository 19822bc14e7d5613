import pytest
from django.urls import reverse

from kulipa.accounts.models import User

pytestmark = pytest.mark.django_db

SIGNUP = reverse("accounts:signup")
LOGIN = reverse("accounts:login")
LOGOUT = reverse("accounts:logout")
PASSWORD = "capulana-azul-2024"


def test_signup_creates_account_and_logs_in(client):
    response = client.post(
        SIGNUP, {"email": "Ana.Macuacua@Example.com", "password1": PASSWORD, "password2": PASSWORD}, follow=True
    )

    user = User.objects.get()
    assert user.email == "ana.macuacua@example.com"
    assert user.check_password(PASSWORD)
    assert not user.is_staff
    assert response.wsgi_request.user == user
    assert response.redirect_chain[-1][0] == "/"
    html = response.content.decode()
    assert "Bem-vindo! A sua conta foi criada." in html
    assert "Sair" in html


def test_signup_refuses_mismatched_or_weak_passwords(client):
    mismatch = client.post(SIGNUP, {"email": "a@example.com", "password1": PASSWORD, "password2": PASSWORD + "x"})
    weak = client.post(SIGNUP, {"email": "b@example.com", "password1": "12345678", "password2": "12345678"})

    assert "As duas palavra-passe não coincidem." in mismatch.content.decode()
    assert "Esta palavra-passe é muito comum." in weak.content.decode()  # Django's validator, in Portuguese
    assert not User.objects.exists()


def test_signup_refuses_an_email_that_exists_in_any_case(client):
    User.objects.create_user(email="ana@example.com", password=PASSWORD)

    response = client.post(SIGNUP, {"email": "ANA@example.com", "password1": PASSWORD, "password2": PASSWORD})

    assert "Já existe uma conta com este e-mail." in response.content.decode()
    assert User.objects.count() == 1


def test_login_with_email_in_any_case_and_logout(client):
    User.objects.create_user(email="ana@example.com", password=PASSWORD)

    response = client.post(LOGIN, {"username": " Ana@Example.COM ", "password": PASSWORD}, follow=True)
    assert response.wsgi_request.user.is_authenticated
    assert response.redirect_chain[-1][0] == "/"

    assert client.get(LOGOUT).status_code == 405  # logging out needs a POST (CSRF-protected)
    response = client.post(LOGOUT, follow=True)
    assert not response.wsgi_request.user.is_authenticated
    assert "Entrar" in response.content.decode()


def test_login_with_wrong_password_says_so(client):
    User.objects.create_user(email="ana@example.com", password=PASSWORD)

    response = client.post(LOGIN, {"username": "ana@example.com", "password": "errada"})

    assert response.status_code == 200
    assert "E-mail ou palavra-passe errados." in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_goes_to_next(client):
    User.objects.create_user(email="ana@example.com", password=PASSWORD)
    response = client.post(LOGIN, {"username": "ana@example.com", "password": PASSWORD, "next": "/carrinho/"})
    assert response["Location"] == "/carrinho/"


def test_signup_goes_to_safe_next_only(client):
    ok = client.post(
        SIGNUP, {"email": "a@example.com", "password1": PASSWORD, "password2": PASSWORD, "next": "/carrinho/"}
    )
    client.post(LOGOUT)
    evil = client.post(
        SIGNUP,
        {"email": "b@example.com", "password1": PASSWORD, "password2": PASSWORD, "next": "https://evil.example/"},
    )
    assert ok["Location"] == "/carrinho/"
    assert evil["Location"] == "/"
