"""The abuse limits, over HTTP through the real views, with the real simulator where a push would happen.

For every limit: the customer sees its sentence (Portuguese, and English with the switch), nothing is pushed (the
simulator's record of pushes and prompts), nothing changes in the shop (orders, attempts, reservations, stock),
and ``kulipa_limits_hit_total{limit=…}`` counts one. docs/payments.md "Abuse limits" lists them.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from prometheus_client import REGISTRY

from kulipa.cart.services import SESSION_KEY as CART_SESSION_KEY
from kulipa.catalog.models import Product
from kulipa.core.limits import LimitReached
from kulipa.inventory.models import StockReservation
from kulipa.inventory.selectors import available_quantities
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import run_concurrently, snapshot_for
from kulipa.payments import services
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tests.conftest import (
    Simulator,
    checkout,
    product,
    reconcile_until,
    status,
    wait_for,
    wait_status,
)

State = PaymentAttempt.State
RS = StockReservation.State

_numbers = iter(range(1000, 100000))


def number(suffix: str) -> str:
    """A fresh number whose last two digits choose the simulator's behaviour (01 pays, 03 declines, …)."""
    return f"25884{next(_numbers):05d}{suffix}"


def hits(limit: str) -> float:
    return REGISTRY.get_sample_value("kulipa_limits_hit_total", {"limit": limit}) or 0.0


def world(sim: Simulator) -> dict[str, Any]:
    """Everything a limit must leave as it was: the shop's rows and the pushes the simulator received."""
    return {
        "orders": sorted(Order.objects.values_list("pk", "status", "payment_status", "expires_at")),
        "attempts": sorted(PaymentAttempt.objects.values_list("pk", "state", "msisdn")),
        "reservations": sorted(StockReservation.objects.values_list("pk", "state", "expires_at")),
        "stock": sorted(Product.objects.values_list("pk", "stock_on_hand")),
        "pushes": sorted(t["third_party_reference"] for t in sim.transactions()),
    }


def post_checkout(client: Client, quantities: dict[int, int], *, msisdn: str) -> Any:
    """Cart in the session, GET /checkout/, POST "Pagar com M-Pesa": the response, whatever it is."""
    session = client.session
    session[CART_SESSION_KEY] = {str(pid): qty for pid, qty in quantities.items()}
    session.save()
    page = client.get(reverse("orders:checkout"))
    assert page.status_code == 200, page.content[:500]
    return client.post(
        reverse("orders:checkout"),
        {
            "customer_name": "Ana Cossa",
            "msisdn": msisdn,
            "email": "",
            "delivery_address": "",
            "checkout_token": secrets.token_urlsafe(24),
            "snapshot": page.context["snapshot"],
        },
    )


def retry(client: Client, order: Order, *, msisdn: str = "") -> str:
    """POST "Tentar de novo" for the attempt the page shows; follow to the order page; its text."""
    after = status(client, order)["attempt_id"]
    response = client.post(
        reverse("payments:retry", kwargs={"public_id": order.public_id}),
        {"msisdn": msisdn, "after": after if after is not None else ""},
        follow=True,
    )
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def settle(order: Order) -> PaymentAttempt:
    """Wait until the order's latest attempt is no longer in flight."""

    def closed() -> PaymentAttempt | None:
        latest = order.payment_attempts.order_by("-id").first()
        return latest if latest is not None and not latest.in_flight else None

    return wait_for(closed, what="attempt closed")


def refused_checkout(
    sim: Simulator, client: Client, quantities: dict[int, int], *, msisdn: str, limit: str, words: str
) -> None:
    before, counted = world(sim), hits(limit)
    response = post_checkout(client, quantities, msisdn=msisdn)
    assert response.status_code == 429
    assert words in html.unescape(response.content.decode())
    assert world(sim) == before, "a refused checkout changed something or pushed"
    assert hits(limit) == counted + 1


def refused_retry(sim: Simulator, client: Client, order: Order, *, limit: str, words: str, msisdn: str = "") -> None:
    before, counted = world(sim), hits(limit)
    page = retry(client, order, msisdn=msisdn)
    assert words in page
    assert world(sim) == before, "a refused try again changed something or pushed"
    assert hits(limit) == counted + 1


# --- checkout ---------------------------------------------------------------------------------------------------
def test_checkouts_per_session(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_CHECKOUTS_PER_SESSION = "2/10m"
    client = Client()
    item = product(stock=10)
    for _ in range(2):
        wait_status(client, checkout(client, {item.pk: 1}, msisdn=number("01")), status="paid")
    refused_checkout(
        sim, client, {item.pk: 1}, msisdn=number("01"), limit="checkout_session", words="Demasiadas encomendas"
    )
    # Another browser is another session: it may buy.
    assert post_checkout(Client(), {item.pk: 1}, msisdn=number("01")).status_code == 303


def test_checkouts_per_address_with_fresh_sessions(sim: Simulator, settings: Any) -> None:
    """The tester's case: every checkout from a fresh session. The address counts them."""
    settings.LIMIT_CHECKOUTS_PER_IP = "2/10m"
    item = product(stock=10)
    for _ in range(2):
        wait_status(fresh := Client(), checkout(fresh, {item.pk: 1}, msisdn=number("01")), status="paid")
    refused_checkout(sim, Client(), {item.pk: 1}, msisdn=number("01"), limit="checkout_ip", words="Demasiadas")
    # A customer at another address is not affected.
    assert post_checkout(Client(REMOTE_ADDR="10.9.8.7"), {item.pk: 1}, msisdn=number("01")).status_code == 303


def test_checkout_limit_in_english(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_CHECKOUTS_PER_SESSION = "1/10m"
    client = Client()
    client.cookies[django_settings.LANGUAGE_COOKIE_NAME] = "en"
    item = product(stock=10)
    wait_status(client, checkout(client, {item.pk: 1}, msisdn=number("01")), status="paid")
    response = post_checkout(client, {item.pk: 1}, msisdn=number("01"))
    assert response.status_code == 429
    text = html.unescape(response.content.decode())
    assert "Too many orders in a short time" in text and "Try again in" in text
    assert "Demasiadas" not in text


def test_one_prompt_in_flight_per_number_across_orders(sim: Simulator) -> None:
    """Twelve strangers' checkouts, one phone: while its prompt waits for an answer, no second one is sent."""
    sim.configure(push_window=30)  # the prompt stays on the phone until answered here
    victim = number("00")
    item = product(stock=10)
    first = checkout(Client(), {item.pk: 1}, msisdn=victim)
    prompt = wait_for(lambda: sim.prompts(victim), what="prompt on the phone")[0]
    for _ in range(3):
        refused_checkout(
            sim,
            Client(),
            {item.pk: 1},
            msisdn=victim,
            limit="phone_in_flight",
            words="Já há um pedido de pagamento M-Pesa à espera de resposta",
        )
    assert len(sim.prompts(victim)) == 1 and len(sim.transactions(msisdn=victim)) == 1
    sim.answer(victim, prompt["conversation_id"], approve=False)
    assert settle(first).state == State.DECLINED
    # Once answered, the number may be asked again.
    again = checkout(Client(), {item.pk: 1}, msisdn=victim)
    prompt = wait_for(lambda: sim.prompts(victim), what="the next prompt")[0]
    sim.answer(victim, prompt["conversation_id"], approve=True)
    assert settle(again).state == State.SUCCEEDED


def test_prompts_per_number_per_window(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_PROMPTS_PER_PHONE = "2/10m"
    victim = number("03")  # declines at once, so the in-flight rule does not stand in the way
    item = product(stock=10)
    for _ in range(2):
        settle(checkout(Client(), {item.pk: 1}, msisdn=victim))
    refused_checkout(
        sim, Client(), {item.pk: 1}, msisdn=victim, limit="prompts_phone", words="já recebeu vários pedidos"
    )
    assert len(sim.transactions(msisdn=victim)) == 2


def test_units_held_per_session(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_UNITS_HELD_PER_SESSION = 3
    client = Client()
    item = product(stock=10)
    held = checkout(client, {item.pk: 2}, msisdn=number("05"))  # fails at the gateway: the hold is kept
    assert settle(held).state == State.FAILED and held.reservations.get().state == RS.ACTIVE
    refused_checkout(
        sim, client, {item.pk: 2}, msisdn=number("01"), limit="units_held_session", words="demasiados produtos"
    )
    # Within the cap it goes through.
    assert post_checkout(client, {item.pk: 1}, msisdn=number("01")).status_code == 303


def test_units_held_per_number(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_UNITS_HELD_PER_PHONE = 3
    phone = number("05")
    item = product(stock=10)
    settle(checkout(Client(), {item.pk: 2}, msisdn=phone))
    refused_checkout(sim, Client(), {item.pk: 2}, msisdn=phone, limit="units_held_phone", words="demasiados produtos")


def test_units_held_per_address(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_UNITS_HELD_PER_IP = 3
    item = product(stock=10)
    settle(checkout(Client(), {item.pk: 2}, msisdn=number("05")))
    refused_checkout(
        sim, Client(), {item.pk: 2}, msisdn=number("05"), limit="units_held_ip", words="demasiados produtos"
    )
    assert post_checkout(Client(REMOTE_ADDR="10.1.2.3"), {item.pk: 2}, msisdn=number("01")).status_code == 303


# --- try again --------------------------------------------------------------------------------------------------
def test_try_again_only_from_the_session_that_placed_the_order(sim: Simulator) -> None:
    owner = Client()
    item = product(stock=5)
    order = checkout(owner, {item.pk: 1}, msisdn=number("03"))
    settle(order)
    stranger = Client()  # has the link: may look, may not push
    assert stranger.get(order.get_absolute_url()).status_code == 200
    refused_retry(sim, stranger, order, limit="retry_other_session", words="no dispositivo onde fez a encomenda")
    refused_retry(
        sim,
        stranger,
        order,
        msisdn="84 000 0101",
        limit="retry_other_session",
        words="no dispositivo onde fez a encomenda",
    )
    retry(owner, order, msisdn="84 000 0101")
    wait_status(owner, order, status="paid")


def test_try_again_per_session(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_RETRIES_PER_SESSION = "1/10m"
    client = Client()
    item = product(stock=5)
    order = checkout(client, {item.pk: 1}, msisdn=number("03"))
    settle(order)
    retry(client, order, msisdn=number("03"))
    settle(order)
    refused_retry(sim, client, order, limit="retry_session", words="Demasiadas tentativas de pagamento")


def test_try_again_per_address(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_RETRIES_PER_IP = "1/10m"
    item = product(stock=5)
    first, second = Client(), Client()
    order_1 = checkout(first, {item.pk: 1}, msisdn=number("03"))
    order_2 = checkout(second, {item.pk: 1}, msisdn=number("03"))
    settle(order_1)
    settle(order_2)
    retry(first, order_1)
    settle(order_1)
    refused_retry(sim, second, order_2, limit="retry_ip", words="Demasiadas tentativas de pagamento")


def test_try_again_prompts_per_number(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_PROMPTS_PER_PHONE = "2/10m"
    client = Client()
    victim = number("03")
    item = product(stock=5)
    order = checkout(client, {item.pk: 1}, msisdn=victim)
    settle(order)
    retry(client, order)  # the same number again: its second prompt
    settle(order)
    refused_retry(sim, client, order, limit="prompts_phone", words="já recebeu vários pedidos")
    assert len(sim.transactions(msisdn=victim)) == 2
    retry(client, order, msisdn="84 000 0101")  # another number is another phone
    wait_status(client, order, status="paid")


def test_attempts_per_order(sim: Simulator, settings: Any) -> None:
    settings.LIMIT_ATTEMPTS_PER_ORDER = 2
    client = Client()
    item = product(stock=5)
    order = checkout(client, {item.pk: 1}, msisdn=number("03"))
    settle(order)
    retry(client, order, msisdn=number("03"))
    settle(order)
    refused_retry(sim, client, order, msisdn="84 000 0101", limit="attempts_per_order", words="demasiadas tentativas")
    assert order.payment_attempts.count() == 2


def test_try_again_while_another_orders_prompt_waits_on_that_number(sim: Simulator) -> None:
    sim.configure(push_window=30)
    client = Client()
    item = product(stock=5)
    waiting_phone = number("00")
    other = checkout(Client(), {item.pk: 1}, msisdn=waiting_phone)
    prompt = wait_for(lambda: sim.prompts(waiting_phone), what="prompt on the phone")[0]
    order = checkout(client, {item.pk: 1}, msisdn=number("03"))
    settle(order)
    refused_retry(
        sim, client, order, msisdn=waiting_phone, limit="phone_in_flight", words="à espera de resposta no número"
    )
    sim.answer(waiting_phone, prompt["conversation_id"], approve=False)
    settle(other)


def test_try_again_re_reserving_counts_the_units_held(sim: Simulator, settings: Any) -> None:
    """Stock released by a "no" is held again by "try again" only within the customer's cap: placing one order,
    letting it go, placing another and retrying the first cannot stack holds past it."""
    settings.LIMIT_UNITS_HELD_PER_SESSION = 3
    client = Client()
    item = product(stock=10)
    first = checkout(client, {item.pk: 2}, msisdn=number("03"))
    settle(first)
    assert first.reservations.get().state == RS.RELEASED
    settle(checkout(client, {item.pk: 2}, msisdn=number("05")))  # fails at the gateway: held
    refused_retry(
        sim, client, first, msisdn=number("01"), limit="units_held_session", words="demasiados produtos reservados"
    )
    assert first.reservations.get().state == RS.RELEASED


# --- a "no" from the phone lets the stock go ------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["03", "02"])
def test_declined_push_releases_the_stock_and_try_again_holds_it_again(sim: Simulator, suffix: str) -> None:
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=number(suffix))
    settle(order)
    assert order.reservations.get().state == RS.RELEASED
    data = wait_status(client, order, can_retry=True)
    assert data["status"] == "awaiting_payment"
    # The last unit is for sale again at once…
    assert available_quantities(product_ids=[item.pk]) == {item.pk: 1}
    # …and "try again" holds it again and pays for it.
    retry(client, order, msisdn="84 000 0101")
    wait_status(client, order, status="paid")
    assert order.reservations.get().state == RS.COMMITTED
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0


def test_try_again_after_the_released_stock_was_sold_says_what_is_gone_and_pushes_nothing(sim: Simulator) -> None:
    client = Client()
    item, other = product(stock=1), product(stock=5)
    order = checkout(client, {item.pk: 1, other.pk: 1}, msisdn=number("03"))
    settle(order)
    wait_status(Client(), checkout(Client(), {item.pk: 1}, msisdn=number("01")), status="paid")  # someone else
    before = world(sim)
    page = retry(client, order, msisdn="84 000 0101")
    assert f"«{item.name}»" in page and "esgotou" in page and f"«{other.name}»" not in page
    assert world(sim) == before
    assert status(client, order)["status"] == "awaiting_payment"


def test_unanswered_push_releases_the_stock(sim: Simulator) -> None:
    client = Client()
    item = product(stock=1)
    order = checkout(client, {item.pk: 1}, msisdn=number("04"))  # nobody answers: INS-9, then asked
    reconcile_until(lambda: order.payment_attempts.get().state == State.TIMED_OUT, what="timed out")
    assert order.reservations.get().state == RS.RELEASED
    assert available_quantities(product_ids=[item.pk]) == {item.pk: 1}


# --- under concurrency ------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_one_prompt_in_flight_per_number_under_concurrent_checkouts() -> None:
    """Eight checkouts at once, eight orders, one number: one attempt is created, the others are refused and leave
    nothing behind (each transaction rolls back whole)."""
    items = [product(stock=3) for _ in range(8)]
    victim = "258840000100"

    def buy(i: int) -> Order:
        order, _attempt = services.checkout_place(
            quantities={items[i].pk: 1},
            confirmed=snapshot_for({items[i].pk: 1}),
            customer_name="Ana",
            msisdn=victim,
            email="",
            delivery_address="",
            user=None,
            session_key=f"session-{i}",
            checkout_token=secrets.token_urlsafe(16),
        )
        return order

    results = run_concurrently(buy, 8)
    won = [value for kind, value in results if kind == "ok"]
    refused = [value for kind, value in results if kind == "error"]
    assert len(won) == 1, results
    assert all(isinstance(e, LimitReached) and e.limit == "phone_in_flight" for e in refused), refused
    assert PaymentAttempt.objects.filter(msisdn=victim, state__in=PaymentAttempt.IN_FLIGHT).count() == 1
    assert Order.objects.count() == 1 and StockReservation.objects.count() == 1
    print(f"{connection.vendor}: 1 of 8 concurrent checkouts to one number went through")


@pytest.mark.django_db(transaction=True)
def test_units_held_per_session_under_concurrent_checkouts(settings: Any) -> None:
    """Six checkouts of one session at once, 2 units each, cap 5: at most two can hold (4 ≤ 5 < 6)."""
    settings.LIMIT_UNITS_HELD_PER_SESSION = 5
    items = [product(stock=3) for _ in range(6)]

    def buy(i: int) -> Order:
        order, _attempt = services.checkout_place(
            quantities={items[i].pk: 2},
            confirmed=snapshot_for({items[i].pk: 2}),
            customer_name="Ana",
            msisdn=f"2588400{i:03d}01",
            email="",
            delivery_address="",
            user=None,
            session_key="one-session",
            checkout_token=secrets.token_urlsafe(16),
        )
        return order

    results = run_concurrently(buy, 6)
    won = [value for kind, value in results if kind == "ok"]
    refused = [value for kind, value in results if kind == "error"]
    assert len(won) == 2, results
    assert all(isinstance(e, LimitReached) and e.limit == "units_held_session" for e in refused), refused
    held = StockReservation.objects.filter(state=RS.ACTIVE, order__session_key="one-session")
    assert sum(held.values_list("quantity", flat=True)) == 4
