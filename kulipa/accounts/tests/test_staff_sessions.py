"""Staff sessions end 8 hours after login, however busy; customers stay logged in for 30 days. Over HTTP, through
the real login pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kulipa.accounts.models import User
from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.models import Product
from kulipa.payments.tests.conftest import wait_for

pytestmark = pytest.mark.django_db

PASSWORD = "capulana-azul-2024"
EIGHT_HOURS = 8 * 3600
THIRTY_DAYS = 30 * 24 * 3600


@pytest.fixture(autouse=True)
def quick_hashes(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def staff_login(client: Client, email: str = "suporte@example.com") -> Any:
    User.objects.create_user(email=email, password=PASSWORD, is_staff=True)
    response = client.post(reverse("admin:login"), {"username": email, "password": PASSWORD})
    assert response.status_code == 302
    return response


def customer_login(client: Client, email: str = "ana@example.com") -> Any:
    User.objects.create_user(email=email, password=PASSWORD)
    response = client.post(reverse("accounts:login"), {"username": email, "password": PASSWORD})
    assert response.status_code == 302
    return response


def cookie_age(response: Any) -> int:
    return int(response.cookies[django_settings.SESSION_COOKIE_NAME]["max-age"])


def session_ends(client: Client) -> Any:
    return Session.objects.get(session_key=client.session.session_key).expire_date


def add_to_cart(client: Client) -> None:
    """A request that changes the session (the cart lives in it)."""
    item = Product.objects.create(
        name="Capulana", slug=f"capulana-{Product.objects.count()}", price="100.00", stock_on_hand=5
    )
    client.post(reverse("cart:add"), {"product_id": item.pk, "quantity": 1})
    assert str(item.pk) in client.session[CART_SESSION_KEY]


def test_staff_session_lasts_eight_hours_and_a_customers_thirty_days() -> None:
    staff, customer = Client(), Client()
    staff_cookie = cookie_age(staff_login(staff))
    customer_cookie = cookie_age(customer_login(customer))

    assert EIGHT_HOURS - 60 <= staff_cookie <= EIGHT_HOURS
    assert customer_cookie == THIRTY_DAYS
    now = timezone.now()
    assert abs(session_ends(staff) - (now + timedelta(seconds=EIGHT_HOURS))) < timedelta(minutes=1)
    assert abs(session_ends(customer) - (now + timedelta(days=30))) < timedelta(minutes=1)


def test_staff_session_end_does_not_move_with_activity() -> None:
    """Absolute: the end is fixed at login, while a customer's is renewed as the session changes."""
    staff, customer = Client(), Client()
    staff_login(staff)
    customer_login(customer)
    staff_ends, customer_ends = session_ends(staff), session_ends(customer)
    for _ in range(3):
        add_to_cart(staff)
        add_to_cart(customer)
        assert staff.get(reverse("admin:index")).status_code == 200
    assert session_ends(staff) == staff_ends
    assert session_ends(customer) > customer_ends


def test_staff_session_ends_on_time_and_the_back_office_asks_for_the_login_again(settings: Any) -> None:
    settings.STAFF_SESSION_SECONDS = 2
    staff, customer = Client(), Client()
    staff_login(staff)
    customer_login(customer)
    assert staff.get(reverse("admin:index")).status_code == 200

    def sent_to_login() -> bool:
        response = staff.get(reverse("admin:index"))
        return response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))

    wait_for(sent_to_login, timeout=15, interval=0.2, what="the staff session to end")
    assert "_auth_user_id" not in staff.session
    assert "_auth_user_id" in customer.session  # customers keep theirs


def test_a_customer_made_staff_gets_the_short_session_on_the_next_request() -> None:
    client = Client()
    customer_login(client, "novo.funcionario@example.com")
    User.objects.filter(email="novo.funcionario@example.com").update(is_staff=True)

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert EIGHT_HOURS - 60 <= cookie_age(response) <= EIGHT_HOURS
    assert session_ends(client) - timezone.now() <= timedelta(seconds=EIGHT_HOURS)
