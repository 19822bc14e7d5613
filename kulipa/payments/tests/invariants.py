"""The invariants every fault-injection test ends on (``check_invariants``), read from the shop's database and the
simulator's own ledger (``GET /sandbox/transactions``), never from what the shop says about itself:

* **nothing lost** — every attempt is final, or (``settled=False``) in a state a repair owns: QUEUED (the sweep
  re-sends or closes it), sent and waiting with a check scheduled (``next_check_at``), or closed unconfirmed but
  still on the tail schedule (``decisions.TAILED``). Every other closed attempt is where the simulator says it is:
  SUCCEEDED exactly when its reference is Completed there (a customer charged for an attempt closed as not paid,
  with no repair left to find it, is a violation);
* **no order paid without a confirmed payment** — a paid order has a SUCCEEDED attempt paying it, and every
  SUCCEEDED attempt's reference is Completed at the simulator;
* **no one charged twice** — the simulator received each reference at most once as a C2B (from its log, when the
  test counted it) and holds each at most once; no order has two Completed C2B transactions;
* **stock consistent** — for each product, units held (live reservations) + sold (committed reservations) +
  available (on hand − held) == the initial stock, with none negative.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders.models import Order
from kulipa.payments.decisions import TAILED
from kulipa.payments.models import PaymentAttempt

State = PaymentAttempt.State
Res = StockReservation.State
PAID_ORDER = (Order.Status.PAID, Order.Status.NEEDS_ATTENTION)


@dataclass
class Tally:
    """What the check saw, for the test's own further assertions."""

    attempts: dict[str, str] = field(default_factory=dict)
    """ThirdPartyReference → the attempt's state."""
    completed: set[str] = field(default_factory=set)
    """References the simulator has as Completed C2B transactions."""
    paid_orders: int = 0
    stock: dict[int, dict[str, int]] = field(default_factory=dict)
    """Product id → held, sold, available, initial."""

    def states(self) -> Counter[str]:
        return Counter(self.attempts.values())


def check_invariants(
    *,
    transactions: Iterable[Mapping[str, Any]],
    order_ids: Iterable[int],
    initial_stock: Mapping[int, int],
    c2b_received: Mapping[str, int] | None = None,
    settled: bool = True,
    using: str = "default",
) -> Tally:
    """Assert the four invariants over ``order_ids`` (all their attempts) and the products of ``initial_stock``
    (id → units on hand before the test). ``transactions`` is the simulator's list; ``c2b_received`` its count of
    C2B requests by reference (``workers.c2b_requests``). Returns what it saw."""
    tally = Tally()
    c2b = [t for t in transactions if t["kind"] == "c2b"]
    held_by_simulator = Counter(t["third_party_reference"] for t in c2b)
    twice = {ref: n for ref, n in held_by_simulator.items() if n > 1}
    assert not twice, f"the simulator holds these references more than once: {twice}"
    if c2b_received is not None:
        resent = {ref: n for ref, n in c2b_received.items() if n > 1}
        assert not resent, f"pushed more than once: {resent}"
    status = {t["third_party_reference"]: t["status"] for t in c2b}
    tally.completed = {ref for ref, s in status.items() if s == "Completed"}

    ids = list(order_ids)
    orders = {o.pk: o for o in Order.objects.using(using).filter(pk__in=ids)}
    assert len(orders) == len(set(ids)), "an order is missing"
    attempts = list(PaymentAttempt.objects.using(using).filter(order_id__in=ids).order_by("id"))
    by_order: dict[int, list[PaymentAttempt]] = {}
    for attempt in attempts:
        by_order.setdefault(attempt.order_id, []).append(attempt)
        ref = attempt.third_party_reference
        tally.attempts[ref] = attempt.state
        # Nothing lost.
        if attempt.state in PaymentAttempt.IN_FLIGHT:
            assert not settled, f"{ref} still {attempt.state} after the repair ran"
            owned = attempt.state == State.QUEUED or attempt.next_check_at is not None
            assert owned, f"{ref} is {attempt.state} with no check scheduled: nothing would ever settle it"
        elif not settled and attempt.state in TAILED and attempt.next_check_at is not None:
            pass  # closed for the customer, still asked about on the tail schedule: the repair owns it
        else:
            truth = ref in tally.completed
            assert (attempt.state == State.SUCCEEDED) == truth, (
                f"{ref} is {attempt.state} but the simulator has it {status.get(ref, 'not at all')}"
            )
        # No order paid without a confirmed payment.
        if attempt.state == State.SUCCEEDED:
            assert ref in tally.completed, f"{ref} SUCCEEDED without a Completed payment at the simulator"
    for order_id, order in orders.items():
        mine = by_order.get(order_id, [])
        if order.status in PAID_ORDER or order.paid_at is not None:
            tally.paid_orders += 1
            payers = [a for a in mine if a.pays_order and a.state == State.SUCCEEDED]
            assert len(payers) == 1, f"order {order_id} is {order.status} with payers {payers}"
        # No one charged twice for one order.
        charged = [a.third_party_reference for a in mine if a.third_party_reference in tally.completed]
        assert len(charged) <= 1, f"order {order_id} was charged by {charged}"

    now = timezone.now()
    reservations = StockReservation.objects.using(using)
    for product_id, initial in initial_stock.items():
        on_hand = Product.objects.using(using).get(pk=product_id).stock_on_hand
        mine_r = reservations.filter(product_id=product_id)
        sold = mine_r.filter(state=Res.COMMITTED).aggregate(n=Sum("quantity"))["n"] or 0
        held = mine_r.filter(state=Res.ACTIVE, expires_at__gt=now).aggregate(n=Sum("quantity"))["n"] or 0
        available = on_hand - held
        tally.stock[product_id] = {"held": held, "sold": sold, "available": available, "initial": initial}
        assert available >= 0, f"product {product_id}: more held ({held}) than on hand ({on_hand})"
        assert held + sold + available == initial, f"product {product_id}: {tally.stock[product_id]}"
    for order_id, order in orders.items():
        committed = reservations.filter(order_id=order_id, state=Res.COMMITTED).exists()
        assert committed == (order.status in PAID_ORDER), f"order {order_id} is {order.status}, sold: {committed}"
    return tally
