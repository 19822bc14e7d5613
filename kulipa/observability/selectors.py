"""What the database knows about the shop's payments, read at scrape time for ``/metrics``. No writes.

Several processes on several machines serve the shop; only the database sees all of them, so these numbers are
read from it when Prometheus asks instead of being counted by each process.

Cost: every query reads an index over a bounded set of rows — what is in flight, what is due, what arrived in
the last day — never the whole history, so a scrape costs the same after a million payments as after ten
(docs/metrics.md shows the PostgreSQL plans):

=======================================  ==========================================================================
query                                    index
=======================================  ==========================================================================
attempts of the last 24 h by state       ``attempt_created_state`` (created_at, state): index-only range scan
attempts in flight by state, oldest      ``one_attempt_in_flight_per_order`` (partial: in-flight rows only)
reconciliation backlog (count, oldest)   ``attempt_state_next_check`` (state, next_check_at): one range per state
reservations expired                     ``reservation_active_expiry`` (partial: active rows only)
callbacks of the last 24 h by state      ``received_at``: range scan
callbacks rejected by reason             ``CallbackRejection``: one row per day and reason
=======================================  ==========================================================================

On PostgreSQL they run in one transaction with a statement timeout, so a slow database makes a scrape fail fast
instead of piling scrapes up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Min, Q, Sum

from kulipa.inventory.models import StockReservation
from kulipa.payments.models import CallbackDelivery, CallbackRejection, PaymentAttempt
from kulipa.payments.services.reconcile import ASKABLE

SCRAPE_STATEMENT_TIMEOUT_MS = 2000
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
"""The windows of the "recent" counts, by label. The longest bounds what a scrape reads."""

Windowed = dict[str, dict[str, int]]
"""window label → key → count."""


@dataclass(frozen=True, slots=True)
class ShopCounts:
    """One scrape's reading of the database. Every mapping names every possible state (0 when none), except
    ``rejections_by_reason`` (reasons appear as they are first counted)."""

    attempts: Windowed
    """Payment attempts (one per push) created in each window, by their state now: an outcome, or in flight."""
    pending_by_state: dict[str, int]
    """Attempts in flight (queued, pushing, awaiting_callback, unknown): pushes whose outcome is not settled."""
    pending_oldest_seconds: float
    """Age of the oldest attempt in flight (0 when none)."""
    reconcile_backlog: int
    """Attempts the sweep would ask the gateway about now (askable state, ``next_check_at`` passed)."""
    reconcile_backlog_oldest_seconds: float
    """How long ago the longest-waiting of those became due (0 when none)."""
    reservations_expired: int
    """Reservations still ACTIVE whose ``expires_at`` has passed: they hold no stock any more and wait to be
    released (by the sweep once the order stops awaiting payment, or by a payment arriving late)."""
    callbacks: Windowed
    """Callback deliveries stored in each window, by state (rejected ones included, as long as they are kept)."""
    rejections_by_reason: dict[str, int]
    """Callback deliveries rejected (malformed, unknown reference, ...) since the shop started counting."""


@contextmanager
def _scrape_transaction() -> Iterator[None]:
    """PostgreSQL: one transaction whose statements give up after ``SCRAPE_STATEMENT_TIMEOUT_MS``. SQLite: nothing
    (a transaction there would take the write lock at BEGIN; see ``transaction_mode`` in settings)."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(SCRAPE_STATEMENT_TIMEOUT_MS)])
        yield


def _grouped(rows: Iterable[tuple[Any, Any]], keys: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(keys, 0)
    for key, n in rows:
        counts[str(key)] = int(n or 0)
    return counts


def _windowed(rows: Iterable[Mapping[str, Any]], key: str, keys: Iterable[str]) -> Windowed:
    """Rows of ``{key: ..., "<window label>": count, ...}`` → window label → key → count."""
    counts = {label: dict.fromkeys(keys, 0) for label in WINDOWS}
    for row in rows:
        for label in WINDOWS:
            counts[label][str(row[key])] = int(row[label] or 0)
    return counts


def _per_window(field: str, now: datetime) -> dict[str, Count]:
    """``Count`` annotations, one per window, filtered on ``field`` (the query itself is bounded by the longest).
    ``state`` (never null) rather than ``pk``: an index holding (time, state) then answers alone."""
    return {label: Count("state", filter=Q(**{f"{field}__gte": now - span})) for label, span in WINDOWS.items()}


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


def shop_counts(*, now: datetime) -> ShopCounts:
    """Read :class:`ShopCounts` (seven aggregate queries, each on an index over a bounded range). Raises
    ``DatabaseError`` when the database does not answer (the caller reports it down for this scrape)."""
    since = now - max(WINDOWS.values())
    with _scrape_transaction():
        # order_by(): the models' default ordering would otherwise join the GROUP BY.
        attempts = _windowed(
            PaymentAttempt.objects.filter(created_at__gte=since)
            .order_by()
            .values("state")
            .annotate(**_per_window("created_at", now)),
            "state",
            PaymentAttempt.State.values,
        )
        # One grouped query (not a separate MIN, which PostgreSQL may answer by walking the created_at index
        # from the oldest attempt ever): the partial index of in-flight rows, and their rows only.
        in_flight = list(
            PaymentAttempt.objects.filter(state__in=PaymentAttempt.IN_FLIGHT)
            .order_by()
            .values_list("state")
            .annotate(n=Count("*"), oldest=Min("created_at"))
        )
        pending = _grouped(((state, n) for state, n, _oldest in in_flight), PaymentAttempt.IN_FLIGHT)
        pending_oldest = min((oldest for _state, _n, oldest in in_flight), default=None)
        backlog = PaymentAttempt.objects.filter(state__in=ASKABLE, next_check_at__lte=now).aggregate(
            n=Count("*"), oldest=Min("next_check_at")
        )
        reservations_expired = StockReservation.objects.filter(
            state=StockReservation.State.ACTIVE, expires_at__lte=now
        ).count()
        callbacks = _windowed(
            CallbackDelivery.objects.filter(received_at__gte=since)
            .order_by()
            .values("state")
            .annotate(**_per_window("received_at", now)),
            "state",
            CallbackDelivery.State.values,
        )
        rejections = _grouped(CallbackRejection.objects.order_by().values_list("reason").annotate(n=Sum("count")), [])
    return ShopCounts(
        attempts=attempts,
        pending_by_state=pending,
        pending_oldest_seconds=_age(now, pending_oldest),
        reconcile_backlog=int(backlog["n"]),
        reconcile_backlog_oldest_seconds=_age(now, backlog["oldest"]),
        reservations_expired=reservations_expired,
        callbacks=callbacks,
        rejections_by_reason=rejections,
    )
