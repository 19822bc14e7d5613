"""Staff actions against the real simulator: permissions checked on the server, the owners' services making the
change, one audit row per change, and what staff read (timeline, labels, today's figures, the export)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Permission
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F
from django.test import Client
from django.utils import timezone

from kulipa.accounts.models import User
from kulipa.backoffice import selectors
from kulipa.backoffice import services as backoffice
from kulipa.backoffice.models import StaffAction
from kulipa.backoffice.selectors import EXPORT_COLUMNS, MAPUTO
from kulipa.backoffice.tests.conftest import (
    PAYS,
    Staff,
    late_payment_without_stock,
    paid_order,
    paid_without_transaction_id,
    unknown_payment,
)
from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.payments import services
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.tests.conftest import Simulator, checkout, place, product, wait_for

Action = StaffAction.Action
OS = Order.Status
PS = Order.PaymentStatus
R = Reversal.State


def raise_item(order: Order, attempt: PaymentAttempt, *, key: str = "test") -> AttentionItem:
    return services.attention_raise(
        kind=AttentionItem.Kind.DUPLICATE_PAYMENT,
        key=f"{key}:{attempt.pk}",
        order_id=order.pk,
        attempt_id=attempt.pk,
        reason="a person must look",
        propose_reversal=True,
    )


def actions(user: Any, order: Order, attempt: PaymentAttempt, item: AttentionItem) -> dict[str, Callable[[], Any]]:
    """Every staff action, ready to call as ``user``."""
    return {
        "recheck": lambda: backoffice.staff_recheck(user=user, order=order),
        "reverse": lambda: backoffice.staff_reverse(
            user=user, attempt_id=attempt.pk, amount=Decimal("10.00"), reason="motivo", restock=None
        ),
        "portal": lambda: backoffice.staff_record_portal_reversal(
            user=user, attempt_id=attempt.pk, portal_reference="PORTAL1", amount=Decimal("10.00"), reason="motivo"
        ),
        "force_confirm": lambda: backoffice.staff_force_confirm(user=user, item_id=item.pk, note="manter"),
        "dismiss": lambda: backoffice.staff_dismiss(user=user, item_id=item.pk, note="nada a fazer"),
        "resolve_by_reversal": lambda: backoffice.staff_resolve_by_reversal(
            user=user, item_id=item.pk, amount=None, reason="duplicado", restock=None
        ),
        "export": lambda: backoffice.staff_export_logged(
            user=user, since=date(2026, 1, 1), until=date(2026, 1, 31), rows=3
        ),
    }


def state_of(order: Order, attempt: PaymentAttempt, item: AttentionItem) -> tuple[Any, ...]:
    order.refresh_from_db()
    item.refresh_from_db()
    return (
        order.status,
        order.payment_status,
        order.attention_reason,
        PaymentAttempt.objects.get(pk=attempt.pk).state,
        Reversal.objects.count(),
        item.resolved_at,
        StaffAction.objects.count(),
        PaymentEvent.objects.filter(order=order).count(),
    )


# --- permissions ------------------------------------------------------------------------------------------------
def test_without_its_permission_every_action_is_refused_and_changes_nothing(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = paid_order()
    item = raise_item(order, attempt)
    inactive = User.objects.create_user("antigo@test.kulipa", "x", is_staff=True, is_active=False)
    inactive.groups.set(staff.finance.groups.all())
    before = state_of(order, attempt, item)
    for who in (staff.nobody, AnonymousUser(), User.objects.get(pk=inactive.pk)):
        for name, call in actions(who, order, attempt, item).items():
            with pytest.raises(PermissionDenied):
                call()
            assert state_of(order, attempt, item) == before, (who, name)
    assert len([t for t in sim.transactions() if t["kind"] == "reversal"]) == 0


def test_support_may_recheck_and_nothing_else(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = paid_order()
    item = raise_item(order, attempt)
    calls = actions(staff.support, order, attempt, item)
    before = state_of(order, attempt, item)
    for name in ("reverse", "portal", "force_confirm", "dismiss", "resolve_by_reversal", "export"):
        with pytest.raises(PermissionDenied):
            calls[name]()
        assert state_of(order, attempt, item) == before, name
    assert calls["recheck"]() == attempt.pk
    audit = StaffAction.objects.get()
    assert (audit.action, audit.actor, audit.actor_name, audit.order, audit.attempt) == (
        Action.RECHECK,
        staff.support,
        staff.support.email,
        order,
        attempt,
    )
    assert backoffice.staff_can(staff.support, backoffice.PERM_RECHECK)
    assert not backoffice.staff_can(staff.support, backoffice.PERM_REVERSE)
    assert backoffice.staff_can(
        staff.finance, backoffice.PERM_RECHECK, backoffice.PERM_REVERSE, backoffice.PERM_RESOLVE, backoffice.PERM_EXPORT
    )


def test_resolving_by_reversal_needs_both_permissions(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = paid_order()
    item = raise_item(order, attempt)
    only_reverse = User.objects.create_user("so-reverter@test.kulipa", "x", is_staff=True)
    only_reverse.user_permissions.add(Permission.objects.get(codename="reverse_payment"))
    with pytest.raises(PermissionDenied):
        actions(User.objects.get(pk=only_reverse.pk), order, attempt, item)["resolve_by_reversal"]()
    assert Reversal.objects.count() == 0 and StaffAction.objects.count() == 0


def test_force_confirming_is_a_permission_of_its_own(sim: Simulator, staff: Staff) -> None:
    """Resolving attention items (dismissing them) does not include keeping money by force-confirming an order."""
    order, _attempt, _product, item = late_payment_without_stock(sim)
    resolver = User.objects.create_user("so-resolver@test.kulipa", "x", is_staff=True)
    resolver.user_permissions.add(Permission.objects.get(codename="resolve_attention"))
    resolver = User.objects.get(pk=resolver.pk)
    with pytest.raises(PermissionDenied):
        backoffice.staff_force_confirm(user=resolver, item_id=item.pk, note="manter")
    assert Order.objects.get(pk=order.pk).status == Order.Status.NEEDS_ATTENTION
    assert StaffAction.objects.count() == 0
    backoffice.staff_dismiss(user=resolver, item_id=item.pk, note="cliente avisado")
    assert StaffAction.objects.get().action == StaffAction.Action.DISMISS


def test_a_forced_recheck_of_a_paid_payment_asks_and_shows_the_answer(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = paid_order()
    before = order.payment_events.filter(kind="status_query").count()
    assert backoffice.staff_recheck(user=staff.support, order=order) == attempt.pk
    wait_for(lambda: order.payment_events.filter(kind="status_query").count() == before + 1, what="status query logged")
    assert Order.objects.get(pk=order.pk).status == Order.Status.PAID  # asked, nothing changed


# --- re-check ---------------------------------------------------------------------------------------------------
def test_recheck_asks_mpesa_and_the_answer_pays_the_order(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = unknown_payment()
    assert backoffice.staff_recheck(user=staff.support, order=order) == attempt.pk
    # Queued after commit; huey runs it inline in the tests: the status query found it Completed.
    wait_for(lambda: Order.objects.get(pk=order.pk).status == OS.PAID, what="paid by the re-check")
    audit = StaffAction.objects.get()
    assert audit.before["state"] == PaymentAttempt.State.UNKNOWN
    assert audit.before["msisdn"] != attempt.msisdn and audit.before["msisdn"].endswith(attempt.msisdn[-3:])
    assert audit.after == {"status_query": "queued"}
    assert order.payment_events.filter(kind=PaymentEvent.Kind.STATUS_QUERY, payload__source="status_query").exists()


def test_recheck_of_an_order_never_sent_asks_nothing(sim: Simulator, staff: Staff) -> None:
    order, _attempt = place({product(stock=2).pk: 1}, push=False)  # still queued
    assert backoffice.staff_recheck(user=staff.finance, order=order) is None
    assert StaffAction.objects.get().after == {"status_query": "nothing to ask"}
    assert not order.payment_events.filter(kind=PaymentEvent.Kind.STATUS_QUERY).exists()


# --- reversals through the API ----------------------------------------------------------------------------------
def test_partial_reversal_then_the_rest(sim: Simulator, staff: Staff) -> None:
    order, attempt, item = paid_order(stock=3, quantity=2)
    assert selectors.payment_status_label(order) == "pago"
    assert selectors.reversible_amount(attempt=attempt) == Decimal("200.00")
    assert selectors.can_reverse_by_api(attempt=attempt)

    first = backoffice.staff_reverse(
        user=staff.finance, attempt_id=attempt.pk, amount=Decimal("50.00"), reason="desconto", restock=None
    )
    first.refresh_from_db()  # sent after commit (inline here)
    assert (first.state, first.amount, first.restock, first.external) == (R.SUCCEEDED, Decimal("50.00"), False, False)
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.PAID, PS.PARTIALLY_REFUNDED)
    assert selectors.payment_status_label(order) == "devolvido em parte (50,00 MT de 200,00 MT)"
    assert selectors.reversible_amount(attempt=attempt) == Decimal("150.00")
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1  # a part: nothing restocked

    rest = backoffice.staff_reverse(
        user=staff.finance, attempt_id=attempt.pk, amount=None, reason="cliente desistiu", restock=None
    )
    rest.refresh_from_db()
    assert (rest.state, rest.amount, rest.restock) == (R.SUCCEEDED, Decimal("150.00"), True)
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.CANCELLED, PS.REFUNDED)
    assert selectors.payment_status_label(order) == "devolvido"
    assert selectors.reversible_amount(attempt=attempt) == Decimal("0.00")
    assert Product.objects.get(pk=item.pk).stock_on_hand == 3  # the whole of it: back on the shelf
    assert Decimal(sim.known_transaction(attempt.third_party_reference)["reversed_amount"]) == Decimal("200.00")

    audits = list(StaffAction.objects.order_by("id"))
    assert [(a.action, a.reversal_id, a.reason) for a in audits] == [
        (Action.REVERSE, first.pk, "desconto"),
        (Action.REVERSE, rest.pk, "cliente desistiu"),
    ]
    assert audits[0].before["reversed"] == "0.00" and audits[1].before["reversed"] == "50.00"
    assert audits[1].after["reversal_amount"] == "150.00" and audits[1].after["restock"] is True
    assert all(a.actor == staff.finance for a in audits)
    with pytest.raises(services.ReversalNotAllowed):  # nothing left
        backoffice.staff_reverse(user=staff.finance, attempt_id=attempt.pk, amount=None, reason="x", restock=None)


@pytest.mark.parametrize("reason", ["", "   ", "\n"])
def test_a_reason_is_required(sim: Simulator, staff: Staff, reason: str) -> None:
    order, attempt, _item = paid_order()
    item = raise_item(order, attempt)
    before = state_of(order, attempt, item)
    calls: list[Callable[[], Any]] = [
        lambda: backoffice.staff_reverse(
            user=staff.finance, attempt_id=attempt.pk, amount=None, reason=reason, restock=None
        ),
        lambda: backoffice.staff_record_portal_reversal(
            user=staff.finance, attempt_id=attempt.pk, portal_reference="ABC", amount=Decimal("1.00"), reason=reason
        ),
        lambda: backoffice.staff_resolve_by_reversal(
            user=staff.finance, item_id=item.pk, amount=None, reason=reason, restock=None
        ),
        lambda: backoffice.staff_force_confirm(user=staff.finance, item_id=item.pk, note=reason),
        lambda: backoffice.staff_dismiss(user=staff.finance, item_id=item.pk, note=reason),
    ]
    for call in calls:
        with pytest.raises(backoffice.ReasonRequired) as refused:
            call()
        assert isinstance(refused.value, ValueError) and isinstance(refused.value, services.ReversalNotAllowed)
        assert str(refused.value).startswith("Indique")
        assert state_of(order, attempt, item) == before


@pytest.mark.parametrize("amount", ["200.01", "0.00", "-5.00", "10.005"])
def test_an_amount_above_what_is_reversible_is_refused(sim: Simulator, staff: Staff, amount: str) -> None:
    _order, attempt, _item = paid_order()
    with pytest.raises(services.ReversalNotAllowed):
        backoffice.staff_reverse(
            user=staff.finance, attempt_id=attempt.pk, amount=Decimal(amount), reason="x", restock=None
        )
    assert Reversal.objects.count() == 0 and StaffAction.objects.count() == 0


def test_a_double_request_returns_the_same_reversal_and_is_audited_once(sim: Simulator, staff: Staff) -> None:
    _order, attempt, _item = paid_order()
    with transaction.atomic():  # the second click arrives while the first reversal is still open (not yet sent)
        first = backoffice.staff_reverse(
            user=staff.finance, attempt_id=attempt.pk, amount=Decimal("50.00"), reason="desconto", restock=None
        )
        second = backoffice.staff_reverse(
            user=staff.finance, attempt_id=attempt.pk, amount=Decimal("50.00"), reason="desconto", restock=None
        )
        assert second.pk == first.pk and first.state == R.REQUESTED
    assert Reversal.objects.count() == 1
    assert StaffAction.objects.filter(action=Action.REVERSE).count() == 1
    wait_for(lambda: Reversal.objects.get(pk=first.pk).state == R.SUCCEEDED, what="sent once")
    assert len([t for t in sim.transactions() if t["kind"] == "reversal"]) == 1


def test_the_same_form_posted_after_its_reversal_finished_reverses_nothing_more(sim: Simulator, staff: Staff) -> None:
    """A double click on a fast reversal: the first one was sent and succeeded before the second arrived. The
    form's one-time key makes the second the same reversal: 50 MT go back once, not twice."""
    _order, attempt, _item = paid_order()
    ask: dict[str, Any] = {
        "user": staff.finance,
        "attempt_id": attempt.pk,
        "amount": Decimal("50.00"),
        "reason": "desconto",
    }
    first = backoffice.staff_reverse(**ask, restock=None, request_key="form-1")
    wait_for(lambda: Reversal.objects.get(pk=first.pk).state == R.SUCCEEDED, what="reversed")
    second = backoffice.staff_reverse(**ask, restock=None, request_key="form-1")
    assert second.pk == first.pk
    assert Reversal.objects.count() == 1 and StaffAction.objects.filter(action=Action.REVERSE).count() == 1
    assert len([t for t in sim.transactions() if t["kind"] == "reversal"]) == 1
    third = backoffice.staff_reverse(**ask, restock=None, request_key="form-2")  # a new form: a new reversal
    assert third.pk != first.pk


# --- reversals done in the M-Pesa portal ------------------------------------------------------------------------
def test_a_payment_without_transaction_id_is_reversed_in_the_portal_and_recorded(sim: Simulator, staff: Staff) -> None:
    order, attempt, item = paid_without_transaction_id(stock=3, quantity=2)
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    assert not selectors.can_reverse_by_api(attempt=attempt)
    with pytest.raises(services.ReversalNotAllowed, match="portal"):
        backoffice.staff_reverse(user=staff.finance, attempt_id=attempt.pk, amount=None, reason="x", restock=None)

    lookup = selectors.portal_lookup(attempt=attempt)
    assert lookup["TransactionReference"] == order.short_reference
    assert lookup["ThirdPartyReference"] == attempt.third_party_reference
    assert lookup["Montante"] == "200,00 MT"
    assert lookup["Número"] == "25884****008"
    assert attempt.msisdn not in str(lookup)

    part = backoffice.staff_record_portal_reversal(
        user=staff.finance,
        attempt_id=attempt.pk,
        portal_reference=" ab12 cd ",
        amount=Decimal("50.00"),
        reason="desconto combinado",
    )
    assert (part.reference, part.state, part.external, part.restock) == ("AB12CD", R.SUCCEEDED, True, False)
    assert part.sent_at is None and part.finished_at is not None
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.PAID, PS.PARTIALLY_REFUNDED)
    assert Product.objects.get(pk=item.pk).stock_on_hand == 1
    assert selectors.reversible_amount(attempt=attempt) == Decimal("150.00")

    # The same record again (a double click) changes nothing; the reference elsewhere, or a bad one, is refused.
    again = backoffice.staff_record_portal_reversal(
        user=staff.finance, attempt_id=attempt.pk, portal_reference="AB12CD", amount=Decimal("50.00"), reason="x"
    )
    assert again.pk == part.pk
    for reference, amount in (("AB12CD", "10.00"), ("!!", "10.00"), ("A" * 21, "10.00"), ("OK2", "150.01")):
        with pytest.raises(services.ReversalNotAllowed):
            backoffice.staff_record_portal_reversal(
                user=staff.finance,
                attempt_id=attempt.pk,
                portal_reference=reference,
                amount=Decimal(amount),
                reason="x",
            )
    assert Reversal.objects.count() == 1 and StaffAction.objects.count() == 1

    rest = backoffice.staff_record_portal_reversal(
        user=staff.finance, attempt_id=attempt.pk, portal_reference="PX9", amount=Decimal("150.00"), reason="resto"
    )
    assert rest.restock is True  # the rest of the paying payment: the goods come back by default
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.CANCELLED, PS.REFUNDED)
    assert Product.objects.get(pk=item.pk).stock_on_hand == 3
    assert set(order.reservations.values_list("state", flat=True)) == {StockReservation.State.RETURNED}
    assert order.payment_events.filter(kind=PaymentEvent.Kind.REVERSAL, payload__external=True).count() == 2
    assert order.payment_events.filter(payload__decision="restocked").count() == 1
    audits = list(StaffAction.objects.order_by("id"))
    assert [a.action for a in audits] == [Action.PORTAL_REVERSAL, Action.PORTAL_REVERSAL]
    assert audits[1].before["payment_status"] == PS.PARTIALLY_REFUNDED
    assert audits[1].after["payment_status"] == PS.REFUNDED and audits[1].after["status"] == OS.CANCELLED
    assert audits[1].after["msisdn"] == "25884****008"
    assert not [t for t in sim.transactions() if t["kind"] == "reversal"]  # nothing was sent to M-Pesa


# --- attention items --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stock_back", [False, True])
def test_force_confirm_keeps_a_late_payment(sim: Simulator, staff: Staff, stock_back: bool) -> None:
    order, attempt, item, flagged = late_payment_without_stock(sim)
    if stock_back:  # a delivery came in meanwhile
        Product.objects.filter(pk=item.pk).update(stock_on_hand=F("stock_on_hand") + 1)

    confirmed = backoffice.staff_force_confirm(user=staff.finance, item_id=flagged.pk, note="cliente quer esperar")

    assert confirmed.status == OS.PAID
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.PAID, PS.PAID)
    flagged.refresh_from_db()
    assert flagged.resolved_at is not None and flagged.resolved_by == staff.finance.email
    assert "cliente quer esperar" in flagged.resolution
    decision = order.payment_events.get(payload__decision="force_confirmed")
    assert ("sem stock: encomendar/repor" in decision.summary) is not stock_back
    assert ("sem stock: encomendar/repor" in order.attention_reason) is not stock_back
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0  # sold if it was there; never below zero
    reservation = order.reservations.get()
    assert (reservation.state == StockReservation.State.COMMITTED) is stock_back
    audit = StaffAction.objects.get()
    assert (audit.action, audit.attention, audit.attempt, audit.reason) == (
        Action.FORCE_CONFIRM,
        flagged,
        attempt,
        "cliente quer esperar",
    )
    assert audit.before["status"] == OS.NEEDS_ATTENTION and audit.after["status"] == OS.PAID
    assert audit.after["stock"] == ("reacquired" if stock_back else "out_of_stock")
    # Once is enough: the item is resolved, the order paid.
    with pytest.raises(services.PaymentError):
        backoffice.staff_force_confirm(user=staff.finance, item_id=flagged.pk, note="outra vez")
    assert StaffAction.objects.count() == 1


def test_force_confirm_refuses_an_order_that_does_not_need_attention(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = paid_order()
    item = raise_item(order, attempt)
    with pytest.raises(services.PaymentError):
        backoffice.staff_force_confirm(user=staff.finance, item_id=item.pk, note="manter")
    item.refresh_from_db()
    assert item.resolved_at is None and StaffAction.objects.count() == 0


def test_resolve_by_reversal_gives_a_late_payment_back(sim: Simulator, staff: Staff) -> None:
    order, attempt, item, flagged = late_payment_without_stock(sim)
    reversal = backoffice.staff_resolve_by_reversal(
        user=staff.finance, item_id=flagged.pk, amount=None, reason="sem stock", restock=None
    )
    wait_for(lambda: Reversal.objects.get(pk=reversal.pk).state == R.SUCCEEDED, what="reversed")
    order.refresh_from_db()
    assert (order.status, order.payment_status) == (OS.CANCELLED, PS.REFUNDED)
    assert Product.objects.get(pk=item.pk).stock_on_hand == 0  # the other customer's unit stays sold
    flagged.refresh_from_db()
    assert flagged.resolved_at is not None and reversal.reference in flagged.resolution
    audit = StaffAction.objects.get()
    assert (audit.action, audit.reversal, audit.attention, audit.attempt) == (
        Action.REVERSE,
        reversal,
        flagged,
        attempt,
    )
    assert audit.after["resolved"] is True
    with pytest.raises(services.PaymentError):
        backoffice.staff_resolve_by_reversal(
            user=staff.finance, item_id=flagged.pk, amount=None, reason="outra", restock=None
        )


def test_dismiss_closes_an_item_once(sim: Simulator, staff: Staff) -> None:
    order, attempt, _item = paid_order()
    item = raise_item(order, attempt)
    dismissed = backoffice.staff_dismiss(user=staff.finance, item_id=item.pk, note="cliente contactado")
    assert dismissed.resolved_at is not None
    assert (dismissed.resolved_by, dismissed.resolution) == (staff.finance.email, "cliente contactado")
    again = backoffice.staff_dismiss(user=staff.finance, item_id=item.pk, note="outra nota")
    assert (again.resolved_at, again.resolution) == (dismissed.resolved_at, "cliente contactado")
    audit = StaffAction.objects.get()
    assert (audit.action, audit.attention, audit.order) == (Action.DISMISS, item, order)
    assert (audit.before["resolved"], audit.after["resolved"]) == (False, True)
    order.refresh_from_db()
    assert order.status == OS.PAID  # nothing else changed


def test_the_audit_log_is_append_only(sim: Simulator, staff: Staff) -> None:
    order, _attempt, _item = paid_order()
    backoffice.staff_recheck(user=staff.support, order=order)
    audit = StaffAction.objects.get()
    audit.reason = "changed"
    with pytest.raises(RuntimeError):
        audit.save()
    with pytest.raises(RuntimeError):
        audit.delete()
    assert StaffAction.objects.get().reason == ""


# --- what staff read ----------------------------------------------------------------------------------------------
def test_the_timeline_tells_the_whole_story_in_order(sim: Simulator, staff: Staff) -> None:
    client = Client()
    item = product(price="100.00", stock=3)
    order = checkout(client, {item.pk: 2}, msisdn=PAYS)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == OS.PAID, what="paid")
    order.refresh_from_db()
    attempt = order.payment_attempts.get()
    backoffice.staff_recheck(user=staff.support, order=order)
    reversal = backoffice.staff_reverse(
        user=staff.finance, attempt_id=attempt.pk, amount=Decimal("50.00"), reason="desconto", restock=False
    )
    wait_for(lambda: Reversal.objects.get(pk=reversal.pk).state == R.SUCCEEDED, what="reversed")

    timeline = selectors.order_timeline(order=order)

    assert {e.kind for e in timeline} == {"attempt", "event", "reversal", "staff"}
    assert [e.at for e in timeline] == sorted(e.at for e in timeline)
    assert timeline[0].kind == "attempt"  # the attempt is created before its first event
    assert [e.kind for e in timeline].count("staff") == 2
    first = timeline[0]
    assert attempt.third_party_reference in first.title
    assert first.detail["Número"] == "25884****001"
    assert first.detail["ID da transacção M-Pesa"] == attempt.transaction_id
    assert first.detail["Resposta M-Pesa"].startswith("INS-0")
    assert first.detail["Montante"] == "200,00 MT"
    reversal_entry = next(e for e in timeline if e.kind == "reversal")
    assert reversal.reference in reversal_entry.title
    assert reversal_entry.detail["Montante"] == "50,00 MT"
    assert reversal_entry.detail["Motivo"] == "desconto"
    assert reversal_entry.detail["Por"] == staff.finance.email
    staff_entries = [e for e in timeline if e.kind == "staff"]
    assert staff.support.email in staff_entries[0].title and staff.finance.email in staff_entries[1].title
    assert staff_entries[1].detail["Motivo"] == "desconto"
    assert "estado da encomenda: paga" in staff_entries[1].detail["Antes"]
    kinds = {e.title for e in timeline if e.kind == "event"}
    assert {"Pedido", "Resposta", "Decisão", "Reversão"} <= kinds

    everything = " ".join(f"{e.title} {e.detail}" for e in timeline)
    assert order.msisdn not in everything and PAYS not in everything
    assert order.session_key and order.session_key not in everything
    assert order.checkout_token and order.checkout_token not in everything
    assert order.public_id not in everything
    for entry in timeline:
        assert isinstance(entry.title, str) and entry.title
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in entry.detail.items())


def test_today_in_figures(sim: Simulator, staff: Staff) -> None:
    first, first_attempt, _ = paid_order(quantity=2)  # 200.00
    paid_order(quantity=1)  # 100.00
    place({product(stock=2).pk: 1}, push=False)  # queued: in flight
    unknown_payment()  # the answer lost: unknown
    raise_item(first, first_attempt)
    reversal = backoffice.staff_reverse(
        user=staff.finance, attempt_id=first_attempt.pk, amount=Decimal("20.00"), reason="desconto", restock=None
    )
    wait_for(lambda: Reversal.objects.get(pk=reversal.pk).state == R.SUCCEEDED, what="reversed")

    today = selectors.today_summary()
    assert today.day == timezone.localtime(timezone.now(), MAPUTO).date()
    assert (today.paid_total, today.paid_count) == (Decimal("300.00"), 2)
    assert (today.pending, today.unknown, today.needs_attention) == (1, 1, 1)
    assert today.reversed_total == Decimal("20.00")

    # The day is Maputo's: a payment at 23:59 Maputo yesterday (21:59 UTC) is yesterday's.
    midnight = datetime.combine(today.day, datetime.min.time(), tzinfo=MAPUTO)
    PaymentAttempt.objects.filter(pk=first_attempt.pk).update(finished_at=midnight - timedelta(minutes=1))
    assert selectors.today_summary().paid_total == Decimal("100.00")
    yesterday = selectors.today_summary(now=midnight - timedelta(hours=1))
    assert (yesterday.paid_total, yesterday.paid_count, yesterday.unknown) == (Decimal("200.00"), 1, 0)
    tomorrow = selectors.today_summary(now=midnight + timedelta(days=1, hours=1))
    assert (tomorrow.paid_count, tomorrow.reversed_total) == (0, Decimal("0.00"))
    assert tomorrow.needs_attention == 1  # open items are open whatever the day


def test_the_export_for_a_range_matches_the_statement(sim: Simulator, staff: Staff) -> None:
    order_a, attempt_a, _ = paid_order(quantity=2)  # 200.00
    order_b, attempt_b, _ = paid_order(quantity=1)  # 100.00
    reversal = backoffice.staff_reverse(
        user=staff.finance, attempt_id=attempt_a.pk, amount=Decimal("50.00"), reason="desconto", restock=None
    )
    wait_for(lambda: Reversal.objects.get(pk=reversal.pk).state == R.SUCCEEDED, what="reversed")
    reversal.refresh_from_db()
    # B was paid at 00:30 Maputo on 2 March 2020 (22:30 UTC on 1 March).
    PaymentAttempt.objects.filter(pk=attempt_b.pk).update(finished_at=datetime(2020, 3, 1, 22, 30, tzinfo=UTC))
    today = timezone.localtime(timezone.now(), MAPUTO).date()

    rows = list(selectors.payments_export_rows(since=today, until=today))

    assert all(tuple(row) == EXPORT_COLUMNS for row in rows)
    assert [r["third_party_reference"] for r in rows] == [attempt_a.third_party_reference, reversal.reference]
    payment, back = rows
    assert payment == {
        "encomenda": order_a.short_reference,
        "third_party_reference": attempt_a.third_party_reference,
        "transacao_mpesa": attempt_a.transaction_id,
        "montante": "200.00",
        "revertido": "50.00",
        "estado": "devolvido em parte",
        "pago_em": timezone.localtime(attempt_a.finished_at, MAPUTO).strftime("%Y-%m-%d %H:%M:%S"),
        "revertido_em": timezone.localtime(reversal.finished_at, MAPUTO).strftime("%Y-%m-%d %H:%M:%S"),
        "numero": "25884****001",
    }
    assert back["montante"] == "-50.00" and back["revertido"] == "50.00" and back["estado"] == "reversão"
    assert back["transacao_mpesa"] == reversal.transaction_id and back["encomenda"] == order_a.short_reference

    (only_b,) = selectors.payments_export_rows(since=date(2020, 3, 2), until=date(2020, 3, 2))
    assert (only_b["encomenda"], only_b["montante"], only_b["revertido"]) == (order_b.short_reference, "100.00", "0.00")
    assert (only_b["pago_em"], only_b["revertido_em"], only_b["estado"]) == ("2020-03-02 00:30:00", "", "pago")
    assert list(selectors.payments_export_rows(since=date(2020, 2, 1), until=date(2020, 3, 1))) == []
    assert len(list(selectors.payments_export_rows(since=date(2020, 3, 1), until=today))) == 3

    backoffice.staff_export_logged(user=staff.finance, since=date(2020, 3, 1), until=today, rows=3)
    audit = StaffAction.objects.get(action=Action.EXPORT)
    assert audit.after == {"since": "2020-03-01", "until": today.isoformat(), "rows": 3}
    assert audit.actor == staff.finance and audit.order is None
