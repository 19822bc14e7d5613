"""Fault injection with real processes (issue 9, with ``test_fault_injection.py``): the worker killed with SIGKILL
while it holds 100 pushes, and the database restarted under a running worker. Each ends on the shared invariants
(``invariants.check_invariants``): nothing lost, no order paid without a confirmed payment, no one charged twice,
stock consistent.

The repair is the shop's own: the minute sweep's body (``tasks.sweep``) is run by the test at the moment the
shop's clock says it is due (the dead worker's safety check, moved into the past rather than waited for), with the
gateway work it queues going to the real consumer through the real queue (``queued_into``)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from kulipa.orders.models import Order
from kulipa.payments import tasks
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tests.conftest import Simulator, place, product, wait_for
from kulipa.payments.tests.invariants import check_invariants
from kulipa.payments.tests.workers import Queue, c2b_requests, child_env, consumers, storage_kinds

pytestmark = pytest.mark.faults

State = PaymentAttempt.State
STARTED = "Huey consumer started"
PENDING = 100
PROMPT_WINDOW = 10.0
"""Seconds a ``00`` prompt stays on the simulator's phone (then it expires)."""
SHOP_WINDOW = "20"
"""The workers' push window: longer than the prompt's, as in production (90 s against M-Pesa's ~60 s)."""


@contextmanager
def queued_into(queue: Queue) -> Iterator[None]:
    """Tasks queued by this (test) process go to ``queue``, for its consumers, instead of running inline."""
    was_immediate = HUEY.immediate
    HUEY.immediate = False
    storage = HUEY.storage
    HUEY.storage = queue.storage
    try:
        yield
    finally:
        HUEY.storage = storage
        HUEY.immediate = was_immediate


def in_flight(ids: list[int]) -> int:
    return PaymentAttempt.objects.filter(order_id__in=ids, state__in=PaymentAttempt.IN_FLIGHT).count()


@pytest.mark.parametrize("kind", storage_kinds()[-1:])
def test_worker_killed_holding_100_pushes_each_ends_as_the_customer_answered_and_none_is_pushed_twice(
    kind: str, sim: Simulator, tmp_path: Path
) -> None:
    """100 checkouts whose prompts wait on the customers' phones; the worker holding them is killed (SIGKILL: no
    cleanup, the push answers are never read). The customers answer anyway — a third approve, a third decline,
    the rest let the prompt expire. A new worker, given every dispatch message again, pushes none of them again;
    the sweep's status queries bring each to what the customer did."""
    sim.configure(push_window=PROMPT_WINDOW)
    queue = Queue.create(kind, tmp_path)
    env = child_env(sandbox=sim.sandbox, queue=queue, MPESA_PUSH_WINDOW_SECONDS=SHOP_WINDOW)
    item = product(stock=PENDING + 5)
    orders: list[Order] = []
    attempts: list[PaymentAttempt] = []
    try:
        with c2b_requests() as received:
            with consumers(1, env=env, tmp_path=tmp_path, workers=2, periodic=False) as (first,):
                wait_for(lambda: STARTED in first.output(), timeout=60, what="the first consumer started")
                for n in range(PENDING):
                    order, attempt = place({item.pk: 1}, msisdn=f"25884{n + 900:05d}00", push=False)
                    orders.append(order)
                    attempts.append(attempt)
                    queue.put(tasks.dispatch_payment.s(attempt.pk))
                wait_for(
                    lambda: len(sim.transactions(status="Pending")) == PENDING or not first.alive(),
                    timeout=90,
                    what="every prompt on a phone",
                )
                first.process.send_signal(signal.SIGKILL)
                first.process.wait(10)
            ids = [o.pk for o in orders]
            assert PaymentAttempt.objects.filter(order_id__in=ids, state=State.PUSHING).count() == PENDING
            check_invariants(
                transactions=sim.transactions(),
                order_ids=ids,
                initial_stock={item.pk: PENDING + 5},
                c2b_received=received.by_reference,
                settled=False,
            )

            # The customers answer while no worker listens.
            answers: dict[str, str] = {}
            for n, attempt in enumerate(attempts):
                if n % 3 == 2:
                    continue  # left to expire
                (prompt,) = sim.prompts(attempt.msisdn)
                sim.answer(attempt.msisdn, prompt["conversation_id"], approve=n % 3 == 0)
                answers[attempt.third_party_reference] = "Completed" if n % 3 == 0 else "Cancelled"
            wait_for(
                lambda: not sim.transactions(status="Pending"),
                timeout=PROMPT_WINDOW + 10,
                what="the unanswered prompts expired",
            )

            # A new worker. Every dispatch message comes again (as a queue re-delivers what a dead consumer held),
            # and the dead worker's safety checks come due: the sweep queues the status queries.
            (tmp_path / "second").mkdir()
            with consumers(1, env=env, tmp_path=tmp_path / "second", workers=2, periodic=False) as (second,):
                wait_for(lambda: STARTED in second.output(), timeout=60, what="the second consumer started")
                for attempt in attempts:
                    queue.put(tasks.dispatch_payment.s(attempt.pk))
                PaymentAttempt.objects.filter(pk__in=[a.pk for a in attempts]).update(
                    next_check_at=timezone.now() - timedelta(seconds=1)
                )
                with queued_into(queue):
                    assert tasks.sweep()["reconcile"] == PENDING
                wait_for(lambda: in_flight(ids) == 0 or not second.alive(), timeout=60, what="every attempt final")
                assert second.alive(), second.output()[-3000:]
                output = second.output()
    finally:
        queue.flush()

    tally = check_invariants(
        transactions=sim.transactions(),
        order_ids=ids,
        initial_stock={item.pk: PENDING + 5},
        c2b_received=received.by_reference,
    )
    assert sorted(received.by_reference) == sorted(a.third_party_reference for a in attempts)
    assert not received.refused
    assert output.count("not claimable any more") == PENDING  # every re-delivered dispatch refused
    truth = {t["third_party_reference"]: t["status"] for t in sim.transactions()}
    assert {ref: truth[ref] for ref in answers} == answers
    assert tally.paid_orders == len([s for s in answers.values() if s == "Completed"]) == 34
    assert tally.states()[State.SUCCEEDED] == 34
    assert tally.stock[item.pk]["sold"] == 34
