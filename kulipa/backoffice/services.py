"""Staff work on payments. Every function here:

1. checks the user's permission **on the server** (``PermissionDenied`` otherwise; nothing changes) — ``user`` is
   the staff member, or ``None`` for an operator on the server's command line, who then names themself in
   ``actor_name`` ("cli:<os user>");
2. has the owner make the change (``kulipa.payments.services``; this app never writes an order, attempt, reversal
   or attention item itself), holding the order lock (``kulipa.core.locks``) so what it reads before and after is
   exact;
3. writes one :class:`~kulipa.backoffice.models.StaffAction` (who, what, why, before/after, numbers masked) in
   the same transaction — or none when nothing changed (a double click);
4. queues what follows through ``kulipa.payments.tasks`` (sent after commit).

The permissions are those of ``StaffAction.Meta.permissions``; the groups that hold them: ``kulipa.backoffice.roles``.
"""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils.translation import gettext as _

from kulipa.accounts.models import User
from kulipa.backoffice.models import StaffAction
from kulipa.core import locks
from kulipa.orders.models import Order
from kulipa.payments import services as payments
from kulipa.payments import tasks
from kulipa.payments.events import mask_payload
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from kulipa.payments.services import PaymentError, ReversalNotAllowed

logger = logging.getLogger("kulipa.backoffice")

Action = StaffAction.Action
StaffUser = AbstractBaseUser | AnonymousUser | None
"""``request.user``, or ``None`` for the command line."""

PERM_RECHECK = "backoffice.recheck_payment"
PERM_REVERSE = "backoffice.reverse_payment"
PERM_RESOLVE = "backoffice.resolve_attention"
PERM_FORCE_CONFIRM = "backoffice.force_confirm_payment"
PERM_EXPORT = "backoffice.export_payments"


class ReasonRequired(ReversalNotAllowed, ValueError):
    """A staff action that changes money or an order was asked for without saying why. ``str()`` is translated."""


# --- who may ----------------------------------------------------------------------------------------------------
def staff_can(user: StaffUser, *perms: str) -> bool:
    """Whether ``user`` holds every one of ``perms`` (nobody — ``None`` — holds any: the command line names the
    staff member it acts as). For showing or hiding buttons; the actions below check again themselves."""
    if user is None:
        return False
    has_perm = getattr(user, "has_perm", None)
    return bool(user.is_active and has_perm is not None and all(has_perm(p) for p in perms))


def _require(user: StaffUser, *perms: str) -> None:
    if not staff_can(user, *perms):
        raise PermissionDenied(_("Não tem permissão para esta acção."))


def _actor(user: StaffUser, actor_name: str) -> tuple[User | None, str]:
    if user is None:
        if not actor_name.strip():
            raise ValueError("an action without a user names its operator in actor_name, e.g. 'cli:<os user>'")
        return None, actor_name.strip()[:150]
    name = actor_name.strip() or user.get_username()
    return (user if isinstance(user, User) else None), name[:150]


def _reason(text: str, message: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ReasonRequired(message)
    return text


# --- what it looked like ----------------------------------------------------------------------------------------
def _amount(value: Decimal) -> str:
    return f"{Decimal(value):.2f}"


def _order_facts(order: Order) -> dict[str, Any]:
    return {"order": order.short_reference, "status": order.status, "payment_status": order.payment_status}


def _attempt_facts(attempt: PaymentAttempt) -> dict[str, Any]:
    return {
        "attempt": attempt.third_party_reference,
        "state": attempt.state,
        "amount": _amount(attempt.amount),
        "reversed": _amount(payments.reversed_total(attempt_id=attempt.pk)),
        "transaction_id": attempt.transaction_id,
        "msisdn": attempt.msisdn,
    }


def _reversal_facts(reversal: Reversal) -> dict[str, Any]:
    return {
        "reversal": reversal.reference,
        "reversal_state": reversal.state,
        "reversal_amount": _amount(reversal.amount),
        "restock": reversal.restock,
        "external": reversal.external,
    }


def _item_facts(item: AttentionItem) -> dict[str, Any]:
    return {"attention": item.kind, "resolved": item.resolved_at is not None, "resolution": item.resolution}


def _record(
    *,
    actor: User | None,
    actor_name: str,
    action: str,
    reason: str = "",
    order: Order | None = None,
    attempt: PaymentAttempt | None = None,
    reversal: Reversal | None = None,
    attention: AttentionItem | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> StaffAction:
    entry = StaffAction.objects.create(
        actor=actor,
        actor_name=actor_name,
        action=action,
        order=order,
        attempt=attempt,
        reversal=reversal,
        attention=attention,
        reason=reason,
        before=mask_payload(before or {}),
        after=mask_payload(after or {}),
    )
    logger.info("staff %s by %s: order %s %s", action, actor_name, order and order.short_reference, reason)
    return entry


def _reversal_ids(attempt_id: int) -> set[int]:
    return set(Reversal.objects.filter(attempt_id=attempt_id).values_list("pk", flat=True))


def _item_locked(item_id: int) -> AttentionItem:
    """The item, read again after locking its order (1), so two people acting on it are serialised."""
    order_id = AttentionItem.objects.values_list("order_id", flat=True).get(pk=item_id)
    if order_id is not None:
        locks.order_lock(order_id)
    return AttentionItem.objects.select_related("order", "attempt").get(pk=item_id)


# --- the actions ------------------------------------------------------------------------------------------------
def staff_recheck(*, user: StaffUser, order: Order, actor_name: str = "") -> int | None:
    """Ask M-Pesa again about the order's latest sent attempt (a forced status query, queued after commit; the
    answer is applied by the worker as any other). Permission ``recheck_payment``. Returns the attempt's id, or
    ``None`` when there is nothing to ask about (no attempt was ever sent)."""
    _require(user, PERM_RECHECK)
    actor, name = _actor(user, actor_name)
    with transaction.atomic():
        locked = locks.order_lock(order.pk)
        attempt_id = payments.order_payment_recheck(order=locked)
        attempt = PaymentAttempt.objects.get(pk=attempt_id) if attempt_id is not None else None
        before = {**_order_facts(locked), **(_attempt_facts(attempt) if attempt is not None else {})}
        _record(
            actor=actor,
            actor_name=name,
            action=Action.RECHECK,
            order=locked,
            attempt=attempt,
            before=before,
            after={"status_query": "queued" if attempt is not None else "nothing to ask"},
        )
        if attempt_id is not None:
            tasks.queue_reconcile(attempt_id, force=True)
    return attempt_id


def staff_recheck_now(*, user: StaffUser, attempt_id: int, actor_name: str = "") -> payments.ReconcileOutcome:
    """:func:`staff_recheck` for the command line, which may wait: ask M-Pesa about the attempt now (forced status
    query, outside any transaction), apply the answer, and audit it with what changed. Not for a web request."""
    _require(user, PERM_RECHECK)
    actor, name = _actor(user, actor_name)
    attempt = PaymentAttempt.objects.select_related("order").get(pk=attempt_id)
    before = {**_order_facts(attempt.order), **_attempt_facts(attempt)}
    outcome = payments.attempt_reconcile(attempt_id=attempt.pk, force=True, source="staff_recheck")
    attempt = PaymentAttempt.objects.select_related("order").get(pk=attempt_id)
    _record(
        actor=actor,
        actor_name=name,
        action=Action.RECHECK,
        order=attempt.order,
        attempt=attempt,
        before=before,
        after={**_order_facts(attempt.order), **_attempt_facts(attempt), "status_query": outcome.value},
    )
    return outcome


def staff_reverse(
    *,
    user: StaffUser,
    attempt_id: int,
    amount: Decimal | None,
    reason: str,
    restock: bool | None,
    actor_name: str = "",
    queue: bool = True,
    request_key: str | None = None,
) -> Reversal:
    """Give back ``amount`` (``None``: all that is left) of a paid attempt through the M-Pesa API. Permission
    ``reverse_payment``; ``reason`` required (:class:`ReasonRequired`). The reversal is stored REQUESTED with its
    own reference and sent by the worker after commit (``queue=False``: the caller sends it itself, as the command
    line does). The reversal of an earlier post of the same form (``request_key``), or one of this attempt still
    open, is returned instead, and nothing is written (double click).
    Raises ``ReversalNotAllowed`` (not paid, no M-Pesa transaction id — use the portal —, more than is left)."""
    _require(user, PERM_REVERSE)
    actor, name = _actor(user, actor_name)
    reason = _reason(reason, _("Indique o motivo da reversão."))
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        known = _reversal_ids(attempt.pk)
        before = {**_order_facts(order), **_attempt_facts(attempt)}
        reversal = payments.payment_reversal_request(
            attempt_id=attempt.pk,
            requested_by=name,
            reason=reason,
            amount=amount,
            restock=restock,
            request_key=request_key,
        )
        if reversal.pk in known:  # this form was posted before, or one is still open: nothing new
            return reversal
        _record(
            actor=actor,
            actor_name=name,
            action=Action.REVERSE,
            reason=reason,
            order=order,
            attempt=attempt,
            reversal=reversal,
            before=before,
            after={**_attempt_facts(attempt), **_reversal_facts(reversal)},
        )
        if queue:
            tasks.queue_reversal(reversal.pk)
    return reversal


def staff_record_portal_reversal(
    *,
    user: StaffUser,
    attempt_id: int,
    portal_reference: str,
    amount: Decimal,
    reason: str,
    actor_name: str = "",
    restock: bool | None = None,
) -> Reversal:
    """Record a reversal finance already did in the M-Pesa portal (for a payment without a transaction id, which the
    API cannot reverse). Permission ``reverse_payment``; ``reason`` required. The order and stock follow at once
    (``payments.payment_reversal_record_external``; ``restock`` defaults to yes for the whole paying payment).
    Recording the same portal reference again returns the first record and writes nothing."""
    _require(user, PERM_REVERSE)
    actor, name = _actor(user, actor_name)
    reason = _reason(reason, _("Indique o motivo da reversão."))
    with transaction.atomic():
        order, attempt = locks.order_and_attempt_lock(attempt_id)
        known = set(Reversal.objects.filter(attempt_id=attempt.pk).values_list("pk", flat=True))
        before = {**_order_facts(order), **_attempt_facts(attempt)}
        reversal = payments.payment_reversal_record_external(
            attempt_id=attempt.pk,
            portal_reference=portal_reference,
            amount=amount,
            recorded_by=name,
            reason=reason,
            restock=restock,
        )
        if reversal.pk in known:
            return reversal
        order.refresh_from_db()
        _record(
            actor=actor,
            actor_name=name,
            action=Action.PORTAL_REVERSAL,
            reason=reason,
            order=order,
            attempt=attempt,
            reversal=reversal,
            before=before,
            after={**_order_facts(order), **_attempt_facts(attempt), **_reversal_facts(reversal)},
        )
    return reversal


def staff_force_confirm(*, user: StaffUser, item_id: int, note: str, actor_name: str = "") -> Order:
    """Keep and deliver the order of an attention item (it is NEEDS_ATTENTION: paid late without stock, or a
    different amount): the order becomes PAID, its stock sold if still there — otherwise the order's note says
    "sem stock: encomendar/repor" —, and the item is resolved. Permissions ``force_confirm_payment`` and
    ``resolve_attention``; ``note`` required. Raises ``PaymentError`` when the item is resolved already or its
    order is not NEEDS_ATTENTION."""
    _require(user, PERM_FORCE_CONFIRM, PERM_RESOLVE)
    actor, name = _actor(user, actor_name)
    note = _reason(note, _("Indique porque confirma esta encomenda."))
    with transaction.atomic():
        item = _item_locked(item_id)
        if item.resolved_at is not None:
            raise PaymentError(_("Este caso já foi resolvido por %(who)s.") % {"who": item.resolved_by})
        if item.order is None:
            raise PaymentError(_("Este caso não tem encomenda."))
        before = {**_order_facts(item.order), **_item_facts(item)}
        order = payments.order_force_confirm(order_id=item.order.pk, confirmed_by=name, note=note)
        item = payments.attention_resolve(
            item_id=item.pk, resolved_by=name, resolution=_("Encomenda confirmada: %(note)s") % {"note": note}
        )
        decision = (
            PaymentEvent.objects.filter(order_id=order.pk, kind=PaymentEvent.Kind.DECISION)
            .order_by("-id")
            .values_list("payload", flat=True)
            .first()
        ) or {}
        _record(
            actor=actor,
            actor_name=name,
            action=Action.FORCE_CONFIRM,
            reason=note,
            order=order,
            attempt=item.attempt,
            attention=item,
            before=before,
            after={**_order_facts(order), **_item_facts(item), "stock": decision.get("stock")},
        )
    return order


def staff_dismiss(*, user: StaffUser, item_id: int, note: str, actor_name: str = "") -> AttentionItem:
    """Close an attention item without touching money or the order (nothing to do, or done elsewhere), saying why.
    Permission ``resolve_attention``; ``note`` required. An item already resolved is returned as it is."""
    _require(user, PERM_RESOLVE)
    actor, name = _actor(user, actor_name)
    note = _reason(note, _("Indique porque arquiva este caso."))
    with transaction.atomic():
        item = _item_locked(item_id)
        if item.resolved_at is not None:
            return item
        before = _item_facts(item)
        item = payments.attention_resolve(item_id=item.pk, resolved_by=name, resolution=note)
        _record(
            actor=actor,
            actor_name=name,
            action=Action.DISMISS,
            reason=note,
            order=item.order,
            attempt=item.attempt,
            attention=item,
            before=before,
            after=_item_facts(item),
        )
    return item


def staff_resolve_by_reversal(
    *,
    user: StaffUser,
    item_id: int,
    amount: Decimal | None,
    reason: str,
    restock: bool | None,
    actor_name: str = "",
) -> Reversal:
    """Resolve an attention item by giving its payment back (a duplicate, a late payment without stock, ...): the
    reversal is requested as by :func:`staff_reverse` and the item resolved ("reversão <ref> pedida"). If the
    reversal later fails, the payments app raises a new item. Permissions ``reverse_payment`` and
    ``resolve_attention``; ``reason`` required."""
    _require(user, PERM_REVERSE, PERM_RESOLVE)
    actor, name = _actor(user, actor_name)
    reason = _reason(reason, _("Indique o motivo da reversão."))
    with transaction.atomic():
        item = _item_locked(item_id)
        if item.resolved_at is not None:
            raise PaymentError(_("Este caso já foi resolvido por %(who)s.") % {"who": item.resolved_by})
        if item.attempt_id is None:
            raise ReversalNotAllowed(_("Este caso não indica um pagamento a reverter."))
        order, attempt = locks.order_and_attempt_lock(item.attempt_id)
        known = _reversal_ids(attempt.pk)
        before = {**_order_facts(order), **_attempt_facts(attempt), **_item_facts(item)}
        reversal = payments.payment_reversal_request(
            attempt_id=attempt.pk, requested_by=name, reason=reason, amount=amount, restock=restock
        )
        item = payments.attention_resolve(
            item_id=item.pk,
            resolved_by=name,
            resolution=_("Reversão %(ref)s pedida: %(reason)s") % {"ref": reversal.reference, "reason": reason},
        )
        _record(
            actor=actor,
            actor_name=name,
            action=Action.REVERSE,
            reason=reason,
            order=order,
            attempt=attempt,
            reversal=reversal,
            attention=item,
            before=before,
            after={**_attempt_facts(attempt), **_reversal_facts(reversal), **_item_facts(item)},
        )
        if reversal.pk not in known:
            tasks.queue_reversal(reversal.pk)
    return reversal


def staff_export_logged(*, user: StaffUser, since: date, until: date, rows: int, actor_name: str = "") -> None:
    """Audit an export of payments (``selectors.payments_export_rows``); call it before handing the file out.
    Permission ``export_payments`` (so calling it first is also the server's check)."""
    _require(user, PERM_EXPORT)
    actor, name = _actor(user, actor_name)
    _record(
        actor=actor,
        actor_name=name,
        action=Action.EXPORT,
        after={"since": since.isoformat(), "until": until.isoformat(), "rows": rows},
    )
