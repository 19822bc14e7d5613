"""Fuzzing the cart over HTTP: add, update and remove with any product id, quantity, ``next`` and htmx header.

Each example is a customer with a cart who sends one to three changes. The cart in the session must end up
exactly as a small model of the rules says (a product for sale, 1..MAX_LINE_QUANTITY, never more than is
available; anything else leaves the cart as it was, with a message saying why); the answer is a redirect to a
page of this site (never elsewhere: ``next`` is not an open redirect) or, with htmx, the refreshed fragment; the
database never changes (a cart holds no stock); never a 5xx.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django import forms
from django.conf import settings as django_settings
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils.http import url_has_allowed_host_and_scheme
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.models import Product
from kulipa.orders.tests.factories import product_make
from kulipa.payments.tests.fuzzing import scaled, world

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

CUSTOMER = Client()
"""One client for every example (cookies cleared: a new session each time); a new one loads the middleware again."""
MISSING = object()
ACTIONS = {"add": "/carrinho/adicionar/", "set": "/carrinho/actualizar/", "remove": "/carrinho/remover/"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Abuse limits count in the cache: none counted at the start. Examples clear it too."""
    cache.clear()
    yield
    cache.clear()


@dataclass(frozen=True)
class Catalog:
    few: Product
    """5 in stock."""
    many: Product
    sold_out: Product
    withdrawn: Product

    def available(self, pid: int) -> int:
        return {self.few.pk: 5, self.many.pk: 1000}.get(pid, 0)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        few=product_make(stock=5),
        many=product_make(stock=1000),
        sold_out=product_make(stock=0),
        withdrawn=product_make(stock=10, active=False),
    )


def django_int(value: Any) -> int | None:
    """How a form reads an integer field (Django's parsing, not the shop's rules): None if it is not one."""
    if value is MISSING:
        return None
    try:
        number = forms.IntegerField(required=True).clean(value)
    except ValidationError:
        return None
    return int(number)


def expected_cart(cart: dict[int, int], action: str, pid: int | None, qty: int | None, catalog: Catalog) -> bool:
    """Apply the shop's rules to ``cart`` (in place); False when the change must be refused."""
    limit = django_settings.MAX_LINE_QUANTITY
    if pid is None or pid < 1:
        return False
    if action == "remove":
        cart.pop(pid, None)
        return True
    if qty is None or not 1 <= qty <= limit:
        return False
    new = cart.get(pid, 0) + qty if action == "add" else qty
    if new > limit or new > catalog.available(pid):
        return False
    cart[pid] = new
    return True


product_ids = st.one_of(
    st.sampled_from(["0", "-1", "", " ", "abc", "1.5", "1e3", "0x10", "1\x00", str(2**31), str(2**63), str(10**30)]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=20),
    st.just(MISSING),
)
quantities = st.one_of(
    st.integers(1, 3).map(str),
    st.integers(-5, 30).map(str),
    st.sampled_from(["", "abc", "1.5", "2.0", " 2 ", "+1", "1_0", "٣", "1e1", str(10**30), "\x00"]),
    st.text(max_size=10),
    st.just(MISSING),
)
next_urls = st.one_of(
    st.just(MISSING),
    st.sampled_from(
        [
            "/",
            "/carrinho/",
            "/checkout/",
            "//evil.example/x",
            "https://evil.example/",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2F%2Fevil.example",
            "javascript:alert(1)",
            "/produto/x/\n",
            " /x",
            "/\x00",
            "foo",
        ]
    ),
    st.text(max_size=30),
    st.text(alphabet=string.printable, max_size=30).map(lambda s: "/" + s),
)


@st.composite
def change(draw: st.DrawFn, catalog: Catalog) -> dict[str, Any]:
    action = draw(st.sampled_from(sorted(ACTIONS)))
    good_ids = [catalog.few.pk, catalog.many.pk]
    other_ids = [catalog.sold_out.pk, catalog.withdrawn.pk, 99_999_999]
    pid = draw(
        st.one_of(
            st.sampled_from(good_ids).map(str),
            st.sampled_from(good_ids).map(lambda p: f" {p} "),
            st.sampled_from(other_ids).map(str),
            product_ids,
        )
    )
    return {
        "action": action,
        "product_id": pid,
        "quantity": draw(quantities) if action != "remove" else draw(st.just(MISSING) | quantities),
        "next": draw(next_urls),
        "htmx": draw(st.sampled_from([None, "true", "false"])),
        "extra": draw(st.dictionaries(st.sampled_from(["price", "unit_price", "total"]), st.text(max_size=8))),
    }


def is_local(location: str) -> bool:
    return (
        location.startswith("/")
        and not location.startswith(("//", "/\\"))
        and url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"})
    )


@given(data=st.data())
@settings(max_examples=scaled(1.5))
def test_cart_changes_follow_the_rules_stay_on_this_site_and_touch_no_stock(
    catalog: Catalog, data: st.DataObject
) -> None:
    cache.clear()
    CUSTOMER.cookies.clear()
    cart = data.draw(
        st.dictionaries(st.sampled_from([catalog.few.pk, catalog.many.pk]), st.integers(1, 5), max_size=2),
        label="starting cart",
    )
    session = CUSTOMER.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in cart.items()}
    session.save()
    before = world()
    for step in data.draw(st.lists(change(catalog), min_size=1, max_size=3), label="changes"):
        fields = {**step["extra"], "product_id": step["product_id"], "quantity": step["quantity"], "next": step["next"]}
        headers = {"HX-Request": step["htmx"]} if step["htmx"] else {}
        response = CUSTOMER.post(
            ACTIONS[step["action"]], {k: v for k, v in fields.items() if v is not MISSING}, headers=headers
        )
        pid, qty = django_int(step["product_id"]), django_int(step["quantity"])
        ok = expected_cart(cart, step["action"], pid, qty, catalog)
        event(f"{step['action']} {'accepted' if ok else 'refused'}")
        if step["htmx"] == "true":
            assert response.status_code == 200 and b"cart" in response.content
        else:
            assert response.status_code == 302, response.status_code
            assert is_local(response["Location"]), f"redirected off the site: {response['Location']!r}"
        stored = {int(k): v for k, v in CUSTOMER.session.get(CART_SESSION_KEY, {}).items()}
        assert stored == cart, f"{step['action']} {fields!r}: cart {stored} instead of {cart}"
        told = list(get_messages(response.wsgi_request))  # earlier steps' messages first, if not shown yet
        assert told and told[-1].level == (message_levels.SUCCESS if ok else message_levels.ERROR), told
    assert world() == before, "a cart change touched the database"


def test_a_cart_change_without_a_csrf_token_is_refused(catalog: Catalog) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.get("/carrinho/")
    data = {"product_id": str(catalog.many.pk), "quantity": "1"}
    for path in ACTIONS.values():
        assert strict.post(path, data).status_code == 403
        assert strict.post(path, {**data, "csrfmiddlewaretoken": "x" * 64}).status_code == 403
    assert CART_SESSION_KEY not in strict.session
    token = strict.cookies["csrftoken"].value
    assert strict.post(ACTIONS["add"], {**data, "csrfmiddlewaretoken": token}).status_code == 302
    assert strict.session[CART_SESSION_KEY] == {str(catalog.many.pk): 1}
