"""Payment attempts, the append-only event log, and raw inbound callbacks.

An order has many attempts (one per push); each attempt has a ThirdPartyReference generated and stored before the
call. At most one attempt per order is in flight at a time (partial unique constraint). Every field here is written
only by ``kulipa.payments.services`` (``editable=False`` everywhere; the admin is read-only).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

IN_FLIGHT_STATES = ["queued", "pushing", "awaiting_callback", "unknown"]


class PaymentAttempt(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", _("em fila")
        PUSHING = "pushing", _("pedido enviado ao telemóvel")
        AWAITING_CALLBACK = "awaiting_callback", _("a aguardar resposta da M-Pesa")
        UNKNOWN = "unknown", _("resultado desconhecido")
        SUCCEEDED = "succeeded", _("pago")
        DECLINED = "declined", _("cancelado pelo cliente")
        INSUFFICIENT_FUNDS = "insufficient_funds", _("saldo insuficiente")
        TIMED_OUT = "timed_out", _("não respondido a tempo")
        FAILED = "failed", _("falhou")

    class Reversal(models.TextChoices):
        NONE = "", _("—")
        PROPOSED = "proposed", _("reversão proposta")
        REQUESTED = "requested", _("reversão pedida")
        SENDING = "sending", _("reversão enviada")
        DONE = "done", _("revertido")
        FAILED = "failed", _("reversão falhou")
        UNKNOWN = "unknown", _("reversão com resultado desconhecido")

    IN_FLIGHT = (State.QUEUED, State.PUSHING, State.AWAITING_CALLBACK, State.UNKNOWN)
    FINAL_FAILURES = (State.DECLINED, State.INSUFFICIENT_FUNDS, State.TIMED_OUT, State.FAILED)

    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="payment_attempts")
    third_party_reference = models.CharField(max_length=20, unique=True, editable=False)
    msisdn = models.CharField(max_length=12, editable=False)
    amount = models.DecimalField(max_digits=12, decimal_places=2, editable=False)
    mode = models.CharField(max_length=8, editable=False)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED, editable=False)
    result_code = models.CharField(max_length=16, blank=True, editable=False)
    result_description = models.CharField(max_length=300, blank=True, editable=False)
    conversation_id = models.CharField(max_length=64, blank=True, db_index=True, editable=False)
    transaction_id = models.CharField(max_length=40, blank=True, db_index=True, editable=False)
    push_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    push_deadline = models.DateTimeField(null=True, blank=True, editable=False)
    """When the customer's PIN window closes (push start + PUSH_WINDOW_SECONDS)."""
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    """When the reconciler should next look at this attempt (None: nothing to do)."""
    check_count = models.PositiveIntegerField(default=0, editable=False)
    reversal_state = models.CharField(
        max_length=12, choices=Reversal.choices, default=Reversal.NONE, blank=True, editable=False
    )
    reversal_reference = models.CharField(max_length=20, null=True, blank=True, unique=True, editable=False)
    """ThirdPartyReference of the reversal request, stored before it is sent (a reversal is sent once)."""
    reversal_transaction_id = models.CharField(max_length=40, blank=True, editable=False)
    reversed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("tentativa de pagamento")
        verbose_name_plural = _("tentativas de pagamento")
        constraints = [
            models.UniqueConstraint(
                fields=["order"],
                condition=models.Q(state__in=IN_FLIGHT_STATES),
                name="one_attempt_in_flight_per_order",
            ),
            models.UniqueConstraint(
                fields=["transaction_id"],
                condition=~models.Q(transaction_id=""),
                name="one_attempt_per_mpesa_transaction",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="attempt_amount_positive"),
        ]
        indexes = [models.Index(fields=["state", "next_check_at"], name="attempt_state_next_check")]

    def __str__(self) -> str:
        return self.third_party_reference

    @property
    def in_flight(self) -> bool:
        return self.state in self.IN_FLIGHT


class PaymentEvent(models.Model):
    """Append-only history: what was sent, what came back, what was decided. MSISDNs are stored masked.

    Rows are inserted, never updated or deleted (``save`` refuses an update, ``delete`` refuses; the admin has
    no change or delete permission).
    """

    class Kind(models.TextChoices):
        REQUEST = "request", _("pedido")
        RESPONSE = "response", _("resposta")
        CALLBACK = "callback", _("callback")
        STATUS_QUERY = "status_query", _("consulta de estado")
        REVERSAL = "reversal", _("reversão")
        DECISION = "decision", _("decisão")

    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="payment_events")
    attempt = models.ForeignKey(PaymentAttempt, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    summary = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("evento de pagamento")
        verbose_name_plural = _("eventos de pagamento")

    def __str__(self) -> str:
        return f"{self.kind}: {self.summary}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise RuntimeError("payment events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise RuntimeError("payment events are append-only")


class CallbackDelivery(models.Model):
    """One inbound POST to /api/mpesa/callback, stored raw in its own transaction before anything acts on it."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    remote_ip = models.GenericIPAddressField(null=True, blank=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    attempt = models.ForeignKey(
        PaymentAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="callbacks"
    )
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = _("callback recebido")
        verbose_name_plural = _("callbacks recebidos")

    def __str__(self) -> str:
        return f"#{self.pk} {self.received_at:%Y-%m-%d %H:%M:%S} {self.outcome or '—'}"
