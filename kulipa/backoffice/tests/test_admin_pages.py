"""The back office's pages as staff use them, over HTTP: the order list and its search, the order page (timeline,
audit, labels in Portuguese and English), re-check, the finance path of a partial reversal against the real
simulator, the attention queue, and the index with today's summary."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from kulipa.backoffice.models import StaffAction
from kulipa.backoffice.tests.test_admin_permissions import (
    Queued,
    Team,
    db_attention_order,
    db_paid_order,
    order_page,
    queued_record,
    reverse_page,
    team_make,
)
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import order_make, product_make
from kulipa.payments.events import Kind
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.tests.conftest import Simulator, checkout, product, wait_for


@pytest.fixture(name="team")
def team_fixture() -> Team:
    return team_make()


@pytest.fixture(name="queued")
def queued_fixture(monkeypatch: pytest.MonkeyPatch) -> Queued:
    return queued_record(monkeypatch)


def listed(client: Client, query: str) -> list[str]:
    """The order numbers the order list shows for a search."""
    response = client.get(reverse("admin:orders_order_changelist"), {"q": query})
    assert response.status_code == 200
    return [order.short_reference for order in response.context["cl"].result_list]


def english(client: Client) -> Client:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    return client


# --- the order list ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_list_shows_masked_phone_mzn_total_and_statuses(team: Team) -> None:
    order, _attempt = db_paid_order()
    page = team.client("suporte").get(reverse("admin:orders_order_changelist"))
    html = page.content.decode()
    assert page.status_code == 200
    assert order.short_reference in html and "Ana Cossa" in html
    assert "25884****567" in html and "258841234567" not in html
    assert "500,00 MT" in html
    assert "paga" in html and "pago" in html
    assert "Kulipa — back office" in html


@pytest.mark.django_db
def test_search_by_order_number_phone_and_references(team: Team) -> None:
    order, attempt = db_paid_order(transaction_id="TXSEARCH42")
    other = order_make({product_make().pk: 1})
    PaymentAttempt.objects.filter(order=other).delete()
    Order.objects.filter(pk=other.pk).update(msisdn="258879990000")
    client = team.client("suporte")
    ref = order.short_reference
    assert listed(client, ref) == [ref]
    assert listed(client, ref.lower()) == [ref]
    assert listed(client, str(order.pk)) == [ref]
    for phone in ("258841234567", "+258 84 123 4567", "84 123 4567", "841234567", "4567", "234567"):
        assert listed(client, phone) == [ref], phone
    assert listed(client, "87 999 0000") == [other.short_reference]
    assert listed(client, "TXSEARCH42") == [ref]
    assert listed(client, "txsearch42") == [ref]
    assert listed(client, attempt.third_party_reference) == [ref]
    assert set(listed(client, "Cossa")) == {ref, other.short_reference}
    assert listed(client, "TXNOTHING") == []


@pytest.mark.django_db
def test_needs_attention_filter(team: Team) -> None:
    paid, _ = db_paid_order()
    odd, _attempt, _item = db_attention_order()
    client = team.client("suporte")
    response = client.get(reverse("admin:orders_order_changelist"), {"atencao": "sim"})
    assert [o.pk for o in response.context["cl"].result_list] == [odd.pk]
    response = client.get(reverse("admin:orders_order_changelist"), {"atencao": "nao"})
    assert [o.pk for o in response.context["cl"].result_list] == [paid.pk]
    response = client.get(reverse("admin:orders_order_changelist"), {"payment_status__exact": "paid"})
    assert {o.pk for o in response.context["cl"].result_list} == {paid.pk, odd.pk}


# --- the order page ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_order_page_has_no_internal_fields_and_is_translated(team: Team) -> None:
    order, attempt = db_paid_order()
    client = team.client("financeiro")
    html = client.get(order_page(order)).content.decode()
    for hidden in ("Checkout token", "checkout_token", "session", "object (", order.public_id, "Paid amount"):
        assert hidden not in html, hidden
    for shown in ("Histórico do pagamento", "Artigos", "Montante pago", "Verificar agora", "Reverter…"):
        assert shown.lower() in html.lower(), shown
    assert attempt.third_party_reference in html and "TXPAID0001" in html
    assert order.lines.get().product_name in html
    assert "258841234567" not in html

    html = english(client).get(order_page(order)).content.decode()
    for hidden in ("Checkout token", "session", "object (", "Paid amount"):
        assert hidden not in html, hidden
    for shown in ("Payment history", "Items", "Amount paid", "Check now", "Reverse…", "Customer", "Stock reservations"):
        assert shown in html, shown
    for portuguese in ("Histórico do pagamento", "Verificar agora", "Montante pago"):
        assert portuguese not in html, portuguese


@pytest.mark.django_db
def test_recheck_shows_checking_until_the_worker_answers(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order()
    client = team.client("suporte")
    response = client.post(reverse("admin:orders_order_recheck", args=[order.pk]), follow=True)
    html = response.content.decode()
    assert queued.reconciles == [attempt.pk]
    assert "A verificar…" in html and 'hx-trigger="every 3s"' in html
    panel = client.get(reverse("admin:orders_order_recheck_panel", args=[order.pk]))
    assert "A verificar…" in panel.content.decode()
    # The worker's status query lands: the panel shows it and stops polling.
    PaymentEvent.objects.create(
        order=order,
        attempt=attempt,
        kind=Kind.STATUS_QUERY,
        summary="query: Completed",
        payload={"transaction_status": "Completed", "outcome": "success", "code": "INS-0"},
    )
    answered = client.get(reverse("admin:orders_order_recheck_panel", args=[order.pk])).content.decode()
    assert "A verificar…" not in answered and "hx-trigger" not in answered
    assert "query: Completed" in answered and "INS-0" in answered


@pytest.mark.django_db
def test_reverse_page_says_what_will_happen_before_anything_moves(team: Team) -> None:
    order, attempt = db_paid_order()
    client = team.client("financeiro")
    html = client.get(reverse_page(order, attempt)).content.decode()
    assert 'value="500,00"' in html  # everything that is left, by default
    assert 'value="yes"' in html and re.search(r'value="yes"[^>]*checked', html)  # restock: yes for a full one
    # The first POST only reviews: the exact amount, number and stock effect of what was typed; nothing moves.
    review = client.post(reverse_page(order, attempt), {"amount": "120,00", "reason": "avaria", "restock": "no"})
    assert review.status_code == 200
    html = review.content.decode()
    sentence = re.search(r'<p class="sentence" id="reverse-sentence">(.*?)</p>', html, re.S)
    assert sentence is not None
    text = sentence.group(1)
    assert "120,00 MT" in text and "25884****567" in text and "TXPAID0001" in text and "O stock não muda" in text
    assert 'name="confirm" value="1"' in html
    assert not Reversal.objects.exists() and not StaffAction.objects.exists()


# --- the attention queue ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_attention_queue_open_first_newest_first(team: Team) -> None:
    first_order, _a, first = db_attention_order()
    second_order, _b, second = db_attention_order()
    client = team.client("financeiro")
    assert (
        client.post(reverse("admin:payments_attentionitem_dismiss", args=[second.pk]), {"note": "ok"}).status_code
        == 302
    )
    third_order, _c, third = db_attention_order()
    response = client.get(reverse("admin:payments_attentionitem_changelist"))
    assert [i.pk for i in response.context["cl"].result_list] == [third.pk, first.pk, second.pk]
    html = response.content.decode()
    assert order_page(first_order) in html and order_page(third_order) in html
    response = client.get(reverse("admin:payments_attentionitem_changelist"), {"situacao": "resolvido"})
    assert [i.pk for i in response.context["cl"].result_list] == [second.pk]
    response = client.get(reverse("admin:payments_attentionitem_changelist"), {"situacao": "aberto"})
    assert [i.pk for i in response.context["cl"].result_list] == [third.pk, first.pk]
    response = client.get(reverse("admin:payments_attentionitem_changelist"), {"kind__exact": "duplicate_payment"})
    assert list(response.context["cl"].result_list) == []
    assert second_order.pk != first_order.pk


# --- the index ---------------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_index_shows_today(team: Team) -> None:
    db_paid_order()
    db_attention_order()
    html = team.client("suporte").get(reverse("admin:index")).content.decode()
    assert "Kulipa — back office" in html
    assert 'id="today-summary"' in html
    paid = re.search(r'<td id="summary-paid">(.*?)</td>', html, re.S)
    assert paid is not None and "1.000,00 MT" in paid.group(1)
    attention = re.search(r'<td id="summary-attention">(.*?)</td>', html, re.S)
    assert attention is not None and attention.group(1).strip() == "1"
    assert 'id="export-payments"' not in html  # support does not export


# --- finance's path, against the real simulator -----------------------------------------------------------------
def test_finance_finds_a_paid_order_by_its_transaction_id_and_reverses_part_of_it(sim: Simulator, team: Team) -> None:
    item = product(price="400.00", stock=5)
    order = checkout(Client(), {item.pk: 2}, msisdn="258840000001")
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt = order.payment_attempts.get()
    assert attempt.transaction_id

    client = team.client("financeiro")
    assert listed(client, attempt.transaction_id) == [order.short_reference]
    page = client.get(order_page(order)).content.decode()
    assert attempt.transaction_id in page and reverse_page(order, attempt) in page

    confirm = client.get(reverse_page(order, attempt))
    assert confirm.status_code == 200 and "800,00 MT" in confirm.content.decode()
    response = client.post(
        reverse_page(order, attempt),
        {"amount": "150,00", "reason": "um artigo chegou partido", "restock": "no", "confirm": "1"},
    )
    assert response.status_code == 302 and response["Location"] == order_page(order)
    reversal = wait_for(
        lambda: Reversal.objects.filter(attempt=attempt, state=Reversal.State.SUCCEEDED).first(), what="reversed"
    )
    assert reversal.amount == Decimal("150.00") and reversal.requested_by == team.financeiro.email
    tx = sim.known_transaction(attempt.third_party_reference)
    assert tx["reversed"] is True and Decimal(tx["reversed_amount"]) == Decimal("150.00")

    order.refresh_from_db()
    assert order.payment_status == Order.PaymentStatus.PARTIALLY_REFUNDED and order.status == Order.Status.PAID
    audit = StaffAction.objects.get(order=order)
    assert audit.action == StaffAction.Action.REVERSE and audit.reason == "um artigo chegou partido"

    page = client.get(order_page(order)).content.decode()
    assert "devolvido em parte" in page and "150,00 MT" in page
    assert 'class="audit-entry"' in page and "um artigo chegou partido" in page and team.financeiro.email in page
    assert reversal.reference in page and 'class="timeline-reversal"' in page and 'class="timeline-staff"' in page
    # Still reversible: what is left.
    assert "650,00 MT" in client.get(reverse_page(order, attempt)).content.decode()
    # The list shows the partial refund too.
    listing = client.get(reverse("admin:orders_order_changelist")).content.decode()
    assert "devolvido em parte" in listing
    assert not AttentionItem.objects.exists()
