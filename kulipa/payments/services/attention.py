"""Raising things for a person to look at, and closing them. Never twice while open (``AttentionItem.key`` is unique
among open items); resolving them is staff work (``kulipa.backoffice.services`` calls :func:`attention_resolve`).
This module is the only writer of ``AttentionItem``."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

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


def attention_resolve(*, item_id: int, resolved_by: str, resolution: str) -> AttentionItem:
    """Close item ``item_id`` with what was done (``resolution``) and by whom, once: a conditional UPDATE on
    ``resolved_at IS NULL``, so an item already resolved (by this call before, or by someone else meanwhile) is
    returned unchanged. Raises ``AttentionItem.DoesNotExist`` for an unknown id."""
    now = timezone.now()
    AttentionItem.objects.filter(pk=item_id, resolved_at__isnull=True).update(
        resolved_at=now, resolved_by=resolved_by[:150], resolution=resolution
    )
    return AttentionItem.objects.get(pk=item_id)
