"""Every back-office control is behind its own permission, checked on the server on every path.

For each control — the bulk re-check action, the per-order "Verificar agora" button, the reverse confirmation page
(GET and POST), the portal-reversal POST, the attention item's force-confirm / dismiss / reverse pages, the CSV
export — a user without the permission does not see it, and a direct request answers 403 and changes nothing (no
Reversal, no StaffAction, nothing queued). Users are in the groups the migration creates ("suporte", "financeiro"),
plus a read-only staff member (view permissions only) and a superuser. Over HTTP with ``django.test.Client``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kulipa.accounts.models import User
from kulipa.backoffice import roles
from kulipa.backoffice.models import StaffAction
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import attempt_make, order_make, product_make
from kulipa.payments import services, tasks
from kulipa.payments.models import AttentionItem, PaymentAttempt, Reversal

pytestmark = pytest.mark.django_db

PASSWORD = "pw-kulipa-123456"
_tx = itertools.count(1)
CHANGELIST = "admin:orders_order_changelist"


# --- people --------------------------------------------------------------------------------------------------------
def staff_make(email: str, *groups: str, superuser: bool = False, perms: tuple[tuple[str, str], ...] = ()) -> User:
    if superuser:
        return User.objects.create_superuser(email=email, password=PASSWORD)
    user = User.objects.create_user(email=email, password=PASSWORD, is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    for app, codename in perms:
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


@dataclass
class Team:
    suporte: User
    financeiro: User
    leitor: User
    """Staff who may look at everything (the roles' view permissions) and do nothing."""
    admin: User

    def client(self, who: str) -> Client:
        client = Client()
        client.force_login(getattr(self, who))
        return client


def team_make() -> Team:
    groups = roles.roles_ensure()  # the migration's groups (put back if a transactional test flushed them)
    assert set(groups) == {roles.SUPPORT, roles.FINANCE}
    return Team(
        suporte=staff_make("suporte@example.com", roles.SUPPORT),
        financeiro=staff_make("financeiro@example.com", roles.FINANCE),
        leitor=staff_make("leitor@example.com", perms=tuple((app, f"view_{model}") for app, model in roles.VIEWED)),
        admin=staff_make("admin@example.com", superuser=True),
    )


@dataclass
class Queued:
    reversals: list[int] = field(default_factory=list)
    reconciles: list[int] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return not self.reversals and not self.reconciles


def queued_record(monkeypatch: pytest.MonkeyPatch) -> Queued:
    """What the back office queued (recorded instead of sent)."""
    record = Queued()

    def reversal(reversal_id: int) -> None:
        record.reversals.append(reversal_id)

    def reconcile(attempt_id: int, *, at: Any = None, force: bool = False) -> None:
        record.reconciles.append(attempt_id)

    monkeypatch.setattr(tasks, "queue_reversal", reversal)
    monkeypatch.setattr(tasks, "queue_reconcile", reconcile)
    return record


@pytest.fixture(name="team")
def team_fixture() -> Team:
    return team_make()


@pytest.fixture(name="queued")
def queued_fixture(monkeypatch: pytest.MonkeyPatch) -> Queued:
    return queued_record(monkeypatch)


# --- orders --------------------------------------------------------------------------------------------------------
def db_paid_order(
    *, transaction_id: str | None = "TXPAID0001", amount: Decimal | None = None
) -> tuple[Order, PaymentAttempt]:
    """An order paid through the payments service (``transaction_id=None``: confirmed without an M-Pesa transaction
    id, so only the portal can reverse it; ``amount`` other than the total: needs attention)."""
    order = order_make({product_make(price="250.00").pk: 2})
    attempt = attempt_make(order=order)
    services.order_mark_paid(
        attempt_id=attempt.pk,
        transaction_id=transaction_id,
        confirmed_amount=order.total if amount is None else amount,
        source="test",
    )
    order.refresh_from_db()
    attempt.refresh_from_db()
    assert attempt.state == PaymentAttempt.State.SUCCEEDED
    return order, attempt


def db_attention_order() -> tuple[Order, PaymentAttempt, AttentionItem]:
    """An order paid with a different amount: needs attention, an open item proposing a reversal."""
    order, attempt = db_paid_order(transaction_id=f"TXODD{next(_tx):04d}", amount=Decimal("480.00"))
    assert order.status == Order.Status.NEEDS_ATTENTION
    item = AttentionItem.objects.get(order=order, resolved_at__isnull=True)
    return order, attempt, item


def order_page(order: Order) -> str:
    return reverse("admin:orders_order_change", args=[order.pk])


def reverse_page(order: Order, attempt: PaymentAttempt) -> str:
    return reverse("admin:orders_order_reverse", args=[order.pk, attempt.pk])


def portal_page(order: Order, attempt: PaymentAttempt) -> str:
    return reverse("admin:orders_order_portal_reversal", args=[order.pk, attempt.pk])


def item_page(item: AttentionItem, action: str = "") -> str:
    if not action:
        return reverse("admin:payments_attentionitem_change", args=[item.pk])
    return reverse(f"admin:payments_attentionitem_{action}", args=[item.pk])


def nothing_changed(queued: Queued) -> bool:
    return queued.nothing and not Reversal.objects.exists() and not StaffAction.objects.exists()


# --- the bulk re-check action --------------------------------------------------------------------------------------
def test_bulk_recheck_needs_recheck_permission(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order()
    changelist = reverse(CHANGELIST)
    post = {"action": "recheck_payment_status", "_selected_action": [order.pk], "index": "0"}

    leitor = team.client("leitor")
    page = leitor.get(changelist)
    assert page.status_code == 200 and order.short_reference in page.content.decode()
    assert "recheck_payment_status" not in page.content.decode()
    assert leitor.post(changelist, post).status_code == 403
    assert nothing_changed(queued)

    for who in ("suporte", "financeiro", "admin"):
        client = team.client(who)
        assert "recheck_payment_status" in client.get(changelist).content.decode(), who
        assert client.post(changelist, post).status_code == 302, who
    assert queued.reconciles == [attempt.pk] * 3
    assert StaffAction.objects.filter(action=StaffAction.Action.RECHECK, order=order).count() == 3


def test_the_old_bulk_reverse_action_is_gone(team: Team, queued: Queued) -> None:
    order, _attempt = db_paid_order()
    changelist = reverse(CHANGELIST)
    client = team.client("admin")
    assert "reverse_payment" not in client.get(changelist).content.decode()
    response = client.post(changelist, {"action": "reverse_payment", "_selected_action": [order.pk], "index": "0"})
    assert response.status_code == 403
    assert nothing_changed(queued)


# --- the per-order "Verificar agora" button ------------------------------------------------------------------------
def test_recheck_button_needs_recheck_permission(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order()
    url = reverse("admin:orders_order_recheck", args=[order.pk])

    leitor = team.client("leitor")
    page = leitor.get(order_page(order))
    assert page.status_code == 200
    assert url not in page.content.decode() and 'id="recheck-form"' not in page.content.decode()
    assert leitor.post(url).status_code == 403
    assert leitor.get(url).status_code == 403
    assert nothing_changed(queued)

    suporte = team.client("suporte")
    assert url in suporte.get(order_page(order)).content.decode()
    assert suporte.get(url).status_code == 405  # a GET never queues anything
    assert queued.nothing
    response = suporte.post(url)
    assert response.status_code == 302 and response["Location"] == order_page(order)
    assert queued.reconciles == [attempt.pk]
    action = StaffAction.objects.get()
    assert (action.action, action.actor, action.order) == (StaffAction.Action.RECHECK, team.suporte, order)


def test_staff_without_view_permission_get_403_on_every_order_path(queued: Queued) -> None:
    roles.roles_ensure()
    order, attempt = db_paid_order()
    bare = Client()
    bare.force_login(staff_make("sem-grupo@example.com"))
    for url in (
        order_page(order),
        reverse("admin:orders_order_recheck", args=[order.pk]),
        reverse_page(order, attempt),
        portal_page(order, attempt),
    ):
        assert bare.get(url).status_code == 403, url
        assert bare.post(url, {"amount": "10.00", "reason": "x", "restock": "no", "confirm": "1"}).status_code == 403, (
            url
        )
    assert nothing_changed(queued)


# --- reverse: confirmation page, GET and POST -----------------------------------------------------------------------
def test_reverse_needs_reverse_permission(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order()
    url = reverse_page(order, attempt)
    data = {"amount": "100.00", "reason": "cliente devolveu um artigo", "restock": "no", "confirm": "1"}

    for who in ("leitor", "suporte"):
        client = team.client(who)
        page = client.get(order_page(order)).content.decode()
        assert url not in page and "Reverter…" not in page, who
        assert client.get(url).status_code == 403, who
        assert client.post(url, data).status_code == 403, who
    assert nothing_changed(queued)

    financeiro = team.client("financeiro")
    page = financeiro.get(order_page(order)).content.decode()
    assert url in page and "Reverter…" in page
    confirm = financeiro.get(url)
    assert confirm.status_code == 200
    assert "25884****567" in confirm.content.decode() and "258841234567" not in confirm.content.decode()
    response = financeiro.post(url, data)
    assert response.status_code == 302 and response["Location"] == order_page(order)
    reversal = Reversal.objects.get()
    assert (reversal.amount, reversal.restock, reversal.reason) == (Decimal("100.00"), False, data["reason"])
    assert queued.reversals == [reversal.pk]
    audit = StaffAction.objects.get()
    assert (audit.action, audit.actor, audit.reversal) == (StaffAction.Action.REVERSE, team.financeiro, reversal)

    # A double click: the open reversal is returned, nothing new is written or queued.
    assert financeiro.post(url, data).status_code == 302
    assert Reversal.objects.count() == 1 and StaffAction.objects.count() == 1 and queued.reversals == [reversal.pk]


def test_superuser_may_reverse(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order()
    client = team.client("admin")
    assert reverse_page(order, attempt) in client.get(order_page(order)).content.decode()
    response = client.post(
        reverse_page(order, attempt),
        {"amount": "500.00", "reason": "encomenda anulada", "restock": "yes", "confirm": "1"},
    )
    assert response.status_code == 302
    reversal = Reversal.objects.get()
    assert reversal.restock is True and reversal.amount == Decimal("500.00")
    assert queued.reversals == [reversal.pk]


def test_reverse_refuses_bad_input_and_changes_nothing(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order()
    client = team.client("financeiro")
    url = reverse_page(order, attempt)
    for data in (
        {"amount": "100.00", "reason": "", "restock": "no"},  # no reason
        {"amount": "100.00", "reason": "   ", "restock": "no"},
        {"amount": "500.01", "reason": "demais", "restock": "no"},  # more than was paid
        {"amount": "0", "reason": "nada", "restock": "no"},
        {"amount": "100.00", "reason": "sem escolha de stock"},
    ):
        response = client.post(url, data)
        assert response.status_code == 400, data
    assert nothing_changed(queued)


# --- the portal reversal --------------------------------------------------------------------------------------------
def test_portal_reversal_needs_reverse_permission(team: Team, queued: Queued) -> None:
    order, attempt = db_paid_order(transaction_id=None)  # the API cannot reverse it
    url = portal_page(order, attempt)
    data = {"portal_reference": "PORTAL123", "amount": "500.00", "reason": "revertido no portal"}

    suporte = team.client("suporte")
    assert suporte.post(url, data).status_code == 403
    assert suporte.get(url).status_code == 403
    assert suporte.get(reverse_page(order, attempt)).status_code == 403
    assert nothing_changed(queued)

    financeiro = team.client("financeiro")
    confirm = financeiro.get(reverse_page(order, attempt)).content.decode()
    assert 'id="portal-needed"' in confirm and 'id="portal-form"' in confirm and 'id="reverse-form"' not in confirm
    assert attempt.third_party_reference in confirm and order.short_reference in confirm
    response = financeiro.post(url, data)
    assert response.status_code == 302 and response["Location"] == order_page(order)
    reversal = Reversal.objects.get()
    assert reversal.external and reversal.reference == "PORTAL123" and reversal.amount == Decimal("500.00")
    assert queued.reversals == []  # nothing to send: it was done in the portal
    audit = StaffAction.objects.get()
    assert (audit.action, audit.actor) == (StaffAction.Action.PORTAL_REVERSAL, team.financeiro)


# --- the attention item's actions -----------------------------------------------------------------------------------
ATTENTION_ACTIONS = ("reverse", "force_confirm", "dismiss")


def test_attention_actions_need_their_permissions(team: Team, queued: Queued) -> None:
    order, _attempt, item = db_attention_order()
    data = {
        "note": "visto",
        "understood": "on",
        "amount": "480.00",
        "reason": "devolver",
        "restock": "no",
        "confirm": "1",
    }

    for who in ("leitor", "suporte"):
        client = team.client(who)
        page = client.get(item_page(item))
        assert page.status_code == 200, who
        for action in ATTENTION_ACTIONS:
            assert item_page(item, action) not in page.content.decode(), (who, action)
            assert client.get(item_page(item, action)).status_code == 403, (who, action)
            assert client.post(item_page(item, action), data).status_code == 403, (who, action)
    assert nothing_changed(queued)
    item.refresh_from_db()
    order.refresh_from_db()
    assert item.resolved_at is None and order.status == Order.Status.NEEDS_ATTENTION

    financeiro = team.client("financeiro")
    html = financeiro.get(item_page(item)).content.decode()
    for action in ATTENTION_ACTIONS:
        assert item_page(item, action) in html, action
        assert financeiro.get(item_page(item, action)).status_code == 200, action


def test_finance_resolves_by_reversal(team: Team, queued: Queued) -> None:
    _order, attempt, item = db_attention_order()
    client = team.client("financeiro")
    response = client.post(
        item_page(item, "reverse"), {"amount": "480.00", "reason": "montante errado", "restock": "no", "confirm": "1"}
    )
    assert response.status_code == 302 and response["Location"] == item_page(item)
    reversal = Reversal.objects.get(attempt=attempt)
    assert queued.reversals == [reversal.pk]
    item.refresh_from_db()
    assert item.resolved_at is not None and item.resolved_by == team.financeiro.email
    assert StaffAction.objects.get().action == StaffAction.Action.REVERSE


def test_finance_force_confirms_with_a_note_and_a_tick(team: Team, queued: Queued) -> None:
    order, _attempt, item = db_attention_order()
    client = team.client("financeiro")
    confirm = client.get(item_page(item, "force_confirm")).content.decode()
    assert 'id="force-confirm-warning"' in confirm
    assert client.post(item_page(item, "force_confirm"), {"note": "o cliente aceita"}).status_code == 400  # no tick
    assert client.post(item_page(item, "force_confirm"), {"note": "", "understood": "on"}).status_code == 400
    assert not StaffAction.objects.exists()
    response = client.post(item_page(item, "force_confirm"), {"note": "o cliente aceita", "understood": "on"})
    assert response.status_code == 302
    order.refresh_from_db()
    item.refresh_from_db()
    assert order.status == Order.Status.PAID and item.resolved_at is not None
    assert StaffAction.objects.get().action == StaffAction.Action.FORCE_CONFIRM
    assert queued.nothing and not Reversal.objects.exists()
    # Resolved: no more controls, and the pages say so.
    page = client.get(item_page(item)).content.decode()
    assert all(item_page(item, action) not in page for action in ATTENTION_ACTIONS)
    assert 'id="already-resolved"' in client.get(item_page(item, "dismiss")).content.decode()


def test_finance_dismisses_with_a_required_note(team: Team, queued: Queued) -> None:
    order, _attempt, item = db_attention_order()
    client = team.client("financeiro")
    assert client.post(item_page(item, "dismiss"), {"note": "  "}).status_code == 400
    assert not StaffAction.objects.exists()
    assert client.post(item_page(item, "dismiss"), {"note": "tratado por telefone"}).status_code == 302
    item.refresh_from_db()
    order.refresh_from_db()
    assert item.resolved_at is not None and item.resolution == "tratado por telefone"
    assert order.status == Order.Status.NEEDS_ATTENTION  # money and order untouched
    assert StaffAction.objects.get().action == StaffAction.Action.DISMISS
    assert queued.nothing and not Reversal.objects.exists()


# --- the CSV export -------------------------------------------------------------------------------------------------
def test_export_needs_export_permission(team: Team, queued: Queued) -> None:
    db_paid_order()
    url = reverse("admin:orders_order_export")
    today = timezone.localdate().isoformat()
    query = {"since": today, "until": today}

    for who in ("leitor", "suporte"):
        client = team.client(who)
        index = client.get(reverse("admin:index")).content.decode()
        assert url not in index and 'id="export-payments"' not in index, who
        assert client.get(url, query).status_code == 403, who
        assert client.get(url).status_code == 403, who
    assert nothing_changed(queued)

    client = team.client("financeiro")
    assert url in client.get(reverse("admin:index")).content.decode()
    assert client.get(url).status_code == 200  # the form
    response = client.get(url, query)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="kulipa-pagamentos-{today}-{today}.csv"'
    lines = response.getvalue().decode("utf-8-sig").splitlines()
    assert lines[0].startswith("encomenda,") and len(lines) == 2 and "TXPAID0001" in lines[1]
    audit = StaffAction.objects.get()
    assert audit.action == StaffAction.Action.EXPORT and audit.after["rows"] == 1


def test_export_refuses_a_bad_range(team: Team) -> None:
    client = team.client("financeiro")
    url = reverse("admin:orders_order_export")
    assert client.get(url, {"since": "2026-02-01", "until": "2026-01-01"}).status_code == 400
    assert client.get(url, {"since": "ontem", "until": "2026-01-01"}).status_code == 400
    assert client.get(url, {"since": "2024-01-01", "until": "2026-01-01"}).status_code == 400  # too long at once
    assert not StaffAction.objects.exists()


# --- the shop's order page ------------------------------------------------------------------------------------------
def test_staff_do_not_open_customers_orders_on_the_shop(team: Team) -> None:
    customer = User.objects.create_user(email="cliente@example.com", password=PASSWORD)
    order = order_make({product_make().pk: 1}, user=customer)
    for who in ("suporte", "financeiro", "leitor", "admin"):
        assert team.client(who).get(order.get_absolute_url()).status_code == 404, who
        assert team.client(who).get(order_page(order)).status_code == 200, who  # the back office is the place
    # A staff member who is the order's own customer sees it as any customer does.
    own = order_make({product_make().pk: 1}, user=team.financeiro)
    assert team.client("financeiro").get(own.get_absolute_url()).status_code == 200
    status = reverse("payments:status", kwargs={"public_id": order.public_id})
    assert team.client("admin").get(status).status_code == 404
