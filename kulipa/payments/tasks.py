"""The queue: every piece of background work of the payments app, and every place that queues it.

The rules, in one place:

* **After commit.** ``queue_*`` functions may be called inside a transaction; the message leaves only once it
  commits (``transaction.on_commit``), so a worker never looks for a row that is not there yet.
* **Queue down → log, the sweep repairs.** Queueing never raises into the caller: the row it is about is already
  committed in a state the minute sweep (:func:`payments_sweep`) picks up (QUEUED attempt, REQUESTED reversal,
  QUEUED callback delivery, due ``next_check_at``).
* **Tasks take ids** and the services re-read fresh state; every service is idempotent, so a duplicate message,
  a retry or two workers running the same task change nothing twice.

Services never import this module; views, the push engine's recorder and the tasks below call a service, then
queue what follows. With ``HUEY["immediate"]`` (tests) tasks run inline; scheduled ones wait for the sweep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from kulipa.inventory.services import reservations_purge_expired
from kulipa.observability import metrics
from kulipa.payments import selectors, services
from kulipa.payments.conf import mpesa_int
from kulipa.payments.push_engine import DEFAULT_LIMIT, PushEngine, PushJob, close_at_exit
from kulipa.scheduling.services import period_start, run_once, runner_name
from mpesa import Result

logger = logging.getLogger(__name__)


# --- queueing ----------------------------------------------------------------------------------------------
def _after_commit(what: str, send: Callable[[], Any]) -> None:
    def go() -> None:
        try:
            send()
        except Exception:  # the queue being down must not undo committed work; the sweep repairs
            logger.exception("could not queue %s; the sweep will", what)

    transaction.on_commit(go)


def queue_dispatch(attempt_id: int) -> None:
    """Push a QUEUED attempt (once: the worker's claim is conditional)."""
    _after_commit(f"dispatch of attempt {attempt_id}", lambda: dispatch_payment(attempt_id))


def queue_reconcile(attempt_id: int, *, at: datetime | None = None, force: bool = False) -> None:
    """Ask the gateway about an attempt, now or at ``at``."""
    if at is None:
        _after_commit(f"reconcile of attempt {attempt_id}", lambda: reconcile_attempt(attempt_id, force=force))
        return
    delay = max(0.0, (at - timezone.now()).total_seconds())
    _after_commit(
        f"reconcile of attempt {attempt_id}", lambda: reconcile_attempt.schedule(args=(attempt_id, force), delay=delay)
    )


def queue_callback(delivery_id: int) -> None:
    """Confirm a stored callback delivery."""
    _after_commit(f"callback {delivery_id}", lambda: process_callback(delivery_id))


def queue_reversal(reversal_id: int) -> None:
    """Send a REQUESTED reversal (once)."""
    _after_commit(f"reversal {reversal_id}", lambda: reverse_payment(reversal_id))


def queue_pending_count() -> int:
    """Tasks waiting in the queue's storage (one cheap call: Redis ZCARD, SQLite COUNT). Raises when the storage
    cannot be reached: the readiness probe and ``/metrics`` (``kulipa.observability``) ask here, not huey."""
    return int(dispatch_payment.huey.pending_count())


# --- the push engine's recorder ----------------------------------------------------------------------------
def push_answered(job: PushJob, result: Result) -> None:
    """The push engine's recorder: record the answer, then queue the next question to the gateway (if any).
    A database error is retried a few times; if every try fails the attempt stays PUSHING and the reconciler
    settles it by status query."""
    import time

    from django.db import DatabaseError, close_old_connections

    metrics.push_answered(result=result)
    for n in range(5):
        try:
            attempt = services.payment_attempt_record_push_answer(attempt_id=job.attempt_id, result=result)
        except DatabaseError:
            logger.exception("recording push answer of %s failed (try %s)", job.third_party_reference, n + 1)
            close_old_connections()
            time.sleep(0.2 * 2**n)
            continue
        if attempt.next_check_at is not None and attempt.in_flight:
            queue_reconcile(attempt.pk, at=attempt.next_check_at)
        return


_engine: PushEngine | None = None
_engine_lock = threading.Lock()


def engine() -> PushEngine:
    """This worker's push engine, started on first use. ``settings.MPESA["PUSH_ENGINE_LIMIT"]`` caps concurrency."""
    global _engine
    with _engine_lock:
        if _engine is None or _engine._closed:
            import atexit

            _engine = PushEngine(recorder=push_answered, limit=mpesa_int("PUSH_ENGINE_LIMIT", DEFAULT_LIMIT))
            atexit.register(close_at_exit, _engine)
        return _engine


# --- tasks -------------------------------------------------------------------------------------------------
@db_task()
def dispatch_payment(attempt_id: int) -> bool:
    """QUEUED → PUSHING (only the winner, and only while fresh) and hand the C2B to the push engine."""
    job = services.payment_attempt_claim_push(attempt_id=attempt_id)
    if job is None:
        logger.info("attempt %s not claimable any more; not pushing", attempt_id)
        return False
    engine().push(job)
    return True


@db_task()
def reconcile_attempt(attempt_id: int, force: bool = False) -> str:
    """Status query for one attempt (claimed unless ``force``); queues the next one while it is still open."""
    outcome = services.attempt_reconcile(attempt_id=attempt_id, force=force)
    if outcome is services.ReconcileOutcome.PENDING:
        at = selectors.attempt_next_check_at(attempt_id=attempt_id)
        if at is not None:
            queue_reconcile(attempt_id, at=at)
    return outcome.value


@db_task()
def process_callback(delivery_id: int) -> str:
    """Confirm a stored callback delivery with a status query before anything changes."""
    return services.callback_process(delivery_id=delivery_id)


@db_task()
def reverse_payment(reversal_id: int) -> str:
    """Send a requested reversal (once)."""
    reversal = services.payment_reversal_send(reversal_id=reversal_id)
    return reversal.state if reversal else "not_requested"


@db_task()
def reconcile_reversal(reversal_id: int) -> str:
    """Status query for a reversal whose answer was lost (never resent)."""
    return services.payment_reversal_reconcile(reversal_id=reversal_id).state


def sweep(*, now: datetime | None = None) -> dict[str, int]:
    """One pass of every repair (see ``kulipa.payments.services.sweep``); what needs the gateway is queued."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    counts["not_sent"] = services.payment_attempts_close_stale_queued(now=now)
    # What needs the gateway or a worker: select the ids, queue one task each.
    to_queue: list[tuple[str, Callable[..., list[int]], Any]] = [
        ("redispatched", services.attempts_queued, dispatch_payment),
        ("reconcile", services.attempts_due, reconcile_attempt),
        ("callbacks", services.deliveries_to_process, process_callback),
        ("reversals_sent", services.reversals_to_send, reverse_payment),
        ("reversals_queried", services.reversals_to_query, reconcile_reversal),
    ]
    for name, select, task in to_queue:
        ids = select(now=now)
        for record_id in ids:
            task(record_id)
        counts[name] = len(ids)
    counts["expired_orders"] = services.orders_expire_due(now=now)
    counts["purged_reservations"] = reservations_purge_expired(now=now)
    counts["stuck"] = services.stuck_raise(now=now)
    counts["pruned_callbacks"] = services.rejected_deliveries_prune(now=now)
    return counts


REDISPATCH_RUNS_KEPT = timedelta(hours=1)


@db_task()
def redispatch_lost(*, mark: datetime) -> int | None:
    """A look for lost dispatches between minute sweeps, at ``mark`` (scheduled by :func:`periodic_sweep`): dispatch
    again every QUEUED attempt aged ``REDISPATCH_MIN_AGE``..``QUEUED_SEND_LIMIT`` (the claim pushes each once).
    A mark scheduled by two sweeps runs once (``None`` for the other)."""
    if not run_once(name="redispatch_lost", slot=mark, keep=REDISPATCH_RUNS_KEPT):
        return None
    ids = services.attempts_queued(now=timezone.now())
    for attempt_id in ids:
        dispatch_payment(attempt_id)
    if ids:
        logger.info("redispatch pass %s: %s lost dispatches sent again", mark.isoformat(), len(ids))
    return len(ids)


SWEEP_PERIOD = timedelta(minutes=1)
"""Matches ``crontab(minute="*")`` below: the slot of a sweep is the start of its minute."""


def periodic_sweep(*, slot: datetime, now: datetime | None = None) -> dict[str, int] | None:
    """The body of :func:`payments_sweep` for the period starting at ``slot``: runs :func:`sweep` if this process
    is the first, on any machine, to claim the slot (:func:`kulipa.scheduling.services.run_once`), and schedules
    the passes that re-send lost dispatches until the next period (``redispatch_pass_times``). Returns the sweep's
    counts, or ``None`` when the slot had already been claimed (nothing done)."""
    if not run_once(name="payments_sweep", slot=slot):
        logger.debug("payments sweep %s: already run", slot.isoformat())
        return None
    now = now or timezone.now()
    for at in services.redispatch_pass_times(slot=slot, period=SWEEP_PERIOD, now=now):
        try:
            redispatch_lost.schedule(kwargs={"mark": at}, eta=at)
        except Exception:  # the queue down: this minute's sweep still runs; the next one schedules again
            logger.exception("could not schedule the redispatch passes from %s", at.isoformat())
            break
    counts = sweep(now=now)
    logger.info("payments sweep %s on %s: %s", slot.isoformat(), runner_name(), counts)
    return counts


@db_periodic_task(crontab(minute="*"))
def payments_sweep() -> dict[str, int] | None:
    """Every minute, once across all consumers on all machines: the repair of every intermediate state
    (:func:`periodic_sweep`). Every consumer's scheduler enqueues this each minute; the losers return ``None``."""
    now = timezone.now()
    return periodic_sweep(slot=period_start(now, period=SWEEP_PERIOD), now=now)
