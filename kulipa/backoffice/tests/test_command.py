"""``manage.py mpesa status | reverse | reconcile`` against the real simulator, failures included."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from kulipa.accounts.models import User
from kulipa.backoffice.models import StaffAction
from kulipa.backoffice.roles import FINANCE, SUPPORT, roles_ensure
from kulipa.backoffice.selectors import MAPUTO
from kulipa.backoffice.tests.conftest import paid_order, paid_without_transaction_id, unknown_payment
from kulipa.catalog.models import Product
from kulipa.orders.models import Order
from kulipa.payments import gateway
from kulipa.payments.models import AttentionItem, PaymentAttempt, Reversal
from kulipa.payments.tests.conftest import Simulator

OS = Order.Status
PS = Order.PaymentStatus
R = Reversal.State


OPERATOR = "operador@test.kulipa"


@pytest.fixture(autouse=True)
def operator(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> User:
    """The staff member the commands act as (finance), named the way an operator's shell would: KULIPA_OPERATOR."""
    roles_ensure()
    user = User.objects.create_user(OPERATOR, "x-password-1", is_staff=True)
    user.groups.add(Group.objects.get(name=FINANCE))
    monkeypatch.setenv("KULIPA_OPERATOR", OPERATOR)
    return user


def mpesa(*args: str) -> str:
    out = StringIO()
    call_command("mpesa", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_acting_needs_a_staff_member_with_the_permission(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line checks permissions like the web: it acts as a named staff member, never as nobody."""
    _order, attempt, _item = paid_order()
    reference = attempt.third_party_reference
    monkeypatch.delenv("KULIPA_OPERATOR")
    for args in (["reverse", reference, "--reason", "x"], ["status", reference, "--query"]):
        with pytest.raises(CommandError, match="name the staff member"):
            mpesa(*args)
    with pytest.raises(CommandError, match="no active staff member"):
        mpesa("reverse", reference, "--reason", "x", "--as", "ninguem@test.kulipa")
    support = User.objects.create_user("suporte-cli@test.kulipa", "x-password-1", is_staff=True)
    support.groups.add(Group.objects.get(name=SUPPORT))
    with pytest.raises(CommandError, match="may not reverse"):
        mpesa("reverse", reference, "--reason", "x", "--as", support.email)
    assert not Reversal.objects.exists() and not StaffAction.objects.exists()
    assert "Queried M-Pesa" in mpesa("status", reference, "--query", "--as", support.email)  # support may ask
    assert StaffAction.objects.get().actor_name.startswith(f"{support.email} (cli:")
    assert mpesa("status", reference)  # only looking needs no one


# --- status -----------------------------------------------------------------------------------------------------
def test_status_finds_a_payment_by_any_of_its_references(sim: Simulator) -> None:
    order, attempt, _item = paid_order()
    references = (
        order.short_reference,
        f" {order.short_reference.lower()} ",
        attempt.third_party_reference,
        attempt.transaction_id,
    )
    for reference in references:
        shown = mpesa("status", reference)
        assert f"Order {order.short_reference}" in shown
        assert attempt.third_party_reference in shown and "succeeded" in shown and "(pays the order)" in shown
        assert "reversible=200.00" in shown
        assert "25884****001" in shown and attempt.msisdn not in shown
        assert "history entries" in shown
    assert StaffAction.objects.count() == 0  # looking is not an action


def test_status_of_an_unknown_reference_fails(sim: Simulator) -> None:
    for reference in ("KNOPE00000000000", "K9999999", "NOTATRANSACTION", " "):
        with pytest.raises(CommandError, match="unknown reference"):
            mpesa("status", reference)


def test_status_query_asks_mpesa_now_and_is_audited(sim: Simulator) -> None:
    order, attempt, _item = unknown_payment()
    shown = mpesa("status", order.short_reference, "--query")
    assert f"Queried M-Pesa about {attempt.third_party_reference}: paid; now succeeded" in shown
    assert "M-Pesa said: query" in shown and "Completed" in shown
    order.refresh_from_db()
    assert order.status == OS.PAID
    audit = StaffAction.objects.get()
    assert audit.action == StaffAction.Action.RECHECK and audit.actor is not None and audit.actor.email == OPERATOR
    assert audit.actor_name.startswith(f"{OPERATOR} (cli:")
    assert (audit.before["state"], audit.after["state"], audit.after["status_query"]) == (
        "unknown",
        "succeeded",
        "paid",
    )
    # Asking again about a paid payment asks nothing.
    assert "already_final" in mpesa("status", attempt.third_party_reference, "--query")


# --- reverse ----------------------------------------------------------------------------------------------------
def test_reverse_sends_now_a_part_then_the_rest(sim: Simulator) -> None:
    order, attempt, item = paid_order(stock=3, quantity=2)
    shown = mpesa("reverse", attempt.third_party_reference, "--amount", "50.00", "--reason", "desconto")
    reversal = Reversal.objects.get()
    assert f"Reversal {reversal.reference}" in shown and "50.00 MZN, restock=no -> succeeded" in shown
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.PAID, PS.PARTIALLY_REFUNDED)
    audit = StaffAction.objects.get()
    assert (audit.action, audit.reversal, audit.reason, audit.actor) == (
        StaffAction.Action.REVERSE,
        reversal,
        "desconto",
        User.objects.get(email=OPERATOR),
    )
    assert audit.actor_name.startswith(f"{OPERATOR} (cli:") and reversal.requested_by == audit.actor_name

    # The rest, named by the order; restocked on request.
    shown = mpesa("reverse", order.short_reference, "--reason", "cliente desistiu", "--restock")
    assert "150.00 MZN, restock=yes -> succeeded" in shown
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.CANCELLED, PS.REFUNDED)
    assert Product.objects.get(pk=item.pk).stock_on_hand == 3
    assert Decimal(sim.known_transaction(attempt.third_party_reference)["reversed_amount"]) == Decimal("200.00")

    with pytest.raises(CommandError, match="not reversible"):  # nothing left
        mpesa("reverse", attempt.third_party_reference, "--reason", "outra vez")
    assert StaffAction.objects.count() == 2


def test_reverse_without_transaction_id_points_to_the_portal(sim: Simulator) -> None:
    order, _attempt, _item = paid_without_transaction_id()
    with pytest.raises(CommandError, match=r"not reversible.*portal"):
        mpesa("reverse", order.short_reference, "--reason", "x")
    assert "portal only" in mpesa("status", order.short_reference)
    assert not Reversal.objects.exists() and not StaffAction.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "abc", "--reason", "x"], "not an amount"),
        (["--amount", "200.01", "--reason", "x"], "not reversible"),
        (["--amount", "10.005", "--reason", "x"], "not reversible"),
        (["--reason", "   "], "not reversible"),
    ],
)
def test_reverse_refuses_what_it_cannot_do(sim: Simulator, args: list[str], message: str) -> None:
    _order, attempt, _item = paid_order()
    with pytest.raises(CommandError, match=message):
        mpesa("reverse", attempt.third_party_reference, *args)
    with pytest.raises(CommandError, match="unknown reference"):
        mpesa("reverse", "KNOPE00000000000", "--reason", "x")
    with pytest.raises(CommandError):  # --reason is required
        mpesa("reverse", attempt.third_party_reference)
    assert not Reversal.objects.exists() and not StaffAction.objects.exists()
    assert not [t for t in sim.transactions() if t["kind"] == "reversal"]


def test_reverse_refused_by_mpesa_fails_and_tells_a_person(sim: Simulator) -> None:
    order, attempt, _item = paid_order()
    # Someone already gave it all back at M-Pesa (outside the shop): M-Pesa refuses any more (INS-15).
    gateway.reversal(
        transaction_id=attempt.transaction_id, third_party_reference=gateway.new_reference("R"), amount=order.total
    )
    with pytest.raises(CommandError, match="M-Pesa refused reversal"):
        mpesa("reverse", attempt.third_party_reference, "--amount", "50.00", "--reason", "desconto")
    reversal = Reversal.objects.get()
    assert reversal.state == R.FAILED and reversal.result_code
    assert AttentionItem.objects.get().kind == AttentionItem.Kind.REVERSAL_FAILED
    order.refresh_from_db()
    assert order.payment_status == PS.PAID  # nothing recorded as given back


def test_reverse_of_an_order_with_several_payments_asks_which(sim: Simulator) -> None:
    order, attempt, _item = paid_order()
    second = PaymentAttempt.objects.create(
        order=order,
        third_party_reference="KSECONDPAYMENT01",
        msisdn=attempt.msisdn,
        amount=order.total,
        mode="sync",
        state=PaymentAttempt.State.SUCCEEDED,
        transaction_id="TXSECOND01",
    )
    with pytest.raises(CommandError, match=r"2 confirmed payments.*name one"):
        mpesa("reverse", order.short_reference, "--reason", "duplicado")
    assert second.third_party_reference in mpesa("status", "txsecond01")
    assert not Reversal.objects.exists()


# --- reconcile --------------------------------------------------------------------------------------------------
def test_reconcile_sweeps_and_asks_about_open_payments(sim: Simulator) -> None:
    order, attempt, _item = unknown_payment()
    # Not due for the sweep yet: only the forced query of the command settles it.
    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=timezone.now() + timedelta(hours=1))
    today = timezone.localtime(timezone.now(), MAPUTO).date()

    shown = mpesa("reconcile", "--since", today.isoformat())

    assert shown.startswith("Sweep: not_sent=0")
    assert "reconcile=0" in shown
    assert f"{attempt.third_party_reference}  unknown -> succeeded  (paid)" in shown
    assert "Queried: paid=1" in shown
    order.refresh_from_db()
    assert order.status == OS.PAID
    # Payments created before --since are not asked about; by default the last two days are.
    assert "Asking M-Pesa about 0 open payment(s)" in mpesa(
        "reconcile", "--since", (today + timedelta(days=1)).isoformat()
    )
    assert "Queried: none" in mpesa("reconcile")


def test_reconcile_refuses_a_bad_date(sim: Simulator) -> None:
    with pytest.raises(CommandError, match="not a date"):
        mpesa("reconcile", "--since", "30/11/2026")


def test_an_unknown_subcommand_fails(sim: Simulator) -> None:
    with pytest.raises(CommandError):
        mpesa("refund", "K0000001")
