"""Several workers at once, as production runs them: real ``manage.py run_huey`` processes sharing one queue (Redis,
or a SQLite file) and the test's database (SQLite or PostgreSQL), pushing to the real simulator.

* Every attempt is pushed exactly once, however many copies of its dispatch message the consumers race for (the
  claim is a conditional UPDATE, ``transitions.attempt_claim_push``).
* The minute sweep runs once per minute however many consumers enqueue it (``kulipa.scheduling.run_once``).
* A dispatch whose message was lost is sent again while still fresh, wherever it falls in the minute (the passes
  between sweeps, ``services.redispatch_pass_times``), and still only once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from kulipa.payments import services, tasks
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.tests.conftest import Simulator, place, product, wait_for
from kulipa.payments.tests.workers import (
    PROJECT_DIR,
    Queue,
    c2b_requests,
    child_env,
    consumers,
    storage_kinds,
)
from kulipa.scheduling.models import PeriodicRun
from kulipa.scheduling.services import period_start

State = PaymentAttempt.State
MINUTE = timedelta(minutes=1)
# The simulator's scenario (last two digits of the number) → where the attempt must end.
SCENARIOS = {"01": State.SUCCEEDED, "02": State.INSUFFICIENT_FUNDS, "03": State.DECLINED, "05": State.FAILED}
STARTED = "Huey consumer started"


def started(consumer_output: str) -> bool:
    return STARTED in consumer_output


def executions(output: str, task: str) -> int:
    return len(re.findall(rf"Executing kulipa\.payments\.tasks\.{task}\b", output))


# --- two consumers, many attempts, every message sent several times --------------------------------------------
@pytest.mark.parametrize("kind", storage_kinds())
def test_two_consumers_push_each_of_many_attempts_exactly_once(kind: str, sim: Simulator, tmp_path: Path) -> None:
    queue = Queue.create(kind, tmp_path)
    item = product(stock=500)
    copies = 3  # each dispatch message three times: lost-and-resent, the sweep's pass, a retry
    attempts: list[PaymentAttempt] = []
    env = child_env(sandbox=sim.sandbox, queue=queue)
    try:
        with c2b_requests() as requests, consumers(2, env=env, tmp_path=tmp_path) as workers:
            wait_for(lambda: all(started(w.output()) for w in workers), timeout=60, what="both consumers started")
            for n in range(60):
                suffix = list(SCENARIOS)[n % len(SCENARIOS)]
                # A number of its own per attempt: only one prompt may be in flight per number.
                _order, attempt = place({item.pk: 1}, msisdn=f"25884{n:05d}{suffix}", push=False)
                attempts.append(attempt)
                for _ in range(copies):
                    queue.put(tasks.dispatch_payment.s(attempt.pk))
            ids = [a.pk for a in attempts]
            wait_for(
                lambda: (
                    not PaymentAttempt.objects.filter(pk__in=ids, state__in=PaymentAttempt.IN_FLIGHT).exists()
                    or not all(w.alive() for w in workers)
                ),
                timeout=90,
                what="every attempt final",
            )
            assert all(w.alive() for w in workers), [w.output()[-2000:] for w in workers]
    finally:
        queue.flush()
    outputs = [w.output() for w in workers]

    # Each attempt ended as its scenario says: pushed, answered, recorded.
    for attempt in attempts:
        attempt.refresh_from_db()
        assert attempt.state == SCENARIOS[attempt.msisdn[-2:]], (attempt.third_party_reference, attempt.state)
    # The gateway saw each reference exactly once, and was never asked twice (no INS-10 "used before").
    references = {a.third_party_reference for a in attempts}
    assert dict(requests.by_reference) == dict.fromkeys(references, 1)
    assert not requests.refused
    assert sorted(t["third_party_reference"] for t in sim.transactions()) == sorted(references)
    # Both consumers took part, every message ran, and all but one per attempt lost the claim.
    ran = [executions(out, "dispatch_payment") for out in outputs]
    assert all(n > 0 for n in ran), ran
    refused = sum(len(re.findall(r"attempt \d+ not claimable any more", out)) for out in outputs)
    assert sum(ran) >= copies * len(attempts)
    assert sum(ran) - refused == len(attempts)


# --- the periodic body from two processes at once ---------------------------------------------------------------
RACER = """
import json, sys, time
from datetime import datetime
from pathlib import Path

import django

django.setup()
from kulipa.payments import tasks

ready, go, slots = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
ready.touch()
while not go.exists():
    time.sleep(0.005)
won = [tasks.periodic_sweep(slot=datetime.fromisoformat(slot)) is not None for slot in slots]
print(json.dumps(won))
"""


@pytest.mark.django_db(transaction=True)
def test_the_periodic_sweep_body_runs_once_per_slot_when_two_processes_call_it_together(tmp_path: Path) -> None:
    slots = [(datetime(2026, 3, 1, 10, 0, tzinfo=UTC) + n * MINUTE).isoformat() for n in range(20)]
    env = child_env(sandbox=None, queue=None, HUEY_IMMEDIATE="1")
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(ready[i]), str(go), *slots],
            env=env,
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    try:
        wait_for(lambda: all(r.exists() for r in ready) or any(p.poll() is not None for p in racers), timeout=60)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in racers]
    finally:
        for p in racers:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in racers] == [0, 0], [err.decode()[-2000:] for _out, err in outputs]
    won = [json.loads(out) for out, _err in outputs]
    # For every slot exactly one of the two processes ran the sweep, the other was told it had run.
    assert [a + b for a, b in zip(*won, strict=True)] == [1] * len(slots)
    assert PeriodicRun.objects.filter(name="payments_sweep").count() == len(slots)
    logged = [err.decode().count("payments sweep ") for _out, err in outputs]
    assert sum(logged) == len(slots)


# --- the passes between sweeps (in process) ---------------------------------------------------------------------
def test_a_sweep_schedules_its_redispatch_passes_once_per_slot(sim: Simulator) -> None:
    assert HUEY.immediate  # scheduled tasks stay in the (memory) schedule: the test reads them
    now = timezone.now()
    slot = period_start(now, period=tasks.SWEEP_PERIOD)

    def passes() -> list[datetime]:
        return sorted(
            t.eta for t in HUEY.scheduled() if t.name.endswith("redispatch_lost") and t.eta > now.replace(tzinfo=None)
        )

    before = passes()
    assert tasks.periodic_sweep(slot=slot, now=now) is not None
    # every 10 s mark of the clock from now to the end of the next minute (whenever the next sweep runs in it)
    expected = [(slot + n * timedelta(seconds=10)).replace(tzinfo=None) for n in range(1, 13)]
    expected = [at for at in expected if at > now.replace(tzinfo=None)]
    assert sorted(set(passes()) - set(before)) == expected
    assert expected[-1] == (slot + 2 * MINUTE).replace(tzinfo=None)

    assert tasks.periodic_sweep(slot=slot, now=now) is None  # the same slot again: nothing run, nothing scheduled
    assert len(passes()) == len(before) + len(expected)

    # A mark scheduled by two sweeps (this minute's and the next's) looks once.
    mark = slot + 2 * MINUTE
    assert tasks.redispatch_lost.call_local(mark=mark) == 0
    assert tasks.redispatch_lost.call_local(mark=mark) is None


@pytest.mark.django_db
def test_every_lost_dispatch_is_looked_for_while_fresh_wherever_it_falls_in_the_minute() -> None:
    """A dispatch message lost (queue down at checkout, or a worker died holding it) leaves the attempt QUEUED. It
    can be sent only while younger than QUEUED_SEND_LIMIT (30 s); the minute sweep alone found it in time for about
    one in three birth times. With the passes, each is found 5–15 s after checkout, whatever the second."""
    _order, attempt = place({product().pk: 1}, push=False)
    base = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    for sweep_seconds in [(0.3, 0.3, 0.3), (29.0, 29.0, 29.0), (59.7, 59.7, 59.7), (59.7, 0.3, 45.0), (5, 55, 5)]:
        # where in each minute the sweep ran (it depends on which consumer started when)
        looks: set[datetime] = set()
        for minute, second in enumerate(sweep_seconds):
            slot = base + minute * MINUTE
            ran = slot + timedelta(seconds=second)
            looks.update([ran, *services.redispatch_pass_times(slot=slot, period=MINUTE, now=ran)])
        for second in range(60):
            born = base + MINUTE + timedelta(seconds=second)
            PaymentAttempt.objects.filter(pk=attempt.pk).update(created_at=born)
            window = sorted(t for t in looks if born <= t <= born + timedelta(seconds=35))
            found = [t for t in window if found_by(attempt.pk, t)]
            assert found, f"born at :{second:02d}, sweeps at {sweep_seconds}: never re-sent"
            assert found[0] - born <= timedelta(seconds=15), (second, sweep_seconds, found[0] - born)


def found_by(attempt_id: int, at: datetime) -> bool:
    return attempt_id in services.attempts_queued(now=at)


# --- two real consumers across minute boundaries ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", storage_kinds()[-1:])
def test_two_consumers_sweep_once_a_minute_and_resend_a_lost_dispatch_once(
    kind: str, sim: Simulator, tmp_path: Path
) -> None:
    queue = Queue.create(kind, tmp_path)
    env = child_env(sandbox=sim.sandbox, queue=queue)
    first_slot = period_start(timezone.now(), period=MINUTE)
    try:
        with c2b_requests() as requests, consumers(2, env=env, tmp_path=tmp_path, workers=2) as workers:
            wait_for(lambda: all(started(w.output()) for w in workers), timeout=60, what="both consumers started")
            # A checkout whose dispatch message is lost, at whatever second of the minute this is.
            order, attempt = place({product().pk: 1}, push=False)
            wait_for(
                lambda: PaymentAttempt.objects.get(pk=attempt.pk).state == State.SUCCEEDED,
                timeout=45,
                what="the lost dispatch re-sent and paid",
            )

            # Each consumer's scheduler enqueues the sweep at its start and every 60 s after: wait for two rounds,
            # all run.
            def two_rounds_done() -> bool:
                outs = [w.output() for w in workers]
                enqueued = sum(len(re.findall(r"Enqueueing periodic task .*payments_sweep", o)) for o in outs)
                done = sum(len(re.findall(r"payments_sweep: \S+ executed in", o)) for o in outs)
                return enqueued >= 4 and done == enqueued

            wait_for(two_rounds_done, timeout=150, interval=0.5, what="two rounds of periodic sweeps")
    finally:
        queue.flush()
    outputs = "\n".join(w.output() for w in workers)

    runs = list(PeriodicRun.objects.filter(name="payments_sweep", slot__gte=first_slot).order_by("slot"))
    sweeps = sum(len(re.findall(r"payments_sweep: \S+ executed in", w.output())) for w in workers)
    assert 2 <= len(runs) < sweeps  # two or three minutes were crossed; the other consumer's sweeps did nothing
    for run in runs:  # one log line per slot, by the consumer that recorded the run
        lines = re.findall(rf"payments sweep {re.escape(run.slot.isoformat())} on (\S+):", outputs)
        assert lines == [run.runner], (run, lines)
    assert len(re.findall(r"payments sweep \S+ on ", outputs)) == len(runs)

    assert requests.by_reference == {attempt.third_party_reference: 1}
    assert not requests.refused
    assert order.payment_attempts.count() == 1
