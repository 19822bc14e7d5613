from __future__ import annotations

import secrets

from django.db import models


def new_public_id() -> str:
    """The order id in URLs: 128 random bits, so a link cannot be guessed."""
    return secrets.token_urlsafe(16)


class Order(models.Model):
    """Placeholder shape; the orders issue fills this in."""

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
