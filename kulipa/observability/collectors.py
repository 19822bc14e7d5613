"""What ``/metrics`` serves: this machine's process metrics plus what the database and the queue know now.

* Process metrics (:mod:`kulipa.observability.metrics`: push latency, limits hit, callbacks refused): with
  ``settings.PROMETHEUS_MULTIPROC_DIR`` (the ``PROMETHEUS_MULTIPROC_DIR`` environment variable every process of the
  machine was started with) the sum over the files of all of them (prometheus_client's multiprocess mode);
  without it, the default registry of the one process that answers (right only when there is one process).
* :class:`ShopCollector`: read at scrape time from the database (:func:`kulipa.observability.selectors.shop_counts`)
  and the queue storage, so every process and machine reports the same numbers (query them with ``max``, not
  ``sum``, when several machines are scraped).

A source that does not answer makes its metrics absent from this scrape and ``kulipa_scrape_source_up`` 0; the
scrape itself still succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kulipa.observability import checks
from kulipa.observability.selectors import ShopCounts, Windowed, shop_counts

logger = logging.getLogger(__name__)


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: the process metrics (multiprocess files or this process) and the shop's."""
    registry = CollectorRegistry(auto_describe=False)
    path = str(getattr(settings, "PROMETHEUS_MULTIPROC_DIR", "") or "")
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(ShopCollector())
    return registry


class _ThisProcess(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key in sorted(values):
        family.add_metric([key], values[key])
    return family


def _windowed(name: str, documentation: str, label: str, values: Windowed) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["window", label])
    for window in sorted(values):
        for key in sorted(values[window]):
            family.add_metric([window, key], values[window][key])
    return family


def shop_families(counts: ShopCounts) -> Iterator[Metric]:
    """The metric families of one reading of the database (names and meanings: docs/metrics.md)."""
    yield _windowed(
        "kulipa_payment_attempts",
        "Payment attempts (one per push) created in the last hour / day, by state now: succeeded, declined, "
        "insufficient_funds, timed_out, failed, not_sent, unconfirmed are outcomes; queued, pushing, "
        "awaiting_callback, unknown are still in flight.",
        "state",
        counts.attempts,
    )
    yield _by(
        "kulipa_pushes_pending",
        "Payment attempts in flight (queued, pushing, awaiting_callback, unknown), by state: outcome not settled.",
        "state",
        counts.pending_by_state,
    )
    yield _gauge(
        "kulipa_pushes_pending_oldest_seconds",
        "Age of the oldest payment attempt in flight (0 when none).",
        counts.pending_oldest_seconds,
    )
    yield _gauge(
        "kulipa_reconcile_backlog",
        "Payment attempts due for a status query now (in flight or on the tail schedule, next check passed).",
        counts.reconcile_backlog,
    )
    yield _gauge(
        "kulipa_reconcile_backlog_oldest_seconds",
        "How long the longest-waiting attempt of the reconciliation backlog has been due (0 when none).",
        counts.reconcile_backlog_oldest_seconds,
    )
    yield _gauge(
        "kulipa_reservations_expired",
        "Stock reservations still active past their expiry: they hold no stock any more and await release.",
        counts.reservations_expired,
    )
    yield _windowed(
        "kulipa_callbacks_received",
        "Result callbacks stored by the callback URL in the last hour / day, by state: queued, processing, retry, "
        "done, gave_up (accepted, confirmed by a status query) or rejected.",
        "state",
        counts.callbacks,
    )
    rejected = CounterMetricFamily(
        "kulipa_callbacks_rejected",
        "Result callbacks rejected (malformed, unknown reference, wrong path token, sender not allowed...), by reason.",
        labels=["reason"],
    )
    for reason in sorted(counts.rejections_by_reason):
        rejected.add_metric([reason], counts.rejections_by_reason[reason])
    yield rejected


class ShopCollector(Collector):
    """Reads the database and the queue storage on each scrape (never between scrapes)."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "kulipa_scrape_source_up",
            "Whether this scrape could read the source (database, queue); when 0 its metrics are absent.",
            labels=["source"],
        )
        try:
            counts: ShopCounts | None = shop_counts(now=timezone.now())
        except DatabaseError as exc:
            logger.warning("metrics: the database did not answer: %r", exc)
            counts = None
        up.add_metric(["database"], 1 if counts is not None else 0)
        if counts is not None:
            yield from shop_families(counts)
        try:
            pending: int | None = checks.queue_pending_count()
        except Exception as exc:
            logger.warning("metrics: the queue storage did not answer: %r", exc)
            pending = None
        up.add_metric(["queue"], 1 if pending is not None else 0)
        if pending is not None:
            yield _gauge("kulipa_queue_pending_tasks", "Tasks waiting in the queue storage for a worker.", pending)
        yield up
