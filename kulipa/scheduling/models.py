"""Which periodic job ran for which period: one row per (name, slot), the unique constraint is the claim."""

from __future__ import annotations

from django.db import models


class PeriodicRun(models.Model):
    """Job ``name`` ran (or is running) for the period starting at ``slot``, on ``runner`` (host:pid).

    Written only by :func:`kulipa.scheduling.services.run_once`, which also prunes old rows."""

    name = models.CharField(max_length=100, editable=False)
    slot = models.DateTimeField(editable=False)
    runner = models.CharField(max_length=200, editable=False)
    started_at = models.DateTimeField(editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "slot"], name="periodic_run_once_per_slot")]

    def __str__(self) -> str:
        return f"{self.name} {self.slot:%Y-%m-%d %H:%M:%S} on {self.runner}"
