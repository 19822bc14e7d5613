"""Fault injection (issue 9): lost and garbled answers from M-Pesa, callbacks late, the gateway unreachable while
checkouts arrive. Each test ends on the same invariants (``invariants.check_invariants``): nothing lost, no order
paid without a confirmed payment, no one charged twice, stock consistent. Real simulator over real sockets; the
faults are the simulator's own (``/sandbox/faults``, mpesa/sandbox/README.md § Response faults).

The worker killed mid-push and PostgreSQL restarted mid-run are in ``test_fault_processes.py`` (real processes).
Already proven elsewhere, and not repeated here:

* callbacks delivered several times — ``test_callbacks.py::test_callback_pays_once_even_when_delivered_three_times``
  and ``::test_concurrent_callbacks_racing_the_worker_change_nothing_twice``;
* callbacks never delivered — ``test_callbacks.py::test_lost_callback_is_reconciled_after_the_push_window`` and
  ``test_late_and_unsent.py::test_late_approval_with_the_callback_lost_is_found_by_the_tail_requery``;
* one push to an unreachable gateway, refused honestly and paid on "try again" —
  ``test_late_and_unsent.py::test_push_that_never_reached_the_gateway_is_not_sent_and_retryable_at_once``;
* the gateway answering INS-16 (scenario 07) — ``test_late_and_unsent.py::test_busy_gateway_is_decided_…``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from kulipa.orders.models import Order
from kulipa.payments import services, tasks
from kulipa.payments.models import CallbackDelivery, PaymentAttempt
from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import (
    Simulator,
    place,
    product,
    reconcile_until,
    shop_mpesa_settings,
    wait_for,
)
from kulipa.payments.tests.invariants import Tally, check_invariants
from kulipa.payments.tests.workers import c2b_requests
from mpesa.config import Ports
from mpesa.sandbox import ThreadedSandbox
from mpesa.sandbox.settings import all_ports
from mpesa.sandbox.testing import find_free_port_offset

pytestmark = pytest.mark.faults

State = PaymentAttempt.State
# fault → whether the simulator processed the push (the customer was charged) before the answer went wrong
PROCESSED = {"drop_before": False, "drop_after": True, "status_503": False, "malformed": True, "empty": True}


def settled(order_ids: list[int]) -> bool:
    return not PaymentAttempt.objects.filter(order_id__in=order_ids, state__in=PaymentAttempt.IN_FLIGHT).exists()


def check(sim: Simulator, orders: list[Order], stock: dict[int, int], **kwargs: Any) -> Tally:
    return check_invariants(
        transactions=sim.transactions(), order_ids=[o.pk for o in orders], initial_stock=stock, **kwargs
    )


# --- the push's answer lost or garbled ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault", PROCESSED)
def test_a_lost_or_garbled_push_answer_is_settled_by_status_query_and_never_sent_again(
    fault: str, sim: Simulator
) -> None:
    """Two checkouts (one that pays, one with insufficient funds) whose push answers are spoiled. The shop may not
    read "no answer" as "not charged": each attempt waits, checked, until the status query tells it the truth.
    When nothing was processed the customer can try again, and pays once."""
    item = product(stock=3)
    sim.faults(c2b_fault=fault, c2b_fault_count=2)
    with c2b_requests() as received:
        paying, a = place({item.pk: 1}, msisdn="258840010001")
        poor, b = place({item.pk: 1}, msisdn="258840010002")
        assert get_engine().wait_idle(20)
        orders = [paying, poor]
        # Answered wrongly: neither is taken for a "no" (which would release the stock of a paid order). A closed
        # attempt here can only be one a status query already settled (the checker holds it to the simulator).
        check(sim, orders, {item.pk: 3}, c2b_received=received.by_reference, settled=False)
        if not PROCESSED[fault]:  # the query says N/A: waiting (or, once past the window, unconfirmed), never a "no"
            assert {PaymentAttempt.objects.get(pk=x.pk).state for x in (a, b)} <= {State.UNKNOWN, State.UNCONFIRMED}

        reconcile_until(lambda: settled([paying.pk, poor.pk]), what="both settled by status query")
        tally = check(sim, orders, {item.pk: 3}, c2b_received=received.by_reference)
        assert (a.third_party_reference in tally.completed) is PROCESSED[fault]
        assert b.third_party_reference not in tally.completed

        if not PROCESSED[fault]:  # nothing charged: "try again" pushes anew, and pays
            retried, created = services.payment_attempt_start(order=paying, after_attempt_id=a.pk)
            assert created
            tasks.dispatch_payment(retried.pk)
            reconcile_until(lambda: settled([paying.pk]), what="the new attempt settled")
            tally = check(sim, orders, {item.pk: 3}, c2b_received=received.by_reference)
    paying.refresh_from_db()
    assert paying.status == Order.Status.PAID
    assert tally.paid_orders == 1 and tally.stock[item.pk]["sold"] == 1


@pytest.mark.parametrize("fault", ["drop_before", "status_503", "malformed", "empty"])
def test_garbled_status_queries_are_asked_again_and_never_decide(fault: str, sim: Simulator) -> None:
    """The push's answer is dropped after the customer paid, and the first status queries come back garbled,
    dropped or 503: none of them is read as an answer; the shop keeps asking and pays the order once."""
    item = product(stock=1)
    sim.faults(c2b_fault="drop_after", c2b_fault_count=1, query_fault=fault, query_fault_count=3)
    with c2b_requests() as received:
        order, attempt = place({item.pk: 1}, msisdn="258840010101")
        reconcile_until(lambda: settled([order.pk]), what="settled by status query")
        tally = check(sim, [order], {item.pk: 1}, c2b_received=received.by_reference)
    assert tally.attempts == {attempt.third_party_reference: State.SUCCEEDED}
    assert sim.faults()["query_fault_count"] == 0  # every spoiled answer was given, and the shop asked past them


# --- the database going away right after the claim ---------------------------------------------------------------
def test_the_database_gone_right_after_a_push_is_claimed_does_not_strand_it(sim: Simulator) -> None:
    """The worker's claim (QUEUED → PUSHING) commits, then every query on its connection fails, as when PostgreSQL
    restarts at that instant (found by ``test_fault_processes.py::test_postgresql_restarted_…``: the claim's log
    line queried the attempt again, the task failed, and the attempt stayed claimed and never sent, closed
    unconfirmed at deadline + margin). Nothing the push needs is read after the claim: it is sent, and paid."""
    item = product(stock=1)
    order, attempt = place({item.pk: 1}, msisdn="258840010401", push=False)
    gone = False

    def database_gone_after_claim(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal gone
        if gone:
            raise OperationalError("consuming input failed: server closed the connection unexpectedly")
        result = execute(sql, params, many, context)
        gone = sql.startswith("UPDATE") and "payments_paymentattempt" in sql and State.PUSHING in params
        return result

    with c2b_requests() as received:
        with connection.execute_wrapper(database_gone_after_claim):
            tasks.dispatch_payment(attempt.pk)
        assert gone  # the claim went through, and the database went away after it
        wait_for(lambda: settled([order.pk]), what="the push answered and recorded")
        tally = check(sim, [order], {item.pk: 1}, c2b_received=received.by_reference)
    assert tally.attempts == {attempt.third_party_reference: State.SUCCEEDED}


# --- callbacks late --------------------------------------------------------------------------------------------
CALLBACK = "/api/mpesa/callback"
TOKEN = "faultT0ken9"


def test_callbacks_arriving_after_the_attempt_was_settled_change_nothing(
    sim: Simulator, settings: Any, live_server: Any
) -> None:
    """Async mode; every callback is held 6 s, long past the push window (2 s) + margin (1 s): the shop settles
    each attempt by status query first. The late callbacks (success, insufficient funds, and a copy of each)
    are then received, confirmed by a query and change nothing."""
    settings.MPESA = shop_mpesa_settings(sim.sandbox, MODE="async", CALLBACK_PATH_TOKEN=TOKEN)
    sim.configure(callback_url=f"{live_server.url}{CALLBACK}/{TOKEN}", allow_insecure_callbacks=True)
    sim.faults(delay_callbacks=6.0, duplicate_callbacks=2)
    item = product(stock=2)
    with c2b_requests() as received:
        orders = [place({item.pk: 1}, msisdn=f"258840010{n}0{s}")[0] for n, s in ((2, 1), (3, 2))]
        ids = [o.pk for o in orders]
        reconcile_until(lambda: settled(ids), what="settled before any callback")
        assert not CallbackDelivery.objects.exists()
        before = check(sim, orders, {item.pk: 2}, c2b_received=received.by_reference)

        wait_for(lambda: CallbackDelivery.objects.count() == 4, timeout=20, what="the four late callbacks")
        wait_for(
            lambda: not CallbackDelivery.objects.exclude(processed_at__isnull=False).exists(),
            what="the late callbacks processed",
        )
        assert get_engine().wait_idle(10)
        after = check(sim, orders, {item.pk: 2}, c2b_received=received.by_reference)
    assert after.attempts == before.attempts and after.stock == before.stock
    # The query cannot tell why a payment was cancelled: FAILED, and the late INS-2006 callback does not reopen it.
    assert after.states() == {State.SUCCEEDED: 1, State.FAILED: 1}, after.states()
    assert after.paid_orders == 1


# --- the gateway unreachable, then back ------------------------------------------------------------------------
class Outage:
    """A TCP relay standing for the network between the shop and M-Pesa: the shop talks to the relay's six ports
    (``offset``), the relay to the simulator's. ``down()`` stops listening (connections refused) and cuts every
    open connection; ``up()`` listens again. The simulator itself keeps running and keeps its ledger, as the real
    gateway does while the shop cannot reach it."""

    def __init__(self, sandbox: ThreadedSandbox) -> None:
        self.offset = find_free_port_offset()
        self.routes = dict(
            zip(all_ports(Ports().shifted(self.offset)), all_ports(Ports().shifted(sandbox.port_offset)), strict=True)
        )
        self._listeners: list[socket.socket] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        for port, target in self.routes.items():
            listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, target), daemon=True).start()

    def down(self) -> None:
        for listener in self._listeners:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(); close() alone would not
            listener.close()
        self._listeners.clear()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket, target: int) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # closed: down
            upstream = socket.create_connection(("127.0.0.1", target))
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def outage(sim: Simulator, settings: Any) -> Iterator[Outage]:
    """The shop pointed at the relay, which is up."""
    relay = Outage(sim.sandbox)
    relay.up()
    settings.MPESA = shop_mpesa_settings(sim.sandbox, PORT_OFFSET=relay.offset)
    try:
        yield relay
    finally:
        relay.down()


def test_the_gateway_unreachable_while_checkouts_arrive_charges_no_one_and_everything_resolves_once_back(
    sim: Simulator, outage: Outage
) -> None:
    """Two pushes wait on the customers' phones when the network to M-Pesa goes down (their connections cut);
    both customers answer anyway, one approving. Three checkouts arrive during the outage: each push is refused
    at once as not sent — nothing charged, the stock still held for "try again". The sweep runs throughout: the
    cut pushes are never taken for a "no", and their status queries fail without deciding anything. Back up: the
    status queries find the approved payment, the three customers try again and pay, each once."""
    item = product(stock=6)
    stock = {item.pk: 6}
    with c2b_requests() as received:
        waiting = [place({item.pk: 1}, msisdn=f"25884002{n}000") for n in range(2)]
        numbers = [a.msisdn for _o, a in waiting]
        wait_for(lambda: all(sim.prompts(number) for number in numbers), what="both prompts on the phones")

        outage.down()
        for n, (_order, attempt) in enumerate(waiting):
            (prompt,) = sim.prompts(attempt.msisdn)
            sim.answer(attempt.msisdn, prompt["conversation_id"], approve=n == 0)
        assert get_engine().wait_idle(20)
        cut = [PaymentAttempt.objects.get(pk=a.pk) for _o, a in waiting]
        assert {a.state for a in cut} == {State.UNKNOWN}  # the answer was lost: unknown, never "declined"

        refused = [place({item.pk: 1}, msisdn=f"25884003{n}001") for n in range(3)]
        assert get_engine().wait_idle(20)
        assert {PaymentAttempt.objects.get(pk=a.pk).state for _o, a in refused} == {State.NOT_SENT}
        orders = [o for o, _a in waiting + refused]
        for _ in range(3):  # the sweep during the outage: queries fail, nothing is decided wrongly, nothing lost
            tasks.sweep()
            check(sim, orders, stock, c2b_received=received.by_reference, settled=False)
        assert [t["third_party_reference"] for t in sim.transactions()] == [a.third_party_reference for a in cut]

        outage.up()
        for order, attempt in refused:
            retried, created = services.payment_attempt_start(order=order, after_attempt_id=attempt.pk)
            assert created
            tasks.dispatch_payment(retried.pk)
        # Time passes for the cut pushes: their next checks (and, if closed meanwhile, the tail re-query) come due.
        ids = [o.pk for o in orders]

        def resolved() -> bool:
            PaymentAttempt.objects.filter(order_id__in=ids, next_check_at__isnull=False).update(
                next_check_at=timezone.now() - timedelta(seconds=1)
            )
            approved = PaymentAttempt.objects.get(pk=cut[0].pk)
            return settled(ids) and approved.state == State.SUCCEEDED

        reconcile_until(resolved, what="every attempt resolved once M-Pesa is back")
        tally = check(sim, orders, stock, c2b_received=received.by_reference)
    # The declined push never pays: closed as declined once M-Pesa answers, or, if the outage outlasted its
    # deadline, as unconfirmed (then on the tail schedule, which asks for 48 h: docs/payments.md § The tail).
    assert PaymentAttempt.objects.get(pk=cut[1].pk).state in (State.DECLINED, State.FAILED, State.UNCONFIRMED)
    assert tally.paid_orders == 4  # the approved cut push and the three retries
    assert tally.stock[item.pk]["sold"] == 4
