"""huey tasks of the payments app. Thin: they take ids, the services re-read fresh state and do the work.

Run by the huey consumer (``manage.py run_huey``); the push engine lives in that process. With
``HUEY["immediate"]`` (tests) they run inline.
"""

from __future__ import annotations

import logging

from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from kulipa.payments import services

logger = logging.getLogger(__name__)


@db_task()
def dispatch_payment(attempt_id: int) -> bool:
    """QUEUED → PUSHING (only the winner) and hand the C2B to the push engine; returns at once."""
    return services.payment_attempt_dispatch(attempt_id=attempt_id)


@db_task()
def reconcile_attempt(attempt_id: int, force: bool = False) -> str:
    """Status query for one attempt (claimed unless ``force``), with backoff until final."""
    return services.attempt_reconcile(attempt_id=attempt_id, force=force).value


@db_task()
def process_callback(delivery_id: int) -> str:
    """Confirm a stored callback delivery with a status query before anything changes."""
    return services.callback_process(delivery_id=delivery_id)


@db_task()
def reverse_payment(attempt_id: int) -> str:
    """Send a requested reversal (once)."""
    attempt = services.payment_reversal_send(attempt_id=attempt_id)
    return attempt.reversal_state if attempt else "not_requested"


@db_task()
def reconcile_reversal(attempt_id: int) -> str:
    """Status query for a reversal whose answer was lost (never resent)."""
    return services.payment_reversal_reconcile(attempt_id=attempt_id).reversal_state


@db_periodic_task(crontab(minute="*"))
def payments_sweep() -> dict[str, int]:
    """Every minute: reconcile due attempts and lost reversals, re-dispatch stuck pushes, expire unpaid orders,
    tidy reservations."""
    from kulipa.inventory.services import reservations_purge_expired
    from kulipa.orders.services import order_expire_due

    counts = services.payments_sweep()
    reversals = services.reversals_due(now=timezone.now())
    for attempt_id in reversals:
        reconcile_reversal(attempt_id)
    counts["reversals"] = len(reversals)
    counts["expired_orders"] = order_expire_due()
    counts["purged_reservations"] = reservations_purge_expired()
    if any(counts.values()):
        logger.info("payments sweep: %s", counts)
    return counts
