"""What a newcomer does in the browser (the issue's "Done when"), on a phone-sized screen, against the live shop
and the real simulator: buy two products, pay with M-Pesa, watch the order page turn paid by itself (no reload);
approve on the simulator's phone page (numbers ending in 00); see "insufficient balance" (02) and pay with
another number; switch the shop to English.

The simulator answers after ~1 s and the page polls its JSON status every 0.5 s, so each test first sees the
order pending, then paid. Waits are Playwright's (``expect``/``wait_for`` with timeouts), never sleeps.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from kulipa.catalog.models import Product
from kulipa.e2e.conftest import TIMEOUT_MS
from kulipa.payments.tests.conftest import Simulator, product

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PAID_PT = "Pagamento recebido"
ORDER_URL = re.compile(r"/pedido/[^/]+/$")


def two_products() -> list[Product]:
    return [product(price="125.50", stock=5), product(price="300.00", stock=3)]


def buy(page: Page, items: list[Product], *, msisdn: str) -> str:
    """Home page → add each product to the cart → /checkout/ → name and number → pay. Returns the order URL."""
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Produtos")
    for count, item in enumerate(items, start=1):
        card = page.locator("li.card", has_text=item.name)
        card.get_by_role("button", name="Adicionar ao carrinho").click()
        expect(page.locator("#cart-count")).to_have_text(str(count))
    page.goto("/checkout/")
    for item in items:
        expect(page.locator("main")).to_contain_text(item.name)
    page.fill("input[name=customer_name]", "Ana Cossa")
    page.fill("input[name=msisdn]", msisdn)
    page.get_by_role("button", name="Pagar com M-Pesa").click()
    page.wait_for_url(ORDER_URL)
    return page.url


def mark_loaded(page: Page) -> None:
    """Tag this document: a reload or navigation would lose the tag (checked by ``assert_not_reloaded``)."""
    page.wait_for_load_state("load")
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Page, url: str) -> None:
    assert page.url == url
    assert page.evaluate("window.__marker") == 1, "the order page reloaded or navigated"


def expect_waiting(page: Page) -> None:
    """The order page as first rendered: payment asked for, not yet answered (so "paid" below came live)."""
    expect(page.locator("#payment")).to_have_attribute("data-tone", "wait")
    expect(page.locator("#payment")).not_to_contain_text(PAID_PT)


def expect_paid(page: Page) -> None:
    payment = page.locator("#payment")
    expect(payment).to_contain_text(PAID_PT, timeout=TIMEOUT_MS)
    expect(payment).to_have_attribute("data-tone", "ok")
    expect(page.locator("#payment-status")).to_have_text("Paga · Pago")
    expect(page.locator("#retry-form")).to_be_hidden()


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def test_buy_two_products_and_the_order_turns_paid_without_reload_then_english(
    page: Page, sim: Simulator, tmp_path: Path
) -> None:
    order_url = buy(page, two_products(), msisdn="258840000001")
    mark_loaded(page)
    expect_waiting(page)

    expect_paid(page)
    assert_not_reloaded(page, order_url)
    expect(page.locator("main")).to_contain_text("425,50")  # one of each: 125,50 + 300,00
    screenshot(page, tmp_path, "paid")

    # The header's language switch: the same page in English.
    page.locator(".lang-switch").get_by_role("button", name="EN").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.url == order_url
    expect(page.locator("#payment")).to_contain_text("Payment received. Thank you!")
    expect(page.get_by_role("heading", name="Products")).to_be_visible()
    screenshot(page, tmp_path, "paid-en")
    page.get_by_role("link", name="Kulipa").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Products")
    expect(page.locator(".add-to-cart button").first).to_have_text("Add to cart")
    screenshot(page, tmp_path, "home-en")


def test_number_ending_in_00_approved_on_the_phone_page(
    page: Page, context: BrowserContext, sim: Simulator, tmp_path: Path
) -> None:
    msisdn = "258840000000"
    order_url = buy(page, two_products(), msisdn=msisdn)
    mark_loaded(page)
    expect_waiting(page)

    # The order page links to the simulator's phone for this number; it opens in a new tab.
    link = page.locator("#sandbox-phone a")
    assert link.get_attribute("href") == sim.sandbox.phone_url(msisdn)
    with context.expect_page() as opened:
        link.click()
    phone = opened.value
    phone.wait_for_load_state()
    assert phone.url == sim.sandbox.phone_url(msisdn)
    expect(phone.locator("#prompts .amount")).to_have_text("425.50 MZN")
    phone.fill("#prompts input[name=pin]", "1234")
    phone.get_by_role("button", name="Approve").click()
    expect(phone.locator("#status")).to_have_text("Approved.")
    expect(phone.locator("#prompts")).to_contain_text("No payment requests")
    screenshot(phone, tmp_path, "phone-approved")

    page.bring_to_front()
    expect_paid(page)
    assert_not_reloaded(page, order_url)
    screenshot(page, tmp_path, "paid")


def test_insufficient_balance_then_another_number_pays(page: Page, sim: Simulator, tmp_path: Path) -> None:
    order_url = buy(page, two_products(), msisdn="258840000002")
    mark_loaded(page)
    expect_waiting(page)

    payment = page.locator("#payment")
    expect(payment).to_contain_text("Saldo M-Pesa insuficiente", timeout=TIMEOUT_MS)
    expect(payment).to_have_attribute("data-tone", "bad")
    assert_not_reloaded(page, order_url)
    screenshot(page, tmp_path, "insufficient")

    page.locator("#retry-form").wait_for(state="visible")
    page.fill("#retry-form input[name=msisdn]", "258840000001")
    with page.expect_navigation(url=order_url):  # a form post: back on the same order page, a new attempt
        page.click("#retry-button")
    mark_loaded(page)
    expect_waiting(page)

    expect_paid(page)
    assert_not_reloaded(page, order_url)
    screenshot(page, tmp_path, "paid-after-retry")
    numbers = [t["msisdn"] for t in sim.transactions()]
    assert sorted(numbers) == ["258840000001", "258840000002"], numbers
