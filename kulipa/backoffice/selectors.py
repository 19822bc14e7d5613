"""What staff read about payments: an order's whole story in one list, labels, what can still be reversed, where to
find a payment in the M-Pesa portal, today's figures and the accountants' export. Reads only; no M-Pesa call.

Every string returned is ready to show (translated, amounts formatted, MSISDNs masked); nothing internal (session
keys, checkout tokens, raw gateway bodies) is exposed.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Max, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from kulipa.backoffice.models import StaffAction
from kulipa.core.money import format_mzn
from kulipa.orders.models import Order
from kulipa.payments.models import AttentionItem, PaymentAttempt, PaymentEvent, Reversal
from mpesa import mask_msisdn
from mpesa.codes import lookup as ins_lookup

MAPUTO = ZoneInfo("Africa/Maputo")
"""Days, "today" and the export's dates are Mozambican."""

State = PaymentAttempt.State
R = Reversal.State
PaymentStatus = Order.PaymentStatus
ZERO = Decimal("0.00")

_FULL_MSISDN = re.compile(r"(?<![\d*])(?:\+?258)?8[2-7]\d{7}(?![\d*])")
_HIDDEN_KEYS = frozenset(
    {"raw", "session_key", "checkout_token", "public_id", "headers", "body", "elapsed", "token", "password"}
)


def _masked(text: str) -> str:
    """``text`` with any full Mozambican mobile number in it masked (they are stored masked already; this is the
    last guard before a screen)."""
    return _FULL_MSISDN.sub(lambda m: mask_msisdn(m.group(0)), text)


def _local(at: datetime | None) -> str:
    return timezone.localtime(at, MAPUTO).strftime("%Y-%m-%d %H:%M:%S") if at is not None else ""


def _yes_no(value: bool) -> str:
    return _("sim") if value else _("não")


def _clean(detail: dict[str, str]) -> dict[str, str]:
    return {label: _masked(value) for label, value in detail.items() if value not in ("", None)}


# --- labels -----------------------------------------------------------------------------------------------------
def _labels() -> dict[str, str]:
    """Payload and audit keys in words (the keys themselves stay as stored when not listed)."""
    return {
        "order": _("encomenda"),
        "status": _("estado da encomenda"),
        "payment_status": _("estado do pagamento"),
        "attempt": _("pagamento"),
        "state": _("estado"),
        "amount": _("montante"),
        "reversed": _("revertido"),
        "transaction_id": _("ID da transacção M-Pesa"),
        "conversation_id": _("ID da conversa"),
        "third_party_reference": _("ThirdPartyReference"),
        "transaction_reference": _("TransactionReference"),
        "msisdn": _("número"),
        "code": _("código"),
        "description": _("descrição"),
        "outcome": _("resultado"),
        "decision": _("decisão"),
        "reason": _("motivo"),
        "source": _("origem"),
        "reversal": _("reversão"),
        "reversal_reference": _("reversão"),
        "reversal_state": _("estado da reversão"),
        "reversal_amount": _("montante revertido"),
        "restock": _("repor stock"),
        "external": _("no portal M-Pesa"),
        "attention": _("caso"),
        "resolved": _("resolvido"),
        "resolution": _("resolução"),
        "stock": _("stock"),
        "status_query": _("consulta de estado"),
        "transaction_status": _("estado na M-Pesa"),
        "requested_by": _("pedida por"),
        "recorded_by": _("registada por"),
        "confirmed_by": _("confirmada por"),
        "note": _("nota"),
        "since": _("de"),
        "until": _("até"),
        "rows": _("linhas"),
    }


_VALUE_LABELS: dict[str, dict[str, Any]] = {
    "status": dict(Order.Status.choices),
    "order_status": dict(Order.Status.choices),
    "payment_status": dict(PaymentStatus.choices),
    "state": dict(State.choices),
    "previous_state": dict(State.choices),
    "reversal_state": dict(R.choices),
    "attention": dict(AttentionItem.Kind.choices),
}


def _value(key: str, value: Any, *, reversal: bool = False) -> str:
    if value is None or value == "" or value == {} or value == []:
        return ""
    if isinstance(value, bool):
        return _yes_no(value)
    labels = _VALUE_LABELS["reversal_state"] if reversal and key == "state" else _VALUE_LABELS.get(key)
    if labels is not None and isinstance(value, str) and value in labels:
        return str(labels[value])
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)[:300]
    return str(value)


def _facts(data: dict[str, Any]) -> str:
    """An audit ``before``/``after`` in one line: "estado: pago; montante: 200.00"."""
    labels = _labels()
    parts = [f"{labels.get(k, k.replace('_', ' '))}: {_value(k, v)}" for k, v in data.items() if _value(k, v)]
    return "; ".join(parts)


def _ins(code: str, description: str) -> str:
    if not code:
        return ""
    entry = ins_lookup(code)
    text = description or (entry.description if entry is not None else "")
    return f"{code} — {text}" if text else code


def payment_status_label(order: Order) -> str:
    """The order's payment state in words for staff: "pago", "devolvido em parte (50,00 MT de 200,00 MT)",
    "devolvido", "a verificar o pagamento", ..."""
    if order.payment_status == PaymentStatus.PARTIALLY_REFUNDED:
        paying = PaymentAttempt.objects.filter(order_id=order.pk, pays_order=True).first()
        if paying is not None:
            back = _reversed(paying.pk)
            return _("devolvido em parte (%(back)s de %(paid)s)") % {
                "back": format_mzn(back),
                "paid": format_mzn(paying.amount),
            }
    return str(order.get_payment_status_display())


# --- finding a payment ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Found:
    """What a reference named: the order, and the payment (and reversal) when it named one."""

    order: Order
    attempt: PaymentAttempt | None = None
    reversal: Reversal | None = None


_SHORT_REFERENCE = re.compile(r"K(\d{1,12})")


def find_reference(*, reference: str) -> Found | None:
    """The payment, order or reversal ``reference`` names — in this order: a payment's ThirdPartyReference, an
    order's short reference (``K0000042``), an M-Pesa transaction id of a payment, a reversal's reference (or
    portal reference) or transaction id. ``None`` when it names nothing."""
    raw = "".join(reference.split())
    ref = raw.upper()
    if not ref:
        return None
    attempt = PaymentAttempt.objects.select_related("order").filter(third_party_reference=ref).first()
    if attempt is not None:
        return Found(order=attempt.order, attempt=attempt)
    short = _SHORT_REFERENCE.fullmatch(ref)
    if short is not None:
        order = Order.objects.filter(pk=int(short.group(1))).first()
        if order is not None:
            return Found(order=order)
    attempt = (
        PaymentAttempt.objects.select_related("order")
        .filter(Q(transaction_id=raw) | Q(transaction_id__iexact=raw))
        .exclude(transaction_id="")
        .first()
    )
    if attempt is not None:
        return Found(order=attempt.order, attempt=attempt)
    reversal = (
        Reversal.objects.select_related("attempt__order")
        .filter(Q(reference=ref) | (Q(transaction_id__iexact=raw) & ~Q(transaction_id="")))
        .first()
    )
    if reversal is not None:
        return Found(order=reversal.attempt.order, attempt=reversal.attempt, reversal=reversal)
    return None


# --- what can be done with a payment ----------------------------------------------------------------------------
def _reversed(attempt_id: int, states: tuple[str, ...] = (R.SUCCEEDED,)) -> Decimal:
    total = Reversal.objects.filter(attempt_id=attempt_id, state__in=states).aggregate(s=Sum("amount"))["s"]
    return total or ZERO


def reversible_amount(*, attempt: PaymentAttempt) -> Decimal:
    """What may still be given back of ``attempt``: paid − reversed − reversals still open (0 unless it was paid)."""
    if attempt.state != State.SUCCEEDED:
        return ZERO
    left = attempt.amount - _reversed(attempt.pk, (R.SUCCEEDED, *Reversal.OPEN))
    return max(left, ZERO)


def can_reverse_by_api(*, attempt: PaymentAttempt) -> bool:
    """The API can reverse it: it was paid and the shop knows its M-Pesa transaction id. Otherwise finance reverses
    it in the M-Pesa portal (:func:`portal_lookup`) and records it."""
    return attempt.state == State.SUCCEEDED and bool(attempt.transaction_id)


def portal_lookup(*, attempt: PaymentAttempt) -> dict[str, str]:
    """What finance needs to find the payment in the M-Pesa portal, label → value (the number masked but for its
    last digits, the time in Maputo)."""
    at = attempt.finished_at or attempt.push_started_at or attempt.created_at
    return _clean(
        {
            _("Número"): mask_msisdn(attempt.msisdn),
            _("Montante"): format_mzn(attempt.amount),
            _("Data e hora (Maputo)"): _local(at),
            "ThirdPartyReference": attempt.third_party_reference,
            "TransactionReference": attempt.order.short_reference,
            "ConversationID": attempt.conversation_id,
            _("ID da transacção M-Pesa"): attempt.transaction_id,
        }
    )


# --- the timeline -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    kind: str
    """``"attempt"``, ``"event"``, ``"reversal"`` or ``"staff"``."""
    title: str
    detail: dict[str, str]
    """Label → value, both ready to show."""


_KIND_ORDER = {"attempt": 0, "event": 1, "reversal": 2, "staff": 3}


def _attempt_entry(attempt: PaymentAttempt) -> TimelineEntry:
    detail = {
        _("Referência (ThirdPartyReference)"): attempt.third_party_reference,
        _("Estado"): str(attempt.get_state_display()),
        _("Resposta M-Pesa"): _ins(attempt.result_code, attempt.result_description),
        _("ID da transacção M-Pesa"): attempt.transaction_id,
        _("ID da conversa"): attempt.conversation_id,
        _("Montante"): format_mzn(attempt.amount),
        _("Número"): mask_msisdn(attempt.msisdn),
        _("Terminou em"): _local(attempt.finished_at),
    }
    if attempt.state == State.SUCCEEDED:
        detail[_("Paga a encomenda")] = _yes_no(attempt.pays_order)
    return TimelineEntry(
        at=attempt.created_at,
        kind="attempt",
        title=_("Pagamento %(ref)s: %(state)s")
        % {"ref": attempt.third_party_reference, "state": attempt.get_state_display()},
        detail=_clean(detail),
    )


def _event_entry(event: PaymentEvent) -> TimelineEntry:
    labels = _labels()
    detail = {_("Resumo"): event.summary}
    payload = event.payload if isinstance(event.payload, dict) else {}
    for key, value in payload.items():
        if key in _HIDDEN_KEYS:
            continue
        detail[labels.get(key, key.replace("_", " "))] = _value(
            key, value, reversal=event.kind == PaymentEvent.Kind.REVERSAL
        )
    return TimelineEntry(
        at=event.created_at, kind="event", title=capfirst(str(event.get_kind_display())), detail=_clean(detail)
    )


def _reversal_entry(reversal: Reversal) -> TimelineEntry:
    if reversal.external:
        title = _("Reversão no portal M-Pesa %(ref)s: %(state)s")
    else:
        title = _("Reversão %(ref)s: %(state)s")
    detail = {
        _("Referência"): reversal.reference,
        _("Montante"): format_mzn(reversal.amount),
        _("Estado"): str(reversal.get_state_display()),
        _("Feita no portal M-Pesa"): _yes_no(reversal.external),
        _("Repor stock"): _yes_no(reversal.restock),
        _("Motivo"): reversal.reason,
        _("Por"): reversal.requested_by,
        _("Resposta M-Pesa"): _ins(reversal.result_code, reversal.result_description),
        _("ID da transacção M-Pesa"): reversal.transaction_id,
        _("Terminou em"): _local(reversal.finished_at),
    }
    return TimelineEntry(
        at=reversal.created_at,
        kind="reversal",
        title=title % {"ref": reversal.reference, "state": reversal.get_state_display()},
        detail=_clean(detail),
    )


def _staff_entry(action: StaffAction) -> TimelineEntry:
    detail = {
        _("Quem"): action.actor_name,
        _("Acção"): str(action.get_action_display()),
        _("Motivo"): action.reason,
        _("Antes"): _facts(action.before if isinstance(action.before, dict) else {}),
        _("Depois"): _facts(action.after if isinstance(action.after, dict) else {}),
    }
    return TimelineEntry(
        at=action.created_at,
        kind="staff",
        title=_("%(action)s por %(who)s") % {"action": capfirst(action.get_action_display()), "who": action.actor_name},
        detail=_clean(detail),
    )


def order_timeline(*, order: Order) -> list[TimelineEntry]:
    """Everything that happened to the order's payments, oldest first: each attempt (when it was created: its
    reference, state, M-Pesa answer, ids, amount, number), each event of the payment log, each reversal, and each
    staff action. Four queries."""
    keyed: list[tuple[tuple[datetime, int, int], TimelineEntry]] = []
    for attempt in PaymentAttempt.objects.filter(order_id=order.pk):
        keyed.append(((attempt.created_at, _KIND_ORDER["attempt"], attempt.pk), _attempt_entry(attempt)))
    for event in PaymentEvent.objects.filter(order_id=order.pk):
        keyed.append(((event.created_at, _KIND_ORDER["event"], event.pk), _event_entry(event)))
    for reversal in Reversal.objects.filter(attempt__order_id=order.pk):
        keyed.append(((reversal.created_at, _KIND_ORDER["reversal"], reversal.pk), _reversal_entry(reversal)))
    for action in StaffAction.objects.filter(order_id=order.pk):
        keyed.append(((action.created_at, _KIND_ORDER["staff"], action.pk), _staff_entry(action)))
    keyed.sort(key=lambda pair: pair[0])
    return [entry for _key, entry in keyed]


# --- today ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TodaySummary:
    day: date
    """Today in Maputo."""
    paid_total: Decimal
    """Money confirmed today (every succeeded payment, duplicates included)."""
    paid_count: int
    pending: int
    """Payments in flight now (queued, on the phone, awaiting the callback); unknown ones are counted apart."""
    unknown: int
    """Payments of today whose result is not known (unknown) or was never confirmed (unconfirmed)."""
    needs_attention: int
    """Open attention items."""
    reversed_total: Decimal
    """Money given back today."""


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=MAPUTO)
    return start, datetime.combine(day + timedelta(days=1), time.min, tzinfo=MAPUTO)


def today_summary(*, now: datetime | None = None) -> TodaySummary:
    """Today's figures (the day in Africa/Maputo)."""
    day = timezone.localtime(now or timezone.now(), MAPUTO).date()
    start, end = _day_bounds(day)
    paid = PaymentAttempt.objects.filter(state=State.SUCCEEDED, finished_at__gte=start, finished_at__lt=end)
    totals = paid.aggregate(total=Sum("amount"))
    reversed_today = Reversal.objects.filter(state=R.SUCCEEDED, finished_at__gte=start, finished_at__lt=end)
    return TodaySummary(
        day=day,
        paid_total=totals["total"] or ZERO,
        paid_count=paid.count(),
        pending=PaymentAttempt.objects.filter(state__in=[State.QUEUED, State.PUSHING, State.AWAITING_CALLBACK]).count(),
        unknown=PaymentAttempt.objects.filter(
            state__in=[State.UNKNOWN, State.UNCONFIRMED], created_at__gte=start, created_at__lt=end
        ).count(),
        needs_attention=AttentionItem.objects.filter(resolved_at__isnull=True).count(),
        reversed_total=reversed_today.aggregate(total=Sum("amount"))["total"] or ZERO,
    )


# --- the accountants' export ------------------------------------------------------------------------------------
EXPORT_COLUMNS = (
    "encomenda",
    "third_party_reference",
    "transacao_mpesa",
    "montante",
    "revertido",
    "estado",
    "pago_em",
    "revertido_em",
    "numero",
)


def _amount(value: Decimal) -> str:
    return f"{value:.2f}"


def _payment_rows(start: datetime, end: datetime) -> Iterator[tuple[datetime, int, dict[str, str]]]:
    succeeded = Q(reversals__state=R.SUCCEEDED)
    attempts: QuerySet[PaymentAttempt] = (
        PaymentAttempt.objects.filter(state=State.SUCCEEDED, finished_at__gte=start, finished_at__lt=end)
        .select_related("order")
        .annotate(
            back=Sum("reversals__amount", filter=succeeded), back_at=Max("reversals__finished_at", filter=succeeded)
        )
        .order_by("finished_at", "id")
    )
    for attempt in attempts:
        back: Decimal = getattr(attempt, "back", None) or ZERO
        if back >= attempt.amount:
            state = _("devolvido")
        elif back > 0:
            state = _("devolvido em parte")
        else:
            state = _("pago")
        if not attempt.pays_order:
            state = _("%(state)s (pagamento em duplicado)") % {"state": state}
        assert attempt.finished_at is not None
        yield (
            attempt.finished_at,
            0,
            {
                "encomenda": attempt.order.short_reference,
                "third_party_reference": attempt.third_party_reference,
                "transacao_mpesa": attempt.transaction_id,
                "montante": _amount(attempt.amount),
                "revertido": _amount(back),
                "estado": state,
                "pago_em": _local(attempt.finished_at),
                "revertido_em": _local(getattr(attempt, "back_at", None)),
                "numero": mask_msisdn(attempt.msisdn),
            },
        )


def _reversal_rows(start: datetime, end: datetime) -> Iterator[tuple[datetime, int, dict[str, str]]]:
    reversals = (
        Reversal.objects.filter(state=R.SUCCEEDED, finished_at__gte=start, finished_at__lt=end)
        .select_related("attempt__order")
        .order_by("finished_at", "id")
    )
    for reversal in reversals:
        attempt = reversal.attempt
        assert reversal.finished_at is not None
        yield (
            reversal.finished_at,
            1,
            {
                "encomenda": attempt.order.short_reference,
                "third_party_reference": reversal.reference,
                "transacao_mpesa": reversal.transaction_id or (reversal.reference if reversal.external else ""),
                "montante": _amount(-reversal.amount),
                "revertido": _amount(reversal.amount),
                "estado": _("reversão no portal M-Pesa") if reversal.external else _("reversão"),
                "pago_em": _local(attempt.finished_at),
                "revertido_em": _local(reversal.finished_at),
                "numero": mask_msisdn(attempt.msisdn),
            },
        )


def payments_export_rows(*, since: date, until: date) -> Iterator[dict[str, str]]:
    """The payments and reversals settled from ``since`` to ``until`` (both included, Maputo days), in time order,
    to match against the M-Pesa statement: one row per succeeded payment (``revertido`` = all of it given back so
    far) and one per succeeded reversal (``montante`` negative; ``third_party_reference`` is the reversal's own).
    Columns :data:`EXPORT_COLUMNS`; amounts with a dot and two decimals; times ``YYYY-MM-DD HH:MM:SS`` in Maputo."""
    start, _end = _day_bounds(since)
    _start, end = _day_bounds(until)
    merged = heapq.merge(_payment_rows(start, end), _reversal_rows(start, end), key=lambda row: row[:2])
    for _at, _kind, row in merged:
        yield row
