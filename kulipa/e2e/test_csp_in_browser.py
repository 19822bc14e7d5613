"""The content security policy in a real browser: the pages a customer and a staff member walk through render with
no violation at all — the inline ``<style>``/``<script>`` blocks carry the request's nonce, htmx injects no style —
and what depends on scripts still works (the cart updates through htmx, the order page turns paid by itself).

Violations are collected from the browser itself (``securitypolicyviolation`` events and console reports), so a
new inline script or style without the nonce fails here rather than silently doing nothing in production.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from kulipa import devserver
from kulipa.e2e.conftest import MOBILE, TIMEOUT_MS
from kulipa.e2e.test_backoffice_in_browser import DESKTOP, demo_users, log_in
from kulipa.e2e.test_checkout_in_browser import buy, expect_paid
from kulipa.orders.models import Order
from kulipa.payments.tests.conftest import Simulator, product

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

__all__ = ["demo_users"]  # fixture

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} on ${location.pathname}`);
});
"""


class Violations:
    """Every CSP violation a browser context saw: events recorded in each document, and console reports."""

    def __init__(self, context: BrowserContext) -> None:
        self.console: list[str] = []
        context.add_init_script(RECORD_VIOLATIONS)
        context.on("console", self._console)
        context.on("page", lambda page: page.on("console", self._console))

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.console.append(message.text)

    def seen(self, page: Page) -> list[str]:
        events = page.evaluate("window.__csp || []")
        return [*events, *self.console]

    def assert_none(self, page: Page) -> None:
        page.wait_for_load_state("load")
        found = self.seen(page)
        assert not found, "content security policy violations:\n" + "\n".join(found)


@pytest.fixture
def phone(browser: Browser, shop: str) -> Iterator[tuple[Page, Violations]]:
    ctx = browser.new_context(viewport=MOBILE, is_mobile=True, has_touch=True, base_url=shop, locale="pt-PT")
    ctx.set_default_timeout(TIMEOUT_MS)
    violations = Violations(ctx)
    try:
        yield ctx.new_page(), violations
    finally:
        ctx.close()


@pytest.fixture
def desk(browser: Browser, shop: str, demo_users: None) -> Iterator[tuple[Page, Violations]]:
    ctx = browser.new_context(viewport=DESKTOP, base_url=shop, locale="pt-PT")
    ctx.set_default_timeout(TIMEOUT_MS)
    violations = Violations(ctx)
    try:
        yield ctx.new_page(), violations
    finally:
        ctx.close()


def test_the_shop_works_under_its_policy_without_a_single_violation(
    phone: tuple[Page, Violations], sim: Simulator
) -> None:
    page, violations = phone
    response = page.goto("/")
    assert response is not None
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    violations.assert_none(page)

    # The cart page changes quantities through htmx (a script from our own static files).
    item, other = product(price="125.50", stock=5), product(price="300.00", stock=3)
    buy(page, [item, other], msisdn="258840000001")
    # The order page: styled by its nonce'd <style>, updated live by its nonce'd <script>.
    expect_paid(page)
    expect(page.locator("#payment")).to_have_css("border-top-color", "rgb(22, 163, 74)")  # data-tone="ok"
    violations.assert_none(page)

    for path in ("/carrinho/", "/checkout/", "/conta/entrar/", "/conta/registar/"):
        page.goto(path)
        violations.assert_none(page)
    page.locator(".lang-switch").get_by_role("button", name="EN").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    violations.assert_none(page)


def _admin_pages(order: Order) -> list[str]:
    """The admin index, every registered model's list and add page, and an order's page (with htmx)."""
    paths = [reverse("admin:index")]
    for model in admin.site._registry:
        meta = model._meta
        for view in ("changelist", "add"):
            try:
                paths.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}"))
            except NoReverseMatch:
                continue
    paths.append(reverse("admin:orders_order_change", args=[order.pk]))
    return paths


def test_the_back_office_works_under_the_policy_without_a_single_violation(
    desk: tuple[Page, Violations], phone: tuple[Page, Violations], sim: Simulator
) -> None:
    customer, _ = phone
    buy(customer, [product(price="400.00", stock=5)], msisdn="258840000001")
    expect_paid(customer)
    order = Order.objects.get()

    page, violations = desk
    log_in(page, *devserver.DEMO_ADMIN)
    violations.assert_none(page)
    visited = []
    for path in _admin_pages(order):
        response = page.goto(path)
        assert response is not None
        # Append-only records (audit log, payment events, …) have no add page, for the superuser too.
        assert response.status < 400 or (response.status == 403 and path.endswith("/add/")), path
        visited.append(path) if response.status < 400 else None
        violations.assert_none(page)
    assert len(visited) > 10

    # The order page's "Verificar agora": M-Pesa's answer in the panel htmx keeps up to date.
    page.goto(reverse("admin:orders_order_change", args=[order.pk]))
    page.get_by_role("button", name="Verificar agora").click()
    expect(page.locator("#recheck-panel")).to_contain_text("Completed")
    violations.assert_none(page)
