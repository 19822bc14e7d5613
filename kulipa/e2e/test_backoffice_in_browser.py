"""The back office in a real browser (the issue's "Done when"), on a desktop-sized screen, against the live shop and
the real simulator, with the demo logins ``make run`` creates:

* finance finds a paid order by its M-Pesa transaction id, opens it, reads the timeline, reverses part of it with
  a reason, and sees the new payment status, the audit entry and the reversal on the order page;
* support sees "Verificar agora" (and it works) but no "Reverter…", and a direct POST to the reverse confirmation
  URL from support's browser session answers 403 and changes nothing.

Each important step leaves a full-page PNG in ``var/test-artifacts/backoffice/<test>-<step>.png`` (git-ignored) to
look at after the run. Waits are Playwright's (``expect`` with timeouts) or, for the database, ``wait_for``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from django.urls import reverse
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from kulipa import devserver
from kulipa.backoffice.models import StaffAction
from kulipa.e2e.conftest import TIMEOUT_MS
from kulipa.e2e.test_checkout_in_browser import buy, expect_paid
from kulipa.orders.models import Order
from kulipa.payments.models import PaymentAttempt, Reversal
from kulipa.payments.tests.conftest import Simulator, place, product, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "backoffice"
"""Screenshots of the back office, kept after the run (``var/`` is git-ignored)."""

FINANCE = devserver.DEMO_FINANCE
SUPPORT = devserver.DEMO_SUPPORT
REASON = "um artigo chegou partido"


# --- fixtures and helpers ----------------------------------------------------------------------------------------
@pytest.fixture
def demo_users(transactional_db: None) -> None:
    """The demo logins, made exactly as ``make run`` makes them (``kulipa.devserver``)."""
    call_command(
        "ensure_demo_users",
        *devserver.DEMO_ADMIN,
        *devserver.DEMO_CUSTOMER,
        "--support",
        *devserver.DEMO_SUPPORT,
        "--finance",
        *devserver.DEMO_FINANCE,
    )


@pytest.fixture
def desk(browser: Browser, shop: str, demo_users: None) -> Iterator[Page]:
    """A staff member's page: a fresh desktop-sized profile (the admin's tables are wide); closed before the
    simulator resets."""
    ctx = browser.new_context(viewport=DESKTOP, base_url=shop, locale="pt-PT")
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


class Shots:
    """Full-page screenshots named ``<test name>-<step>.png``; their paths are printed."""

    def __init__(self, test_name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.prefix = re.sub(r"[^\w.-]+", "_", test_name)
        self.paths: list[Path] = []

    def take(self, page: Page, step: str) -> Path:
        path = ARTIFACTS / f"{self.prefix}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)


def log_in(page: Page, email: str, password: str) -> None:
    """The admin's login page → the index ("Trabalho do dia")."""
    page.goto("/admin/")
    page.wait_for_url(re.compile(r"/admin/login/"))
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    page.locator("input[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin/$"))
    expect(page.locator("#user-tools")).to_contain_text("Bem-vindo")
    expect(page.get_by_role("button", name="Sair")).to_be_visible()
    expect(page.locator("h1")).to_have_text("Trabalho do dia")


def on_page(page: Page, path: str) -> None:
    """Wait until the page is at ``path`` (whatever the query string: the admin keeps the list's search in it)."""
    page.wait_for_url(lambda url: urlsplit(url).path == path)


def order_url(order: Order) -> str:
    return reverse("admin:orders_order_change", args=[order.pk])


def reverse_url(order: Order, attempt: PaymentAttempt) -> str:
    return reverse("admin:orders_order_reverse", args=[order.pk, attempt.pk])


def no_reverse(page: Page, order: Order, attempt: PaymentAttempt) -> None:
    """No "Reverter…" control of any kind on the page (neither the button nor the link in the payments table)."""
    expect(page.get_by_role("link", name=re.compile("Reverter"))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Reverter"))).to_have_count(0)
    expect(page.locator(f'a[href="{reverse_url(order, attempt)}"]')).to_have_count(0)


def csrf_token(context: BrowserContext) -> str:
    token = next((c.get("value") for c in context.cookies() if c.get("name") == "csrftoken"), None)
    assert token, "no csrftoken cookie in the browser"
    return str(token)


# --- finance ----------------------------------------------------------------------------------------------------
def test_finance_finds_the_paid_order_by_transaction_id_and_reverses_part_of_it(
    page: Page, desk: Page, sim: Simulator, shots: Shots
) -> None:
    # The customer buys on the phone and pays (a number ending in 01 pays).
    item = product(price="400.00", stock=5)
    buy(page, [item], msisdn="258840000001")
    expect_paid(page)
    order = Order.objects.get()
    attempt = order.payment_attempts.get()
    assert attempt.state == PaymentAttempt.State.SUCCEEDED and attempt.transaction_id

    # Finance logs in and finds it by the M-Pesa transaction id.
    log_in(desk, *FINANCE)
    desk.locator("tr.model-order").get_by_role("link", name="Encomendas").click()
    desk.wait_for_url(re.compile(r"/admin/orders/order/$"))
    desk.fill("#searchbar", attempt.transaction_id)
    desk.press("#searchbar", "Enter")
    desk.wait_for_url(re.compile(r"\?q="))
    rows = desk.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(order.short_reference)
    expect(rows.first).to_contain_text("400,00 MT")
    expect(rows.first).to_contain_text("25884****001")
    expect(rows.first).not_to_contain_text("258840000001")
    expect(desk.locator("#searchbar")).to_have_value(attempt.transaction_id)
    shots.take(desk, "order-list-search")

    # The order page: the payment, its timeline, and the finance controls.
    rows.first.get_by_role("link", name=order.short_reference).click()
    on_page(desk, order_url(order))
    expect(desk.locator("h1")).to_have_text(f"Encomenda {order.short_reference}")
    expect(desk.locator(".field-payment .readonly")).to_have_text("pago")
    expect(desk.locator("#order-attempts")).to_contain_text(attempt.transaction_id)
    timeline = desk.locator("#order-timeline")
    expect(timeline.locator("caption")).to_have_text("Histórico do pagamento")
    expect(timeline.locator("tbody tr.timeline-attempt")).not_to_have_count(0)
    expect(timeline.locator("tbody tr.timeline-reversal")).to_have_count(0)
    expect(desk.locator("#order-audit")).to_contain_text("Nenhuma acção da equipa.")
    expect(desk.get_by_role("button", name="Verificar agora")).to_be_visible()
    shots.take(desk, "order-page-timeline")

    # "Reverter…" → the confirmation page: a partial amount, a reason, no restock.
    desk.locator("a.reverse-link").click()
    on_page(desk, reverse_url(order, attempt))
    expect(desk.locator("#reversible")).to_have_text("400,00 MT")
    desk.get_by_label("Montante a devolver (MT)").fill("150,00")
    desk.get_by_label("Motivo").fill(REASON)
    desk.get_by_label("Não: o stock não muda").check()
    shots.take(desk, "reverse-form")
    desk.get_by_role("button", name="Rever a reversão").click()
    # The review says exactly what will happen with what was typed; nothing has moved yet.
    sentence = desk.locator("#reverse-sentence")
    expect(sentence).to_contain_text("150,00 MT")
    expect(sentence).to_contain_text("25884****001")
    expect(sentence).to_contain_text("O stock não muda")
    assert not Reversal.objects.exists()
    shots.take(desk, "reverse-confirmation")
    desk.get_by_role("button", name="Confirmar a reversão").click()

    # Back on the order page, with the request acknowledged.
    on_page(desk, order_url(order))
    expect(desk.locator(".messagelist")).to_contain_text("150,00 MT")
    reversal = wait_for(
        lambda: Reversal.objects.filter(attempt=attempt, state=Reversal.State.SUCCEEDED).first(),
        what="the reversal succeeded",
    )
    desk.reload()  # what staff do to see M-Pesa's answer, if it was not in yet
    expect(desk.locator(".field-payment .readonly")).to_have_text("devolvido em parte (150,00 MT de 400,00 MT)")
    audit = desk.locator("#order-audit tr.audit-entry")
    expect(audit).to_have_count(1)
    expect(audit).to_contain_text(FINANCE[0])
    expect(audit).to_contain_text(REASON)
    expect(audit).to_contain_text(reversal.reference)
    expect(timeline.locator("tbody tr.timeline-reversal")).not_to_have_count(0)
    expect(timeline.locator("tbody tr.timeline-staff")).not_to_have_count(0)
    expect(timeline).to_contain_text(reversal.reference)
    expect(desk.locator("#order-attempts")).to_contain_text("250,00 MT")  # still reversible
    shots.take(desk, "order-page-after-reversal")

    # The database agrees: one reversal of that amount, one audit entry.
    reversals = Reversal.objects.filter(attempt=attempt)
    assert reversals.count() == 1
    assert reversal.amount == Decimal("150.00") and reversal.requested_by == FINANCE[0]
    actions = StaffAction.objects.filter(order=order)
    assert actions.count() == 1
    only = actions.get()
    assert only.action == StaffAction.Action.REVERSE and only.reason == REASON and only.actor_name == FINANCE[0]
    order.refresh_from_db()
    assert order.payment_status == Order.PaymentStatus.PARTIALLY_REFUNDED
    tx = sim.known_transaction(attempt.third_party_reference)
    assert tx["reversed"] is True and Decimal(tx["reversed_amount"]) == Decimal("150.00")


# --- support ----------------------------------------------------------------------------------------------------
def test_support_rechecks_but_cannot_reverse(desk: Page, sim: Simulator, shots: Shots) -> None:
    item = product(price="250.00", stock=5)
    order, attempt = place({item.pk: 1}, msisdn="258840000001")
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt.refresh_from_db()
    assert attempt.transaction_id

    log_in(desk, *SUPPORT)
    desk.goto(order_url(order))
    expect(desk.locator("h1")).to_have_text(f"Encomenda {order.short_reference}")
    expect(desk.locator("#order-attempts")).to_contain_text(attempt.transaction_id)
    expect(desk.get_by_role("button", name="Verificar agora")).to_be_visible()
    no_reverse(desk, order, attempt)
    shots.take(desk, "order-page-without-reverse")

    # "Verificar agora": acknowledged, M-Pesa's answer shown (the worker runs inline in tests; in production the
    # panel says "A verificar…" and refreshes until it is in), and in the audit trail under support's name.
    desk.get_by_role("button", name="Verificar agora").click()
    on_page(desk, order_url(order))
    expect(desk.locator(".messagelist")).to_contain_text("Verificação pedida à M-Pesa")
    expect(desk.locator("#recheck-panel")).to_contain_text("Completed")
    audit = desk.locator("#order-audit tr.audit-entry")
    expect(audit).to_have_count(1)
    expect(audit).to_contain_text(SUPPORT[0])
    assert StaffAction.objects.filter(order=order, action=StaffAction.Action.RECHECK).count() == 1
    no_reverse(desk, order, attempt)
    shots.take(desk, "after-recheck")

    # The confirmation page itself is refused.
    response = desk.goto(reverse_url(order, attempt))
    assert response is not None and response.status == 403

    # A POST forged from support's own session: a valid CSRF token (the same request to "Verificar agora" is
    # accepted), but the reverse URL answers 403 and nothing is created or sent to M-Pesa.
    headers = {"X-CSRFToken": csrf_token(desk.context), "Referer": desk.url}
    control = desk.request.post(reverse("admin:orders_order_recheck", args=[order.pk]), headers=headers)
    assert control.status == 200 and control.url.endswith(order_url(order)), (control.status, control.url)
    actions_before = StaffAction.objects.count()
    refused = desk.request.post(
        reverse_url(order, attempt),
        headers=headers,
        form={"amount": "50,00", "reason": "tentativa do suporte", "restock": "no"},
    )
    assert refused.status == 403, refused.status
    assert "CSRF" not in refused.text()
    assert not Reversal.objects.exists()
    assert StaffAction.objects.count() == actions_before
    assert not StaffAction.objects.filter(action=StaffAction.Action.REVERSE).exists()
    order.refresh_from_db()
    assert order.payment_status == Order.PaymentStatus.PAID
    assert sim.known_transaction(attempt.third_party_reference)["reversed"] is False
