"""State machines as data: a table of allowed transitions and one conditional UPDATE that applies them.

Each model with a state has exactly one owner module, which declares its table here and changes the state only
through :func:`transition`::

    ORDER = TransitionTable("order.status", {"awaiting_payment": {"paid", "expired"}, "expired": {"paid"}})
    transition(Order.objects, pk=order.pk, table=ORDER, source=order.status, target="paid", paid_at=now)

:func:`transition` refuses a move the table does not allow (:class:`IllegalTransition`, a programming error) and
writes ``UPDATE … SET state = target WHERE pk = … AND state = source``, so a caller that read a stale state changes
nothing and learns it from the return value. Callers that hold the row lock always match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from django.db import models
from django.utils import timezone

_M = TypeVar("_M", bound=models.Model)


class IllegalTransition(RuntimeError):
    """A state change the table does not allow was asked for (a bug, never a user error)."""


class TransitionTable:
    """The allowed moves of one state field: ``{source: {target, …}}``. States missing as keys are final."""

    def __init__(self, name: str, allowed: Mapping[str, Iterable[str]], *, field: str = "state") -> None:
        self.name = name
        self.field = field
        self.allowed: dict[str, frozenset[str]] = {str(s): frozenset(str(t) for t in ts) for s, ts in allowed.items()}

    def can(self, source: str, target: str) -> bool:
        return target in self.allowed.get(source, frozenset())

    def check(self, source: str, target: str) -> None:
        if not self.can(source, target):
            raise IllegalTransition(f"{self.name}: {source} → {target} is not allowed")

    def sources_of(self, target: str) -> frozenset[str]:
        return frozenset(source for source, targets in self.allowed.items() if target in targets)

    def pairs(self) -> list[tuple[str, str]]:
        """Every allowed (source, target), sorted: for docs and table tests."""
        return sorted((s, t) for s, ts in self.allowed.items() for t in ts)


def _sources(table: TransitionTable, source: str | Iterable[str], target: str) -> list[str]:
    sources = [source] if isinstance(source, str) else list(source)
    for each in sources:
        table.check(each, target)
    return sources


def _stamp(model: type[models.Model], changes: dict[str, Any]) -> dict[str, Any]:
    if "updated_at" not in changes and any(f.name == "updated_at" for f in model._meta.concrete_fields):
        changes["updated_at"] = timezone.now()  # .update() skips auto_now
    return changes


def transition_many(
    queryset: models.QuerySet[_M], *, table: TransitionTable, source: str | Iterable[str], target: str, **changes: Any
) -> int:
    """:func:`transition` for every row of ``queryset`` that is in ``source``; returns how many changed."""
    sources = _sources(table, source, target)
    return queryset.filter(**{f"{table.field}__in": sources}).update(
        **{table.field: target}, **_stamp(queryset.model, changes)
    )


def transition(
    manager: models.Manager[_M] | models.QuerySet[_M],
    *,
    pk: Any,
    table: TransitionTable,
    source: str | Iterable[str],
    target: str,
    **changes: Any,
) -> bool:
    """Move row ``pk`` from ``source`` (one state, or any of several) to ``target`` and set ``changes`` with it.

    Raises :class:`IllegalTransition` when a named source may not go to ``target``. Returns whether the row was in
    ``source`` (and so changed); ``False`` means another writer moved it first and nothing was written.
    """
    sources = _sources(table, source, target)
    updated = manager.filter(pk=pk, **{f"{table.field}__in": sources}).update(
        **{table.field: target}, **_stamp(manager.model, changes)
    )
    return bool(updated)
