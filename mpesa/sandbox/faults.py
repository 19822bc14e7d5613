"""Faults the simulator injects on request, as real networks and gateways produce them (``/sandbox/faults``).

Two families:

* **Callback faults** (async mode): each result delivered several times, deliveries lost, deliveries late.
* **Response faults**: the answer to the next N C2B requests, or the next N status queries, goes wrong in one of
  the ways of :class:`ResponseFault`. Some happen *before* the request is processed (nothing recorded, no money
  moved), the others *after* (the transaction exists and runs its scenario; only the answer is lost or garbled).
  A client cannot tell "dropped before" from "dropped after": that is the point of offering both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mpesa.config import Operation
from mpesa.sandbox.settings import SandboxConfigError


class ResponseFault(StrEnum):
    DROP_BEFORE = "drop_before"
    """The request is read, then the connection is cut without a byte of answer. Nothing was processed."""
    DROP_AFTER = "drop_after"
    """The request is processed (a C2B's transaction is created and runs its scenario), then the connection is
    cut instead of answering."""
    STATUS_503 = "status_503"
    """Answered at once with HTTP 503 and INS-16 (temporary overloading). Nothing was processed."""
    MALFORMED = "malformed"
    """Processed; the answer keeps its HTTP status but its JSON body is cut in half."""
    EMPTY = "empty"
    """Processed; the answer keeps its HTTP status but has an empty body."""

    @property
    def before_processing(self) -> bool:
        return self in (ResponseFault.DROP_BEFORE, ResponseFault.STATUS_503)


_FAULTED_OPERATIONS = {Operation.C2B: "c2b", Operation.QUERY: "query"}
"""The operations whose responses can be faulted, by the prefix of their fault fields."""
_CALLBACK_FIELDS = ("duplicate_callbacks", "drop_callbacks", "delay_callbacks")
_RESPONSE_FIELDS = ("c2b_fault", "c2b_fault_count", "query_fault", "query_fault_count")
MAX_COUNT = 10_000


@dataclass(slots=True)
class Faults:
    """Set with ``POST /sandbox/faults``; cleared by reset."""

    duplicate_callbacks: int = 1
    """How many times each callback is sent (2 = one extra copy of every result)."""
    drop_callbacks: int = 0
    """How many of the next callbacks are silently lost (counts down)."""
    delay_callbacks: float = 0.0
    """Extra seconds before each callback is sent."""
    c2b_fault: ResponseFault | None = None
    """What goes wrong with the answers to the next ``c2b_fault_count`` C2B requests."""
    c2b_fault_count: int = 0
    """How many of the next C2B requests get ``c2b_fault`` (counts down as they arrive)."""
    query_fault: ResponseFault | None = None
    """What goes wrong with the answers to the next ``query_fault_count`` status queries."""
    query_fault_count: int = 0
    """How many of the next status queries get ``query_fault`` (counts down as they arrive)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "duplicate_callbacks": self.duplicate_callbacks,
            "drop_callbacks": self.drop_callbacks,
            "delay_callbacks": self.delay_callbacks,
            "c2b_fault": self.c2b_fault.value if self.c2b_fault else None,
            "c2b_fault_count": self.c2b_fault_count,
            "query_fault": self.query_fault.value if self.query_fault else None,
            "query_fault_count": self.query_fault_count,
        }

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (all or nothing); raises :class:`SandboxConfigError` naming the bad field."""
        unknown = sorted(set(changes) - {*_CALLBACK_FIELDS, *_RESPONSE_FIELDS})
        if unknown:
            raise SandboxConfigError(f"unknown fault fields: {', '.join(unknown)}")
        dup = changes.get("duplicate_callbacks", self.duplicate_callbacks)
        drop = changes.get("drop_callbacks", self.drop_callbacks)
        delay = changes.get("delay_callbacks", self.delay_callbacks)
        for name, value in (("duplicate_callbacks", dup), ("drop_callbacks", drop)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise SandboxConfigError(f"{name} must be an integer from 0 to 100")
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise SandboxConfigError("delay_callbacks must be a number of seconds >= 0")
        c2b = _fault_kind("c2b_fault", changes.get("c2b_fault", self.c2b_fault))
        c2b_count = _count("c2b_fault_count", changes.get("c2b_fault_count", self.c2b_fault_count))
        query = _fault_kind("query_fault", changes.get("query_fault", self.query_fault))
        query_count = _count("query_fault_count", changes.get("query_fault_count", self.query_fault_count))
        self.duplicate_callbacks, self.drop_callbacks, self.delay_callbacks = max(dup, 1), drop, float(delay)
        self.c2b_fault, self.c2b_fault_count = c2b, c2b_count
        self.query_fault, self.query_fault_count = query, query_count

    def take(self, operation: Operation) -> ResponseFault | None:
        """The fault for a request of ``operation`` arriving now, counted down; ``None`` when it is answered
        normally."""
        prefix = _FAULTED_OPERATIONS.get(operation)
        if prefix == "c2b" and self.c2b_fault is not None and self.c2b_fault_count > 0:
            self.c2b_fault_count -= 1
            return self.c2b_fault
        if prefix == "query" and self.query_fault is not None and self.query_fault_count > 0:
            self.query_fault_count -= 1
            return self.query_fault
        return None


def _fault_kind(name: str, value: object) -> ResponseFault | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value in {f.value for f in ResponseFault}:
        return ResponseFault(value)
    kinds = ", ".join(f.value for f in ResponseFault)
    raise SandboxConfigError(f"{name} must be null or one of {kinds}")


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise SandboxConfigError(f"{name} must be an integer from 0 to {MAX_COUNT}")
    return value
