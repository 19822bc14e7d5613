"""Fixtures of the back office tests: the real simulator of the payments tests (fixtures of another app's conftest
are not visible here, so they are re-exported), and staff users in the two roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone

from kulipa.accounts.models import User
from kulipa.backoffice.roles import FINANCE, SUPPORT, roles_ensure
from kulipa.catalog.models import Product
from kulipa.orders.models import Order
from kulipa.orders.tests.factories import age
from kulipa.payments.models import AttentionItem, PaymentAttempt
from kulipa.payments.tests.conftest import Simulator, place, product, reconcile_until, sandbox, sim, wait_for  # noqa: F401

State = PaymentAttempt.State


@dataclass(frozen=True)
class Staff:
    support: User
    finance: User
    nobody: User
    """Staff (can log in to the admin) but in no group: may do nothing."""


@pytest.fixture
def staff(transactional_db: None) -> Staff:
    """One user per role. The groups come from migration 0002; a transactional test's flush removes them, so they
    are put back the way ``ensure_demo_users`` does."""
    roles_ensure()

    def user(email: str, group: str | None) -> User:
        made = User.objects.create_user(email, "x-password-1", is_staff=True)
        if group:
            made.groups.add(Group.objects.get(name=group))
        return User.objects.get(pk=made.pk)  # fresh: no permission cache

    return Staff(
        support=user("suporte@test.kulipa", SUPPORT),
        finance=user("financeiro@test.kulipa", FINANCE),
        nobody=user("ninguem@test.kulipa", None),
    )


# --- payments in the states staff deal with, through the real simulator -----------------------------------------
PAYS = "258840000001"
"""The simulator pays at once (sync answer with a transaction id)."""
DROPPED = "258840000008"
"""The simulator pays, but the answer is lost: the shop learns it by status query, without a transaction id."""
PHONE = "258840000000"
"""Waits on the simulator's phone page for approve/decline."""


def paid_order(*, stock: int = 3, quantity: int = 2, price: str = "100.00") -> tuple[Order, PaymentAttempt, Product]:
    """An order of ``quantity`` × ``price`` paid at once, with its M-Pesa transaction id."""
    item = product(price=price, stock=stock)
    order, attempt = place({item.pk: quantity}, msisdn=PAYS)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt.refresh_from_db()
    order.refresh_from_db()
    assert attempt.transaction_id
    return order, attempt, item


def unknown_payment(*, stock: int = 3, quantity: int = 2) -> tuple[Order, PaymentAttempt, Product]:
    """A payment the simulator made but whose answer was lost: UNKNOWN until the shop asks."""
    item = product(price="100.00", stock=stock)
    # The shop's own status query would follow 0.05 s later (the tests' backoff); on a busy machine huey's immediate
    # mode would run it at once and settle the payment before the test asks. Put it an hour away instead.
    later = {**settings.MPESA, "RECONCILE_BACKOFF_SECONDS": 3600, "RECONCILE_BACKOFF_MAX_SECONDS": 3600}
    with override_settings(MPESA=later):
        order, attempt = place({item.pk: quantity}, msisdn=DROPPED)
        wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.UNKNOWN, what="unknown")
    return order, PaymentAttempt.objects.get(pk=attempt.pk), item


def paid_without_transaction_id(*, stock: int = 3, quantity: int = 2) -> tuple[Order, PaymentAttempt, Product]:
    """Paid, confirmed by status query (which carries no transaction id): only the M-Pesa portal can reverse it."""
    order, attempt, item = unknown_payment(stock=stock, quantity=quantity)
    reconcile_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="reconciled to paid")
    attempt.refresh_from_db()
    order.refresh_from_db()
    assert attempt.state == State.SUCCEEDED and attempt.transaction_id == ""
    return order, attempt, item


def late_payment_without_stock(simulator: Simulator) -> tuple[Order, PaymentAttempt, Product, AttentionItem]:
    """The customer approves a prompt after the shop gave up on it and another customer bought the last unit: the
    money is real (with its transaction id), the order NEEDS_ATTENTION, an item proposes a reversal."""
    simulator.configure(push_window=30)
    item = product(price="100.00", stock=1)
    order, attempt = place({item.pk: 1}, msisdn=PHONE)
    prompt = wait_for(lambda: simulator.prompts(PHONE), what="prompt")[0]
    PaymentAttempt.objects.filter(pk=attempt.pk).update(next_check_at=timezone.now() - timedelta(seconds=1))
    reconcile_until(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.UNCONFIRMED, what="given up")
    age(order)  # its hold lapsed
    other, _ = place({item.pk: 1}, msisdn=PAYS)
    wait_for(lambda: Order.objects.get(pk=other.pk).status == Order.Status.PAID, what="the other customer paid")
    simulator.answer(PHONE, prompt["conversation_id"], approve=True)
    wait_for(lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.SUCCEEDED, what="late success")
    order.refresh_from_db()
    attempt.refresh_from_db()
    assert order.status == Order.Status.NEEDS_ATTENTION and attempt.transaction_id
    flagged = AttentionItem.objects.get(order=order, kind=AttentionItem.Kind.LATE_PAYMENT)
    return order, attempt, item, flagged
