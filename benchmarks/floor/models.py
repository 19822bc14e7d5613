from __future__ import annotations

from django.db import models


class Hit(models.Model):
    """One row per request to ``/_floor/``."""

    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=20, default="floor")
