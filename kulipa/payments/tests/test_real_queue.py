"""The checkout with the real queue engine: huey's configured storage (SQLite file by default, Redis when
REDIS_URL is set, as in CI's PostgreSQL run) and a real consumer, not immediate mode.

Shows what the architecture promises: the web request only writes rows and queues work; the push happens in
the worker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from huey.consumer import Consumer
from huey.contrib.djhuey import HUEY

from kulipa.payments.tasks import engine as get_engine
from kulipa.payments.tests.conftest import Simulator, checkout, product, wait_status


@pytest.fixture
def queued(sim: Simulator) -> Iterator[None]:
    """Like production: tasks go to the storage and wait there until a consumer takes them."""
    HUEY.immediate = False
    expected = "Redis" if settings.REDIS_URL else "Sqlite"
    assert expected in type(HUEY.storage).__name__, type(HUEY.storage)
    HUEY.flush()
    yield
    HUEY.flush()


def start_consumer() -> Consumer:
    # Not Consumer.start(): that installs signal handlers in the test process.
    consumer = HUEY.create_consumer(workers=2, worker_type="thread", periodic=False, initial_delay=0.05)
    consumer.scheduler.start()
    for _, worker in consumer.worker_threads:
        worker.start()
    return consumer


def test_checkout_only_queues_and_the_worker_pushes(queued: None, sim: Simulator) -> None:
    client = Client()
    order = checkout(client, {product(stock=2).pk: 1}, msisdn="258840000001")

    # The request has returned: the push is a task in the queue, and nothing has reached M-Pesa yet.
    assert HUEY.pending_count() == 1
    assert sim.transactions() == []
    assert wait_status(client, order, payment_status="pending")["paid"] is False

    consumer = start_consumer()
    try:
        data = wait_status(client, order, status="paid", timeout=20)
    finally:
        consumer.stop(graceful=True)
        get_engine().wait_idle(10)
    assert data["paid"] is True
    assert HUEY.pending_count() == 0
    assert [t["status"] for t in sim.transactions()] == ["Completed"]
    # Nobody reads a task's return value: none is stored, so the queue's storage does not grow with every payment.
    assert HUEY.result_count() == 0
