"""The metrics the shop records as things happen (Prometheus).

Counters and histograms that only the process that saw the event can know live here; what the database already
knows (payments by outcome, pending pushes, backlog) is read when scraped (:mod:`kulipa.observability.collectors`),
not counted twice.

Every process (gunicorn workers, huey consumers) records into prometheus_client's default registry. With
``PROMETHEUS_MULTIPROC_DIR`` set in the environment before the process starts, prometheus_client keeps the values
in files of that directory instead, and ``/metrics`` adds up the files of every process of the machine
(docs/metrics.md). The helpers below never raise into their caller: a metric is not worth a failed request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from mpesa import Result

logger = logging.getLogger(__name__)

LIMITS_HIT = Counter(
    "kulipa_limits_hit_total",
    "Requests refused by an abuse limit, by limit.",
    ["limit"],
)

PUSH_SECONDS = Histogram(
    "kulipa_push_duration_seconds",
    "How long the gateway took to answer a C2B push (sync mode: until the customer answered on the phone or the "
    "gateway gave up; async mode: until it acknowledged), by outcome of the answer.",
    ["outcome"],
    # The customer types a PIN: seconds to a minute and a half; answers after 90 s happen (reference §5.1).
    buckets=(0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 150, 180),
)


def limit_hit(*, limit: str) -> None:
    """Count one request refused by the abuse limit named ``limit`` (e.g. ``"checkout_ip"``)."""
    try:
        LIMITS_HIT.labels(limit=limit).inc()
    except Exception:  # pragma: no cover - a full disk under PROMETHEUS_MULTIPROC_DIR, say
        logger.exception("could not count limit %s", limit)


def push_answered(*, result: Result) -> None:
    """Observe how long the gateway took to answer one push (``result.elapsed``, measured by the M-Pesa client
    around the HTTP call). A push that raised before any answer (``elapsed`` 0) is not a latency: not observed."""
    if result.elapsed <= 0:
        return
    try:
        PUSH_SECONDS.labels(outcome=result.outcome.value).observe(result.elapsed)
    except Exception:  # pragma: no cover
        logger.exception("could not observe push latency")
