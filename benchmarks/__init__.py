"""Benchmarks of the M-Pesa client and the offline simulator: ``python -m benchmarks`` (see README.md).

To add a benchmark, write ``def name(ctx: RunContext) -> dict`` (JSON-able, with an ``ok`` bool) and register it
in :data:`BENCHMARKS`; ``--only name`` then runs it alone.
"""

from __future__ import annotations

from benchmarks.capacity import simulator_capacity
from benchmarks.checkout import checkout
from benchmarks.common import Benchmark, RunContext
from benchmarks.pending import pending
from benchmarks.requests import request_costs
from benchmarks.throughput import client_throughput
from benchmarks.time_to_paid import time_to_paid
from benchmarks.worker_capacity import worker_capacity

BENCHMARKS: dict[str, Benchmark] = {
    "checkout": checkout,
    "client_throughput": client_throughput,
    "pending": pending,
    "requests": request_costs,
    "simulator_capacity": simulator_capacity,
    "time_to_paid": time_to_paid,
    "worker_capacity": worker_capacity,
}

__all__ = ["BENCHMARKS", "Benchmark", "RunContext"]
