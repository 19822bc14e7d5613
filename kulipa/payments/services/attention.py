"""Raising things for a person to look at. Never twice while open (``AttentionItem.key`` is unique among open
items); resolving them is staff work (the back office)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from kulipa.payments.models import AttentionItem

logger = logging.getLogger("kulipa.payments")

Kind = AttentionItem.Kind


def attention_raise(
    *,
    kind: str,
    key: str,
    order_id: int | None,
    reason: str,
    attempt_id: int | None = None,
    propose_reversal: bool = False,
) -> AttentionItem:
    """Open an item ``key`` (e.g. ``"duplicate:<attempt id>"``), or return the one already open. Idempotent."""
    open_item = AttentionItem.objects.filter(key=key, resolved_at__isnull=True).first()
    if open_item is not None:
        return open_item
    try:
        with transaction.atomic():
            item = AttentionItem.objects.create(
                kind=kind,
                key=key[:80],
                order_id=order_id,
                attempt_id=attempt_id,
                reason=reason,
                propose_reversal=propose_reversal,
            )
    except IntegrityError:  # raised concurrently: the open one stands
        return AttentionItem.objects.get(key=key, resolved_at__isnull=True)
    logger.warning("needs attention (%s): %s", kind, reason)
    return item
