"""Fuzzing checkout, the order page and "try again" over HTTP, against the real simulator.

Each example is one customer: a fresh session with a cart, the checkout page (GET), then a POST of generated
fields. Every part of the input is drawn as known-good, known-bad or anything at all:

* all parts good → 303 to the new order page; one order, its lines, one attempt, its reservations; the simulator
  records exactly one push, to the number typed (normalised) for the total the page showed;
* any part bad → the page again (200, saying what is wrong) or back to the cart (302); nothing in the database
  changes and the simulator records no push;
* anything else → one of the two, consistently; and never a 5xx.

Good numbers end in 01 (the simulator approves at once) and each good example waits until its payment is settled,
so the next example starts from a still world.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.test import Client
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.models import Product
from kulipa.orders.forms import CheckoutForm
from kulipa.orders.models import Order
from kulipa.orders.snapshot import snapshot_current, snapshot_sign
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests import conftest as payment_fixtures
from kulipa.payments.tests.conftest import Simulator, checkout, product, reconcile_until
from kulipa.payments.tests.fuzzing import scaled, world

pytestmark = pytest.mark.fuzz

sandbox = payment_fixtures.sandbox  # the real simulator and the shop pointed at it, as in kulipa.payments' tests
sim = payment_fixtures.sim

CHECKOUT = "/checkout/"
CUSTOMER = Client()
"""One client for every example (cookies cleared: a new session each time); a new one loads the middleware again."""
MISSING = object()
"""A form field left out of the POST altogether."""
Drawn = tuple[Any, bool | None]
"""A value and its verdict: True good, False bad (must be refused), None anything (either, consistently)."""


@pytest.fixture(autouse=True)
def _no_caps(settings: Any) -> None:
    """The caps kept in the database (attempts per order, units held) outlive an example; they have their own tests
    (kulipa/payments/tests/test_limits.py). Here every example must be judged on its input alone."""
    settings.LIMIT_ATTEMPTS_PER_ORDER = 0
    settings.LIMIT_UNITS_HELD_PER_SESSION = 0
    settings.LIMIT_UNITS_HELD_PER_PHONE = 0
    settings.LIMIT_UNITS_HELD_PER_IP = 0


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Abuse limits (rate limits on checkout) count in the cache: none counted at the start. Examples clear it."""
    cache.clear()
    yield
    cache.clear()


@dataclass(frozen=True)
class Shop:
    cheap: Product
    other: Product
    dear: Product
    """Two of these are above MAX_ORDER_TOTAL."""
    sold_out: Product
    withdrawn: Product


@pytest.fixture
def shop(sim: Simulator) -> Shop:
    dear_price = (django_settings.MAX_ORDER_TOTAL * Decimal("0.6")).quantize(Decimal("0.01"))
    withdrawn = product(price="10.00", stock=10)
    Product.objects.filter(pk=withdrawn.pk).update(is_active=False)
    return Shop(
        cheap=product(price="125.50", stock=1_000_000),
        other=product(price="0.99", stock=1_000_000),
        dear=product(price=str(dear_price), stock=1_000_000),
        sold_out=product(price="50.00", stock=0),
        withdrawn=withdrawn,
    )


# --- what a customer may send ------------------------------------------------------------------------------
digits = st.text(alphabet=string.digits, min_size=1, max_size=1)
separators = st.sampled_from(["", "", "", " ", "-", ".", "(", ")"])


@st.composite
def good_msisdn(draw: st.DrawFn, suffix: str = "01") -> tuple[str, str]:
    """(as typed, canonical): a Vodacom number ending in ``suffix`` (the simulator's scenario: 01 approved, 03
    declined, both at once), in any of the ways people write it, at most 24 characters."""
    local = draw(st.sampled_from(["84", "85"])) + "".join(draw(digits) for _ in range(5)) + suffix
    typed = "".join(ch + draw(separators) for ch in local)
    prefix = draw(st.sampled_from(["", "", "+258", "258", "00258", "+258 ", "(+258) "]))
    text = draw(st.sampled_from(["", " "])) + prefix + typed
    if len(text.strip()) > 24:
        text = prefix + local
    return text, "258" + local


bad_msisdn = st.one_of(
    st.builds(
        lambda p, rest: p + rest,
        st.sampled_from(["82", "83", "86", "87"]),
        st.text(string.digits, min_size=7, max_size=7),
    ),
    st.text(alphabet=string.digits, min_size=1, max_size=8),
    st.text(alphabet=string.digits, min_size=10, max_size=11).filter(lambda s: not s.startswith(("258", "00"))),
    st.sampled_from(
        [
            "",
            "   ",
            "84 123 456a",
            "٨٤١٢٣٤٥٦٧",  # Arabic-Indic digits
            "８４１２３４５６７",  # full-width digits
            "84\x00123 4567",
            "+258 84 123 4567 ext 1",
            "8 4 1 2 3 4 5 6 7 0 1 2 3",
            "+27 84 123 4567",
        ]
    ),
    st.integers(3, 1000).map(lambda n: "841234567" * n),  # far over the field's 24 characters
)


@st.composite
def msisdn_field(draw: st.DrawFn, valid: bool = False) -> Drawn:
    kind = "good" if valid else draw(st.sampled_from(["good", "bad", "bad", "any", "missing"]))
    if kind == "good":
        typed, _ = draw(good_msisdn())
        return typed, True
    if kind == "bad":
        return draw(bad_msisdn), False
    if kind == "missing":
        return MISSING, False
    return draw(st.text(max_size=30)), None


names = st.text(alphabet=st.characters(categories=["L", "M"], exclude_characters="\x00"), min_size=1, max_size=40)


@st.composite
def name_field(draw: st.DrawFn, valid: bool = False) -> Drawn:
    kind = "good" if valid else draw(st.sampled_from(["good", "good", "bad", "any"]))
    if kind == "good":
        parts = draw(st.lists(names, min_size=1, max_size=3))
        return draw(st.sampled_from([" ", "  ", "\t"])).join(parts)[:120], True
    if kind == "bad":
        return draw(st.sampled_from(["", "   ", "\t\n", "A" * 121, "Ana\x00Cossa", MISSING])), False
    return draw(st.text(max_size=150)), None


@st.composite
def email_field(draw: st.DrawFn, valid: bool = False) -> Drawn:
    kind = "good" if valid else draw(st.sampled_from(["good", "good", "bad", "any"]))
    if kind == "good":
        return draw(st.sampled_from(["", "ana@example.co.mz", "  jose.m@exemplo.mz ", MISSING])), True
    if kind == "bad":
        return draw(st.sampled_from(["ana", "ana@", "@example.com", "a b@c.mz", "ana@exa\x00mple.mz"])), False
    return draw(st.text(max_size=60)), None


@st.composite
def address_field(draw: st.DrawFn, valid: bool = False) -> Drawn:
    kind = "good" if valid else draw(st.sampled_from(["good", "good", "bad", "any"]))
    if kind == "good":
        return draw(
            st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=300)
        ), True
    if kind == "bad":
        return draw(st.sampled_from(["x" * 1001, "Rua\x00 1"])), False
    return draw(st.text(max_size=1100)), None


@st.composite
def token_field(draw: st.DrawFn, valid: bool = False) -> Drawn:
    kind = "good" if valid else draw(st.sampled_from(["good", "good", "bad", "bad", "any"]))
    if kind == "good":
        return secrets.token_urlsafe(24), True
    if kind == "bad":
        return draw(st.sampled_from(["", "short", "x" * 65, "\x00" * 20, "abc\x00defghijklmnopq", MISSING])), False
    return draw(st.text(max_size=70)), None


cart_kinds = st.sampled_from(
    ["good", "good", "good", "good", "too_large", "sold_out", "withdrawn", "too_many", "empty"]
)
snapshot_kinds = st.sampled_from(["page", "page", "page", "page", "tampered", "other", "missing", "garbage"])
extra_fields = st.dictionaries(
    st.sampled_from(["total", "price", "amount", "unit_price", "quantity", "status", "paid", "user", "msisdn2"]),
    st.text(max_size=12),
    max_size=3,
)


def cart_for(kind: str, shop: Shop, quantities: tuple[int, int]) -> tuple[dict[int, int], bool]:
    a, b = quantities
    carts: dict[str, tuple[dict[int, int], bool]] = {
        "good": ({shop.cheap.pk: a, shop.other.pk: b} if b else {shop.cheap.pk: a}, True),
        "too_large": ({shop.dear.pk: 2, shop.cheap.pk: a}, False),
        "sold_out": ({shop.sold_out.pk: 1, shop.cheap.pk: a}, False),
        # the page drops a product no longer for sale before the customer confirms: the rest can be bought
        "withdrawn": ({shop.withdrawn.pk: 1, shop.cheap.pk: a}, True),
        "too_many": ({shop.cheap.pk: django_settings.MAX_LINE_QUANTITY + a}, False),
        "empty": ({}, False),
    }
    return carts[kind]


def snapshot_for_kind(kind: str, page: str, quantities: dict[int, int], garbage: str) -> Drawn:
    if kind == "page":
        return page, True
    if kind == "tampered":
        if not page:
            return "", False
        i = len(page) // 2
        return page[:i] + ("A" if page[i] != "A" else "B") + page[i + 1 :], False
    if kind == "other":  # genuinely signed, but for another cart than this one (of products for sale)
        for_sale = set(Product.objects.filter(is_active=True).values_list("pk", flat=True))
        other = {pid: qty + 1 for pid, qty in quantities.items() if pid in for_sale}
        return snapshot_sign(snapshot_current(quantities=other or {min(for_sale): 7})), False
    if kind == "missing":
        return MISSING, False
    return garbage, False


def post_data(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not MISSING}


def settle(order: Order) -> None:
    """Wait until the order's push has been answered and recorded (01 and 03 are answered at once; any other
    number is settled by the sweep, as in production)."""
    assert get_engine().wait_idle(15)
    reconcile_until(
        lambda: not PaymentAttempt.objects.filter(order=order, state__in=PaymentAttempt.IN_FLIGHT).exists(),
        what="payment settled",
    )


@pytest.fixture
def placed() -> list[Order]:
    """Orders placed by earlier examples of the test (a later one may submit the same form again)."""
    return []


# --- checkout ----------------------------------------------------------------------------------------------
@given(data=st.data())
@settings(max_examples=scaled(1))
def test_checkout_places_exactly_the_valid_orders_and_nothing_else(
    shop: Shop, sim: Simulator, placed: list[Order], data: st.DataObject
) -> None:
    # A third of the customers send a valid checkout; the others mix good, bad and arbitrary parts.
    valid = data.draw(st.integers(0, 2), label="mode") == 0
    cart_kind = "good" if valid else data.draw(cart_kinds, label="cart")
    quantities = data.draw(st.tuples(st.integers(1, 3), st.integers(0, 3)), label="quantities")
    msisdn = data.draw(msisdn_field(valid), label="msisdn")
    name = data.draw(name_field(valid), label="customer_name")
    email = data.draw(email_field(valid), label="email")
    address = data.draw(address_field(valid), label="delivery_address")
    token = data.draw(token_field(valid), label="checkout_token")
    snapshot_kind = "page" if valid else data.draw(snapshot_kinds, label="snapshot")
    garbage = data.draw(st.text(max_size=80) | st.just("x" * 5000), label="garbage")
    extra = data.draw(extra_fields, label="extra")
    replay = data.draw(st.integers(0, 9), label="replay") == 0
    cache.clear()
    CUSTOMER.cookies.clear()
    cart, cart_ok = cart_for(cart_kind, shop, quantities)
    session = CUSTOMER.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in cart.items()}
    session.save()
    page = CUSTOMER.get(CHECKOUT)
    assert page.status_code in (200, 302)
    signed = page.context["snapshot"] if page.status_code == 200 else ""
    snapshot, snapshot_ok = snapshot_for_kind(snapshot_kind, signed, cart, garbage)
    fields = {
        **extra,
        "customer_name": name[0],
        "msisdn": msisdn[0],
        "email": email[0],
        "delivery_address": address[0],
        "checkout_token": token[0],
        "snapshot": snapshot,
    }
    verdicts = [cart_ok, snapshot_ok, msisdn[1], name[1], email[1], address[1], token[1]]
    expected = False if False in verdicts else (True if all(verdicts) else None)
    earlier = placed[-1] if replay and placed else None
    if earlier is not None:  # a double submit of an order placed before, from another tab of the same person
        fields["checkout_token"] = earlier.checkout_token
        expected = None

    before, pushes = world(), len(sim.transactions())
    response = CUSTOMER.post(CHECKOUT, post_data(fields))
    assert response.status_code in (200, 302, 303), response.status_code
    event(f"checkout answered {response.status_code}" + (" (valid)" if valid else ""))

    if response.status_code == 303 and earlier is not None and response["Location"] == earlier.get_absolute_url():
        assert world() == before and len(sim.transactions()) == pushes, "a double submit places nothing new"
        return
    if response.status_code != 303:
        assert expected is not True, f"a valid checkout was refused ({response.status_code}): {fields!r}"
        after = world()
        assert after == before, f"a refused checkout changed {after.diff(before)}"
        assert len(sim.transactions()) == pushes, "a refused checkout pushed a payment"
        if response.status_code == 200 and cart_ok and snapshot_ok and msisdn[1] is False and name[1] is not False:
            assert "msisdn" in response.context["form"].errors  # the customer is told which field is wrong
        return

    assert expected is not False, f"an invalid checkout was placed: {fields!r}"
    order = Order.objects.get(public_id=response["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert response["Location"] == order.get_absolute_url()
    placed.append(order)
    settle(order)
    attempt = order.payment_attempts.get()
    tx = sim.known_transaction(attempt.third_party_reference)
    assert len(sim.transactions()) == pushes + 1
    assert tx["msisdn"] == order.msisdn == attempt.msisdn
    if msisdn[1] is True:
        assert order.msisdn == "258" + "".join(ch for ch in msisdn[0] if ch.isdigit())[-9:]
    assert Decimal(tx["amount"]) == order.total == attempt.amount
    assert order.total == page.context["total"], "the amount pushed is the total the page showed"
    assert order.customer_name == " ".join(str(name[0]).split())
    changed = world().diff(before)
    assert len(world().orders) == len(before.orders) + 1
    assert set(changed) <= {"orders", "order_lines", "attempts", "events", "reservations", "products"}, changed
    assert CUSTOMER.session.get(CART_SESSION_KEY) in (None, {}), "the cart is emptied once the order is placed"


# --- the order page and "try again" ------------------------------------------------------------------------
order_ids = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=22, max_size=22),
    st.sampled_from(["\x00", "a\x00b", "..", "%00", "' OR 1=1 --", "x" * 5000]),
)


@pytest.mark.django_db
@given(public_id=order_ids)
@settings(max_examples=scaled(1))
def test_the_order_pages_answer_any_unknown_id_with_404_and_change_nothing(public_id: str) -> None:
    cache.clear()
    before = world()
    base = f"/pedido/{quote(public_id, safe='')}/"
    for method, path in (
        ("get", base),
        ("get", f"{base}estado/"),
        ("post", f"{base}pagar/"),
        ("post", f"{base}cancelar/"),
    ):
        response = getattr(CUSTOMER, method)(path, {"msisdn": "84 123 4501", "after": "1"} if method == "post" else {})
        assert response.status_code == 404, (path, response.status_code)
    assert world() == before


@st.composite
def retry_msisdn(draw: st.DrawFn) -> Drawn:
    """A number for "try again": good ones end in 03 (declined at once, so the order can be tried again)."""
    kind = draw(st.sampled_from(["good", "good", "same", "bad", "any"]))
    if kind == "good":
        typed, _ = draw(good_msisdn("03"))
        return typed, True
    if kind == "same":  # empty or left out: the number of the last attempt
        return draw(st.sampled_from(["", "   ", MISSING])), True
    if kind == "bad":
        return draw(bad_msisdn.filter(lambda m: m.strip() != "")), False
    return draw(st.text(max_size=25)), None


@given(data=st.data())
@settings(max_examples=scaled(0.5))
def test_try_again_starts_a_new_push_only_for_a_valid_number_and_the_attempt_shown(
    sim: Simulator, declined: Order, data: st.DataObject
) -> None:
    """The customer who placed the order (the same session) presses "try again" with generated fields: a new push
    only for a valid number and the attempt the page showed; anything else changes nothing and says why."""
    order = declined
    latest = order.payment_attempts.latest("pk")
    msisdn, msisdn_ok = data.draw(retry_msisdn(), label="msisdn")
    after_kind = data.draw(st.sampled_from(["shown", "shown", "older", "missing", "garbage"]), label="after")
    garbage = data.draw(st.text(max_size=20) | st.sampled_from([str(2**70), "-1", "1e3", "1.5"]), label="garbage")
    after: Any = {"shown": str(latest.pk), "older": str(latest.pk - 1), "missing": MISSING, "garbage": garbage}[
        after_kind
    ]
    expected = None if msisdn_ok is None else (msisdn_ok and after_kind == "shown")
    if after_kind == "garbage" and str(after).strip() == str(latest.pk):
        expected = None

    cache.clear()
    before, pushes = world(), len(sim.transactions())
    response = CUSTOMER.post(f"/pedido/{order.public_id}/pagar/", post_data({"msisdn": msisdn, "after": after}))
    assert response.status_code == 302 and response["Location"] == order.get_absolute_url()
    new = order.payment_attempts.exclude(pk__lte=latest.pk).first()
    if new is None:
        assert expected is not True, f"a valid 'try again' started nothing: {msisdn!r}, after={after!r}"
        assert world() == before and len(sim.transactions()) == pushes
        if msisdn_ok is False and after_kind == "shown":  # the customer is told: a bad number, or a bad form
            told = [str(m) for m in get_messages(response.wsgi_request)]
            assert any("Número M-Pesa inválido" in m or "Pedido inválido" in m for m in told), told
        return
    assert expected is not False, f"an invalid 'try again' started a push: {msisdn!r}, after={after!r}"
    settle(order)
    assert len(sim.transactions()) == pushes + 1
    tx = sim.known_transaction(new.third_party_reference)
    assert tx["msisdn"] == new.msisdn and Decimal(tx["amount"]) == order.total
    if msisdn_ok and msisdn is not MISSING and msisdn.strip():
        assert new.msisdn == "258" + "".join(ch for ch in msisdn if ch.isdigit())[-9:]
    else:
        assert new.msisdn == latest.msisdn


@pytest.fixture
def declined(sim: Simulator) -> Order:
    """An order whose push was declined on the phone (03), awaiting payment: "try again" is offered — to the
    session that placed it (CUSTOMER's), as to a guest in production."""
    CUSTOMER.cookies.clear()
    order = checkout(CUSTOMER, {product(stock=1_000).pk: 1}, msisdn="258840000003")
    settle(order)
    return order


# --- CSRF --------------------------------------------------------------------------------------------------
def test_a_checkout_without_a_valid_csrf_token_is_refused_and_changes_nothing(shop: Shop, sim: Simulator) -> None:
    """Django's test client skips CSRF checks unless asked: this one enforces them, as a browser's server does."""
    strict = Client(enforce_csrf_checks=True)
    session = strict.session
    session[CART_SESSION_KEY] = {str(shop.cheap.pk): 1}
    session.save()
    page = strict.get(CHECKOUT)
    form = {
        "customer_name": "Ana Cossa",
        "msisdn": "84 000 0001",
        "checkout_token": secrets.token_urlsafe(24),
        "snapshot": page.context["snapshot"],
    }
    before = world()
    for token in (None, "", "x" * 64, page.cookies["csrftoken"].value[::-1]):
        data = form if token is None else {**form, "csrfmiddlewaretoken": token}
        assert strict.post(CHECKOUT, data).status_code == 403
    assert world() == before and sim.transactions() == []
    response = strict.post(CHECKOUT, {**form, "csrfmiddlewaretoken": page.context["csrf_token"]})
    assert response.status_code == 303
    settle(Order.objects.get())
    assert len(sim.transactions()) == 1


# --- regressions found by the fuzzers above ----------------------------------------------------------------
@pytest.mark.django_db
def test_a_nul_in_the_checkout_token_or_the_order_id_is_refused_not_a_server_error() -> None:
    """PostgreSQL refuses NUL in a query parameter: the double-submit lookup of the checkout token (read from the
    raw POST before the form is validated) and the order id from the URL answered 500 there."""
    CUSTOMER.cookies.clear()
    response = CUSTOMER.post(CHECKOUT, {"checkout_token": "abc\x00defghijklmnop"})
    assert response.status_code == 302  # empty cart: back to the cart
    for path in ("/pedido/a%00b/", "/pedido/a%00b/estado/"):
        assert CUSTOMER.get(path).status_code == 404
    for path in ("/pedido/a%00b/pagar/", "/pedido/a%00b/cancelar/"):
        assert CUSTOMER.post(path).status_code == 404


# --- the checkout form's number field, without HTTP --------------------------------------------------------
MSISDN_ERROR_CODES = {"invalid_msisdn", "not_vodacom", "required", "max_length", "null_characters_not_allowed"}
"""The shop's two messages, and Django's for an empty field, one over 24 characters and one holding a NUL."""


def msisdn_errors(typed: str) -> tuple[str | None, list[Any]]:
    """(the cleaned number, the field's errors) of a checkout form with only ``msisdn`` filled in."""
    form = CheckoutForm({"msisdn": typed})
    form.is_valid()
    return form.cleaned_data.get("msisdn"), list(form.errors.get("msisdn", []))


@given(st.text(max_size=30) | st.text(alphabet=string.digits + " +-().", max_size=30) | bad_msisdn)
@settings(max_examples=scaled(5))
def test_the_number_field_gives_the_canonical_number_or_a_message_saying_what_to_type(typed: str) -> None:
    number, errors = msisdn_errors(typed)
    if number is not None:
        assert re.fullmatch(r"2588[45][0-9]{7}", number) and not errors
        return
    codes = [error.code for error in CheckoutForm({"msisdn": typed}).errors.as_data()["msisdn"]]
    assert len(codes) == 1 and codes[0] in MSISDN_ERROR_CODES, codes
    if codes[0] in ("invalid_msisdn", "not_vodacom"):
        assert "Vodacom" in errors[0], errors  # the message says what a good number looks like


@given(st.sampled_from(["01", "23", "99"]).flatmap(good_msisdn))
@settings(max_examples=scaled(2))
def test_the_number_field_accepts_every_way_of_typing_a_vodacom_number(case: tuple[str, str]) -> None:
    typed, canonical = case
    assert msisdn_errors(typed) == (canonical, [])


@given(
    st.sampled_from(["82", "83", "86", "87"]),
    st.text(alphabet=string.digits, min_size=7, max_size=7),
    st.sampled_from(["", "+258 ", "258", "00258"]),
)
@settings(max_examples=scaled(1))
def test_another_operators_number_is_refused_as_not_vodacom(prefix: str, rest: str, country: str) -> None:
    form = CheckoutForm({"msisdn": f"{country}{prefix} {rest[:3]} {rest[3:]}"})
    assert not form.is_valid()
    assert form.has_error("msisdn", code="not_vodacom")


def test_another_operators_number_written_with_00_258_is_named_as_not_vodacom() -> None:
    """Regression (found by the property above): "00258 82 …" got the generic "invalid number" message instead of
    saying that only Vodacom numbers can pay (the form did not strip the 00 before looking at the operator)."""
    form = CheckoutForm({"msisdn": "00258 82 123 4567"})
    assert not form.is_valid()
    assert form.has_error("msisdn", code="not_vodacom")
