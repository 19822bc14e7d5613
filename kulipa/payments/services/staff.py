"""Staff decisions the payments app carries out: keep and deliver an order that was paid but needs attention.

Called by ``kulipa.backoffice.services`` (which checks the permission and writes the audit log); never queues."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from kulipa.core import locks
from kulipa.inventory import services as inventory
from kulipa.inventory.services import CommitResult
from kulipa.orders import services as orders
from kulipa.orders.models import Order
from kulipa.payments.events import Kind, event_record
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services.errors import PaymentError

logger = logging.getLogger("kulipa.payments")

OrderStatus = Order.Status
NO_STOCK = gettext_noop("sem stock: encomendar/repor")
"""What the event log says when an order is confirmed without its stock (staff must order or restock it)."""


def order_force_confirm(*, order_id: int, confirmed_by: str, note: str) -> Order:
    """Staff decided to keep an order that is NEEDS_ATTENTION (paid, but late without stock or with a different
    amount) and deliver it: the order becomes PAID (table ``ORDER``: needs_attention → paid).

    Its stock is sold if it is still there (``inventory.reservations_commit``: live reservations committed, lapsed
    ones re-acquired). If it is not (OUT_OF_STOCK) the order is PAID all the same — staff's explicit decision —
    and both the DECISION event and the note on the order (``order.attention_reason``) say "sem stock:
    encomendar/repor". Locks Order (1) → its attempts (2) → products (4) → reservations (5).

    Raises :class:`PaymentError` when the order is not NEEDS_ATTENTION or has no paying payment.
    """
    with transaction.atomic():
        order = locks.order_lock(order_id)
        if order.status != OrderStatus.NEEDS_ATTENTION:
            raise PaymentError(
                _("Só uma encomenda paga que precisa de atenção pode ser confirmada; esta está %(status)s.")
                % {"status": order.get_status_display()}
            )
        attempts = locks.order_attempts_lock(order)
        paying = next((a for a in attempts if a.pays_order and a.state == PaymentAttempt.State.SUCCEEDED), None)
        if paying is None:
            raise PaymentError(_("Esta encomenda não tem um pagamento confirmado."))
        commit = inventory.reservations_commit(order=order)
        sold = commit is not CommitResult.OUT_OF_STOCK
        orders.order_transition(order=order, to=OrderStatus.PAID)
        text = _("Confirmada por %(who)s: %(note)s") % {"who": confirmed_by, "note": note}
        if not sold:
            text = f"{text} — {_(NO_STOCK)}"
        orders.order_attention_note(order=order, note=text)
        event_record(
            order_id=order.pk,
            attempt_id=paying.pk,
            kind=Kind.DECISION,
            summary=f"force_confirmed by {confirmed_by}: " + ("stock sold" if sold else NO_STOCK),
            payload={
                "decision": "force_confirmed",
                "previous_status": OrderStatus.NEEDS_ATTENTION,
                "order_status": order.status,
                "stock": commit.value,
                "sold": sold,
                "confirmed_by": confirmed_by,
                "note": note,
            },
        )
    logger.info("order %s force-confirmed by %s (stock %s)", order.pk, confirmed_by, commit.value)
    return order
