"""The metrics the shop records as things happen (Prometheus).

Counters and histograms that only the process that saw the event can know live here; what the database already
knows (payments by outcome, pending pushes, backlog) is read when scraped, not counted twice.
"""

from __future__ import annotations

from prometheus_client import Counter

LIMITS_HIT = Counter(
    "kulipa_limits_hit_total",
    "Requests refused by an abuse limit, by limit.",
    ["limit"],
)


def limit_hit(*, limit: str) -> None:
    """Count one request refused by the abuse limit named ``limit`` (e.g. ``"checkout_ip"``)."""
    LIMITS_HIT.labels(limit=limit).inc()
