"""Read-only payment questions for the order page and its JSON status endpoint. No M-Pesa call, no writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from kulipa.orders.models import Order
from kulipa.payments import conf
from kulipa.payments.conf import mpesa_int, mpesa_str
from kulipa.payments.models import PaymentAttempt
from mpesa import mask_msisdn

State = PaymentAttempt.State
OrderStatus = Order.Status
PaymentStatus = Order.PaymentStatus

RETRYABLE_PAYMENT_STATUSES = (
    PaymentStatus.NOT_SENT,
    PaymentStatus.UNCONFIRMED,
    PaymentStatus.DECLINED,
    PaymentStatus.INSUFFICIENT_FUNDS,
    PaymentStatus.TIMED_OUT,
    PaymentStatus.FAILED,
)


@dataclass(frozen=True, slots=True)
class PaymentView:
    """What the customer sees about an order's payment."""

    status: str
    payment_status: str
    message: str
    status_label: str
    """Order state and payment state in words, e.g. "Paga · Pago"."""
    can_retry: bool
    can_cancel: bool
    """The customer may give up the order (awaiting payment, nothing in flight)."""
    seconds_left: int | None
    """Seconds left in the push window while the customer can still answer on the phone, else ``None``."""
    paid: bool
    final: bool
    """Nothing will change by itself any more (the page stops polling)."""
    attempt_id: int | None
    msisdn: str
    masked_msisdn: str
    phone_url: str

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "payment_status": self.payment_status,
            "message": self.message,
            "status_label": self.status_label,
            "can_retry": self.can_retry,
            "can_cancel": self.can_cancel,
            "seconds_left": self.seconds_left,
            "paid": self.paid,
            "final": self.final,
            "attempt_id": self.attempt_id,
        }


def push_fits(*, order: Order, now: datetime) -> bool:
    """A new push still fits before the hold cap (checkout + ``HOLD_CAP_MINUTES``): the stock stays held for the
    whole push window. Past that, "try again" is not offered (a new order is)."""
    return now + conf.push_window() <= order.created_at + conf.hold_cap()


def attempt_next_check_at(*, attempt_id: int) -> datetime | None:
    """When an in-flight attempt should next be asked about (None: it is not in flight, or nothing is due)."""
    return (
        PaymentAttempt.objects.filter(pk=attempt_id, state__in=PaymentAttempt.IN_FLIGHT)
        .values_list("next_check_at", flat=True)
        .first()
    )


def attempt_latest(*, order: Order) -> PaymentAttempt | None:
    """The order's newest attempt with its order as of the same statement (one indexed query on ``order_id``).

    ``attempt.order`` is read afresh by the join, not the ``order`` passed in: an attempt and its order change in
    one transaction, so only rows from one statement agree with each other. An order read earlier (the viewer
    check) and an attempt read after a payment committed would say "nothing in flight, not paid": the page would
    stop asking and keep "check your phone" on screen."""
    return PaymentAttempt.objects.filter(order_id=order.pk).select_related("order").order_by("-id").first()


def _message(order: Order, attempt: PaymentAttempt | None) -> str:
    if order.status == OrderStatus.PAID:
        return _("Pagamento recebido. Obrigado! A sua encomenda está confirmada.")
    if order.status == OrderStatus.NEEDS_ATTENTION:
        return _("Pagamento recebido — a loja precisa de verificar a encomenda e vai contactá-lo.")
    if order.status == OrderStatus.CANCELLED:
        if order.payment_status == PaymentStatus.REFUNDED:
            return _("Esta encomenda foi cancelada e o pagamento foi devolvido.")
        return _("Esta encomenda foi cancelada.")
    if order.status == OrderStatus.EXPIRED:
        return _("Esta encomenda expirou sem pagamento; os produtos já não estão reservados.")
    ps = order.payment_status
    if ps == PaymentStatus.PENDING:
        return _("Verifique o seu telemóvel: introduza o PIN M-Pesa para confirmar o pagamento.")
    if ps == PaymentStatus.VERIFYING:
        return _("Estamos a verificar o pagamento com a M-Pesa. Não pague de novo; esta página actualiza sozinha.")
    if ps == PaymentStatus.DECLINED:
        return _("O pagamento foi cancelado no telemóvel. Pode tentar de novo.")
    if ps == PaymentStatus.INSUFFICIENT_FUNDS:
        return _("Saldo M-Pesa insuficiente. Carregue a conta ou tente com outro número.")
    if ps == PaymentStatus.TIMED_OUT:
        return _("O pedido de pagamento não foi respondido a tempo. Pode tentar de novo.")
    if ps == PaymentStatus.FAILED:
        return _("O pagamento falhou. Pode tentar de novo, se quiser com outro número.")
    if ps == PaymentStatus.NOT_SENT:
        return _(
            "Não foi possível contactar a M-Pesa e o pedido não foi enviado: nada foi cobrado. "
            "Tente de novo dentro de momentos."
        )
    if ps == PaymentStatus.UNCONFIRMED:
        return _(
            "A M-Pesa não confirmou este pagamento a tempo. Se o dinheiro não saiu da sua conta, pode tentar de novo. "
            "Se saiu, não se preocupe: a loja verifica e devolve qualquer pagamento em duplicado."
        )
    return _("A preparar o pagamento…")


def order_payment_view(*, order: Order) -> PaymentView:
    """The payment state of ``order`` for its page: one query for the latest attempt (and its order), nothing else."""
    attempt = attempt_latest(order=order)
    if attempt is not None:
        order = attempt.order  # consistent with the attempt (see attempt_latest)
    now = timezone.now()
    awaiting = order.status == OrderStatus.AWAITING_PAYMENT
    in_flight = attempt is not None and attempt.in_flight
    can_retry = (
        awaiting
        and not in_flight
        and order.expires_at > now
        and push_fits(order=order, now=now)
        and (attempt is None or order.payment_status in RETRYABLE_PAYMENT_STATUSES)
    )
    seconds_left: int | None = None
    if awaiting and attempt is not None and attempt.state in (State.QUEUED, State.PUSHING, State.AWAITING_CALLBACK):
        if attempt.push_deadline is not None:
            seconds_left = max(0, int((attempt.push_deadline - now).total_seconds()))
        else:
            seconds_left = mpesa_int("PUSH_WINDOW_SECONDS", 90)
    msisdn = attempt.msisdn if attempt is not None else order.msisdn
    phone_base = mpesa_str("SANDBOX_PHONE_URL")
    return PaymentView(
        status=order.status,
        payment_status=order.payment_status,
        message=_message(order, attempt),
        status_label=f"{capfirst(order.get_status_display())} · {capfirst(order.get_payment_status_display())}",
        can_retry=can_retry,
        can_cancel=awaiting and not in_flight,
        seconds_left=seconds_left,
        paid=order.paid_at is not None,
        final=not (awaiting and in_flight),
        attempt_id=attempt.pk if attempt is not None else None,
        msisdn=msisdn,
        masked_msisdn=mask_msisdn(msisdn) if msisdn else "",
        # The simulator's phone page only ever holds prompts of numbers ending in 00 (the others answer alone).
        phone_url=f"{phone_base}{msisdn}" if phone_base and msisdn.endswith("00") else "",
    )
