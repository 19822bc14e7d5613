"""Login throttling through the real login pages (the shop's and the back office's), with django-axes counting in
the database: locked after a few failures for a cool-off, even for the right password; a stranger elsewhere cannot
lock a customer out, and nobody can keep a lock on past the cool-off."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from prometheus_client import REGISTRY

from kulipa.accounts.models import User
from kulipa.payments.tests.conftest import wait_for

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")
ADMIN_LOGIN = reverse("admin:login")
PASSWORD = "capulana-azul-2024"
EMAIL = "ana@example.com"
HERE = "198.51.100.7"
ELSEWHERE = "203.0.113.9"
LOCKED_PT = "Demasiadas tentativas de entrada falhadas. Por segurança, espere 15 minutos e tente de novo."
LOCKED_EN = "Too many failed login attempts. For your security, wait 15 minutes and try again."
WRONG_PT = "E-mail ou palavra-passe errados."


@pytest.fixture(autouse=True)
def quick_hashes(settings: Any) -> None:
    """Password checks at test speed (the limits do not depend on the hasher)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ana() -> User:
    return User.objects.create_user(email=EMAIL, password=PASSWORD)


def hits(limit: str) -> float:
    return REGISTRY.get_sample_value("kulipa_limits_hit_total", {"limit": limit}) or 0.0


def shop_login(client: Client, email: str, password: str) -> Any:
    return client.post(LOGIN, {"username": email, "password": password})


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_five_failures_lock_the_shop_login_even_for_the_right_password(ana: User) -> None:
    client = Client(REMOTE_ADDR=HERE)
    for _ in range(4):
        response = shop_login(client, EMAIL, "errada")
        assert response.status_code == 200
        assert WRONG_PT in response.content.decode()
    before = hits("login_user_ip")

    fifth = shop_login(client, EMAIL, "errada")
    right = shop_login(client, EMAIL, PASSWORD)
    other_case = shop_login(client, " Ana@Example.COM ", PASSWORD)

    for response in (fifth, right, other_case):
        assert response.status_code == 429
        assert response["Retry-After"] == "900"
        html = response.content.decode()
        assert LOCKED_PT in html and WRONG_PT not in html
        assert 'name="username"' in html  # the login page itself, saying why
    assert not logged_in(client)
    assert hits("login_user_ip") == before + 3
    # A stranger's failures lock only their own address: the customer elsewhere logs in.
    customer = Client(REMOTE_ADDR=ELSEWHERE)
    assert shop_login(customer, EMAIL, PASSWORD).status_code == 302
    assert logged_in(customer)


def test_the_lock_message_is_in_the_chosen_language(ana: User) -> None:
    client = Client(REMOTE_ADDR=HERE)
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "en"
    for _ in range(5):
        response = shop_login(client, EMAIL, "wrong")
    assert response.status_code == 429
    assert LOCKED_EN in response.content.decode()


def test_a_successful_login_before_the_limit_starts_the_count_again(ana: User) -> None:
    client = Client(REMOTE_ADDR=HERE)
    for _ in range(4):
        shop_login(client, EMAIL, "errada")
    assert shop_login(client, EMAIL, PASSWORD).status_code == 302
    client.post(reverse("accounts:logout"))
    for _ in range(4):
        response = shop_login(client, EMAIL, "errada")
        assert response.status_code == 200 and WRONG_PT in response.content.decode()
    assert shop_login(client, EMAIL, PASSWORD).status_code == 302


def test_the_lock_lifts_after_the_cool_off_even_while_a_stranger_keeps_failing(ana: User, settings: Any) -> None:
    """Failures while locked are refused without being counted, so they cannot keep the lock on: the customer
    behind the same address (a shared mobile operator's) gets in once the cool-off has passed."""
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    stranger, customer = Client(REMOTE_ADDR=HERE), Client(REMOTE_ADDR=HERE)
    for _ in range(5):
        shop_login(stranger, EMAIL, "errada")
    assert shop_login(customer, EMAIL, PASSWORD).status_code == 429

    def customer_gets_in() -> bool:
        shop_login(stranger, EMAIL, "errada")
        return bool(shop_login(customer, EMAIL, PASSWORD).status_code == 302)

    wait_for(customer_gets_in, timeout=20, interval=0.2, what="the lock to lift")
    assert logged_in(customer)


def test_many_accounts_tried_from_one_address_lock_that_address(ana: User, settings: Any) -> None:
    """Password spraying: one failure each for many e-mails from one address locks the address for every e-mail
    (at a higher limit than one e-mail's), and only that address."""
    settings.LOGIN_IP_FAILURE_LIMIT = 6
    sprayer = Client(REMOTE_ADDR=HERE)
    before = hits("login_ip")
    for n in range(5):
        assert shop_login(sprayer, f"cliente{n}@example.com", "123456").status_code == 200
    sixth = shop_login(sprayer, "cliente5@example.com", "123456")
    right = shop_login(sprayer, EMAIL, PASSWORD)

    assert sixth.status_code == right.status_code == 429
    assert LOCKED_PT in right.content.decode()
    assert not logged_in(sprayer)
    assert hits("login_ip") == before + 2
    assert shop_login(Client(REMOTE_ADDR=ELSEWHERE), EMAIL, PASSWORD).status_code == 302


def test_the_back_office_login_locks_and_a_reset_unlocks_it() -> None:
    """The admin login: locked after five failures (the right password refused, in the admin's page with the reason),
    and ``manage.py axes_reset_username`` — the documented way for a locked-out staff member — unlocks at once."""
    User.objects.create_user(email="financeiro@example.com", password=PASSWORD, is_staff=True)
    client = Client(REMOTE_ADDR=HERE)
    for _ in range(5):
        response = client.post(ADMIN_LOGIN, {"username": "financeiro@example.com", "password": "errada"})
    right = client.post(ADMIN_LOGIN, {"username": "financeiro@example.com", "password": PASSWORD})

    for locked in (response, right):
        assert locked.status_code == 429
        html = locked.content.decode()
        assert LOCKED_PT in html and 'name="password"' in html
    assert not logged_in(client)
    assert client.get(reverse("admin:index")).status_code == 302

    output = io.StringIO()
    call_command("axes_reset_username", "financeiro@example.com", stdout=output)
    assert "attempts removed" in output.getvalue()
    unlocked = client.post(ADMIN_LOGIN, {"username": "financeiro@example.com", "password": PASSWORD})
    assert unlocked.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


def test_the_back_office_lock_message_in_english() -> None:
    User.objects.create_user(email="suporte@example.com", password=PASSWORD, is_staff=True)
    client = Client(REMOTE_ADDR=HERE)
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "en"
    for _ in range(5):
        response = client.post(ADMIN_LOGIN, {"username": "suporte@example.com", "password": "wrong"})
    assert response.status_code == 429
    assert LOCKED_EN in response.content.decode()
