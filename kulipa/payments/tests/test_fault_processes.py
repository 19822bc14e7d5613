"""Fault injection with real processes (issue 9, with ``test_fault_injection.py``): the worker killed with SIGKILL
while it holds 100 pushes, and the database restarted under a running worker. Each ends on the shared invariants
(``invariants.check_invariants``): nothing lost, no order paid without a confirmed payment, no one charged twice,
stock consistent.

The repair is the shop's own: the minute sweep's body (``tasks.sweep``) is run by the test at the moment the
shop's clock says it is due (the dead worker's safety check, moved into the past rather than waited for), with the
gateway work it queues going to the real consumer through the real queue (``queued_into``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from kulipa.orders.models import Order
from kulipa.payments import tasks
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tests.conftest import Simulator, place, product, wait_for
from kulipa.payments.tests.invariants import check_invariants
from kulipa.payments.tests.workers import (
    MANAGE,
    PROJECT_DIR,
    Queue,
    c2b_requests,
    child_env,
    consumers,
    storage_kinds,
)

pytestmark = pytest.mark.faults

State = PaymentAttempt.State
STARTED = "Huey consumer started"
PENDING = 100
PROMPT_WINDOW = 15.0
"""Seconds a ``00`` prompt stays on the simulator's phone (then it expires)."""
SHOP_WINDOW = "25"
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


# --- PostgreSQL restarted during a run ---------------------------------------------------------------------------
def pg_tool(name: str) -> str | None:
    """A PostgreSQL server tool: on PATH, else in Debian's versioned directory (the postgresql package puts
    initdb and pg_ctl only in /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    candidates = [d / name for d in reversed(versions) if (d / name).is_file()]
    return str(candidates[0]) if candidates else None


class Cluster:
    """A throwaway PostgreSQL cluster of this test alone (``initdb`` + ``pg_ctl``), never the machine's own. As root,
    the server runs as the ``postgres`` user (initdb refuses root) with a data directory that user owns."""

    def __init__(self, tools: dict[str, str]) -> None:
        self.tools = tools
        self.dir = Path(tempfile.mkdtemp(prefix="kulipa-faults-pg-"))
        self.data = self.dir / "data"
        with socket.socket() as probe:  # bind-to-0: a port free right now
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, user="postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/kulipa_faults_restart"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1"
        self._run(
            self.tools["pg_ctl"],
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            *extra,
            action,
            "-o",
            options,
        )

    def start(self) -> None:
        self._run(self.tools["initdb"], "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._ctl("start")
        self._run(
            self.tools["createdb"], "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "kulipa_faults_restart"
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is terminated, open transactions rolled back."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_user, self.tools["pg_ctl"], "-D", str(self.data), "-m", "immediate", "stop"], timeout=60
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = {tool: pg_tool(tool) for tool in ("initdb", "pg_ctl", "createdb")}
    tools = {tool: path for tool, path in found.items() if path}
    if len(tools) < len(found):
        if os.environ.get("KULIPA_REQUIRE_PG_CTL") == "1":
            pytest.fail("initdb/pg_ctl/createdb not found, and KULIPA_REQUIRE_PG_CTL=1")
        pytest.skip("initdb/pg_ctl not installed: no private PostgreSQL cluster to restart")
    running = Cluster(tools)
    try:
        running.start()
        yield running
    finally:
        running.stop()


# A child on the cluster: places orders (numbers from argv), each a checkout and a queued dispatch, and keeps
# going through the restart (a checkout the database refuses is a customer's error page, not a crash); prints
# the ids it placed. `setup` creates the product first.
PLACER = """
import json, sys, time
import django

django.setup()
from django.db import DatabaseError, close_old_connections
from kulipa.catalog.models import Product
from kulipa.payments.tests.conftest import place

command, product_id, progress, numbers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if command == "setup":
    product = Product.objects.create(name="Capulana", slug="capulana", price="125.50", stock_on_hand=int(product_id),
                                     is_active=True)
    print(json.dumps({"product": product.pk}))
    sys.exit(0)
placed, refused = [], 0
for msisdn in numbers:
    try:
        order, _attempt = place({int(product_id): 1}, msisdn=msisdn)
        placed.append(order.pk)
    except DatabaseError:
        refused += 1
        close_old_connections()
        time.sleep(0.5)  # the customer waits a little before the next try (a restart takes about a second)
    with open(progress, "a") as out:
        out.write(".")
    time.sleep(0.05)
print(json.dumps({"placed": placed, "refused": refused}))
"""

# A child on the cluster: the minute sweep's body once a second (its gateway work queued to the worker) until no
# attempt is in flight, then the invariants, read through its own connection. Prints what the checker saw.
CHECKER = """
import json, sys, time
import django
import httpx

django.setup()
from kulipa.orders.models import Order
from kulipa.payments import tasks
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tests.invariants import check_invariants

control, product_id, initial, received = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
order_ids = sorted(Order.objects.values_list("id", flat=True))  # every order in the database, whoever placed it
deadline = time.monotonic() + 60
while PaymentAttempt.objects.filter(state__in=PaymentAttempt.IN_FLIGHT).exists() and time.monotonic() < deadline:
    tasks.sweep()
    time.sleep(1)
transactions = httpx.get(control + "/transactions").json()["transactions"]
tally = check_invariants(transactions=transactions, order_ids=order_ids, initial_stock={product_id: initial},
                         c2b_received=received)
unpaid = {o.msisdn: [o.status, *o.payment_attempts.values_list("state", flat=True)]
          for o in Order.objects.exclude(status__in=["paid", "needs_attention"])}
print(json.dumps({"orders": order_ids, "states": tally.states(), "paid": tally.paid_orders,
                  "stock": tally.stock[product_id], "unpaid": unpaid}))
"""


def run_child(script: str, *args: str, env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, cwd=PROJECT_DIR, capture_output=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def test_postgresql_restarted_mid_run_loses_nothing_and_charges_no_one_twice(
    cluster: Cluster, sim: Simulator, tmp_path: Path
) -> None:
    """A worker on a private PostgreSQL cluster holds ten pushes waiting on phones, and checkouts keep arriving,
    when the server is restarted (``pg_ctl restart -m fast``: every connection dropped). Then the customers answer.
    The worker records the answers on fresh connections (or the sweep's status queries do), checkouts refused
    while the server was down left nothing behind, and the invariants hold, read through a new connection."""
    sim.configure(push_window=PROMPT_WINDOW)
    queue = Queue.create(storage_kinds()[-1], tmp_path)
    env = child_env(
        sandbox=sim.sandbox,
        queue=queue,
        DATABASE_URL=cluster.url,
        MPESA_PUSH_WINDOW_SECONDS=SHOP_WINDOW,
        KULIPA_LIMIT_PROMPTS_PER_PHONE="",
        KULIPA_LIMIT_CHECKOUTS_PER_IP="",
    )
    migrate = subprocess.run(
        [sys.executable, str(MANAGE), "migrate", "--noinput"], env=env, cwd=PROJECT_DIR, capture_output=True
    )
    assert migrate.returncode == 0, migrate.stderr.decode()[-3000:]
    stock = 40
    product_id = str(run_child(PLACER, "setup", str(stock), "-", env=env)["product"])
    waiting = [f"25884{n + 700:05d}00" for n in range(10)]  # wait for the customer on the phone
    paying = [f"25884{n + 800:05d}01" for n in range(20)]  # pay at once
    progress = tmp_path / "progress"
    try:
        with (
            c2b_requests() as received,
            consumers(1, env=env, tmp_path=tmp_path, workers=2, periodic=False) as (worker,),
        ):
            wait_for(lambda: STARTED in worker.output(), timeout=60, what="the consumer started")
            first = run_child(PLACER, "place", product_id, str(tmp_path / "first"), *waiting, env=env)
            wait_for(
                lambda: len(sim.transactions(status="Pending")) == len(waiting),
                timeout=30,
                what="ten prompts on the phones",
            )
            placer = subprocess.Popen(
                [sys.executable, "-c", PLACER, "place", product_id, str(progress), *paying],
                env=env,
                cwd=PROJECT_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            wait_for(lambda: progress.exists() and len(progress.read_text()) >= 5, what="checkouts arriving")
            cluster.restart()
            for n, msisdn in enumerate(waiting):
                (prompt,) = sim.prompts(msisdn)
                sim.answer(msisdn, prompt["conversation_id"], approve=n % 2 == 0)
            out, err = placer.communicate(timeout=120)
            assert placer.returncode == 0, err.decode()[-3000:]
            second: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
            order_ids = [*first["placed"], *second["placed"]]
            checked = run_child(
                CHECKER,
                sim.sandbox.control_url,
                product_id,
                str(stock),
                json.dumps(received.by_reference),
                env=env,
            )
            assert worker.alive(), worker.output()[-3000:]
    finally:
        queue.flush()
    assert "received fast shutdown request" in (cluster.dir / "server.log").read_text()
    # Every checkout the database accepted (some after the restart) was pushed once and settled as its customer
    # answered; the ones it refused left no order behind.
    assert checked["orders"] == order_ids
    assert len(second["placed"]) > 5
    assert len(order_ids) + second["refused"] == len(waiting) + len(paying)
    approved = len(waiting[::2])
    assert checked["paid"] == approved + len(second["placed"]), checked
    assert checked["stock"] == {
        "held": 0,
        "sold": checked["paid"],
        "available": stock - checked["paid"],
        "initial": stock,
    }
