"""Run a periodic job once per period, however many workers on however many machines are told to run it.

Every huey consumer runs its own scheduler, and each one enqueues every periodic task each minute: with two
consumers (one machine or two) the minute sweep would run twice a minute. The task body asks :func:`run_once`
first and does its work only when it gets ``True``.

Why a database row and not a Redis ``SET NX``:

* **It works in every configuration.** SQLite with huey on SQLite (``make run``), PostgreSQL with huey on Redis
  (production): the database is the one thing every worker of a shop shares; Redis is there only when
  ``REDIS_URL`` is set.
* **The unique constraint is the claim,** enforced by the database (SQLite and PostgreSQL alike): of concurrent
  INSERTs of the same (name, slot) exactly one commits, the others get ``IntegrityError``. No lock, no expiry time
  to choose, no clock to agree on beyond which period it is (the slot is computed by the caller).
* **It is durable and visible:** a Redis restart or failover cannot forget that a period ran (and let it run
  again), and ``scheduling_periodicrun`` shows who ran what when.

The cost is one INSERT per job, per consumer, per period (and a DELETE of rows older than ``keep`` by the winner).

The guarantee is **at most once per slot**: the claim is taken before the work, so a worker that dies mid-job
loses that period (the next period runs). The jobs that use it are repairs that are idempotent and cover what a
skipped period left, so "at most once" is the right side to err on.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from kulipa.scheduling.models import PeriodicRun

KEEP = timedelta(days=2)
"""How long the record of a run is kept (to answer "did the sweep run at 03:14 yesterday?")."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def period_start(at: datetime, *, period: timedelta) -> datetime:
    """The start (UTC) of the period of length ``period`` that contains the aware instant ``at``. Periods are
    aligned to the Unix epoch, so every machine computes the same slot for the same instant: with a 1-minute
    period, the start of the minute."""
    step = period // _MICROSECOND
    if step <= 0:
        raise ValueError("period must be positive")
    if timezone.is_naive(at):
        raise ValueError("at must be an aware datetime")
    elapsed = (at - _EPOCH) // _MICROSECOND
    return _EPOCH + (elapsed - elapsed % step) * _MICROSECOND


def runner_name() -> str:
    """``host:pid`` of this process, as recorded on the runs it wins."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def run_once(*, name: str, slot: datetime, keep: timedelta = KEEP) -> bool:
    """Claim job ``name`` for the period starting at ``slot``: ``True`` for exactly one caller per (name, slot)
    across every process and machine sharing the database, ``False`` for the others (and for a slot already run).

    One INSERT in its own transaction (a savepoint when called inside one); a duplicate is told by the unique
    constraint (``IntegrityError``), so concurrent callers need no lock and the answer holds on SQLite and
    PostgreSQL alike. The winner deletes this job's rows whose slot is older than ``keep``. Idempotent: asking
    again for a slot already claimed returns ``False`` and changes nothing.
    """
    try:
        with transaction.atomic():
            PeriodicRun.objects.create(name=name, slot=slot, runner=runner_name(), started_at=timezone.now())
    except IntegrityError:
        return False
    PeriodicRun.objects.filter(name=name, slot__lt=slot - keep).delete()
    return True
