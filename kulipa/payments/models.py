"""Payment attempts, the append-only event log, and raw inbound callbacks.

An order has many attempts (one per push); each attempt has a ThirdPartyReference generated and stored before the
call. At most one attempt per order, and one per phone number, is in flight at a time (partial unique
constraints). Every field here is written only by ``kulipa.payments.services`` (``editable=False`` everywhere; the
admin is read-only).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _

IN_FLIGHT_STATES = ["queued", "pushing", "awaiting_callback", "unknown"]
REJECTED_BODY_BYTES = 2048


class PaymentAttempt(models.Model):
    """One C2B push. States and who moves them: ``kulipa.payments.transitions.ATTEMPT`` (docs/payments.md)."""

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
        NOT_SENT = "not_sent", _("não enviado")
        UNCONFIRMED = "unconfirmed", _("sem confirmação da M-Pesa")

    IN_FLIGHT = (State.QUEUED, State.PUSHING, State.AWAITING_CALLBACK, State.UNKNOWN)
    FINAL_FAILURES = (
        State.DECLINED,
        State.INSUFFICIENT_FUNDS,
        State.TIMED_OUT,
        State.FAILED,
        State.NOT_SENT,
        State.UNCONFIRMED,
    )

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
    """When the reconciler should next ask the gateway about this attempt (None: nothing left to ask). Set on
    in-flight attempts, and on closed ones that could still complete (the tail schedule)."""
    check_count = models.PositiveIntegerField(default=0, editable=False)
    pays_order = models.BooleanField(default=False, editable=False)
    """This payment is the one that paid the order (a duplicate payment of a paid order is not)."""
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
            # A phone shows one payment prompt at a time, whoever asked for it (docs/payments.md "Abuse limits").
            models.UniqueConstraint(
                fields=["msisdn"],
                condition=models.Q(state__in=IN_FLIGHT_STATES),
                name="one_attempt_in_flight_per_msisdn",
            ),
            models.UniqueConstraint(
                fields=["transaction_id"],
                condition=~models.Q(transaction_id=""),
                name="one_attempt_per_mpesa_transaction",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="attempt_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["state", "next_check_at"], name="attempt_state_next_check"),
            # /metrics counts the attempts of the last day by state from this index alone (kulipa.observability).
            models.Index(fields=["created_at", "state"], name="attempt_created_state"),
        ]

    def __str__(self) -> str:
        return self.third_party_reference

    @property
    def in_flight(self) -> bool:
        return self.state in self.IN_FLIGHT


class Reversal(models.Model):
    """Money of a paid attempt given back, in full or in part. Its ThirdPartyReference is stored before the call;
    it is sent once (``requested → sending`` is a conditional update). States: ``transitions.REVERSAL``. A reversal
    done in the M-Pesa portal is recorded ``external``, created SUCCEEDED."""

    class State(models.TextChoices):
        REQUESTED = "requested", _("pedida")
        SENDING = "sending", _("enviada")
        UNKNOWN = "unknown", _("resultado desconhecido")
        SUCCEEDED = "succeeded", _("devolvido")
        FAILED = "failed", _("falhou")

    OPEN = (State.REQUESTED, State.SENDING, State.UNKNOWN)

    attempt = models.ForeignKey(PaymentAttempt, on_delete=models.PROTECT, related_name="reversals", editable=False)
    reference = models.CharField(max_length=20, unique=True, editable=False)
    request_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    """The one-time key of the form that asked for it: the same form posted twice is one reversal, even after the
    first one finished (a double click on a fast reversal)."""
    amount = models.DecimalField(max_digits=12, decimal_places=2, editable=False)
    restock = models.BooleanField(default=False, editable=False)
    """Return the order's sold units to stock when this reversal succeeds."""
    reason = models.CharField(max_length=300, blank=True, editable=False)
    requested_by = models.CharField(max_length=150, blank=True, editable=False)
    external = models.BooleanField(default=False, editable=False)
    """Done by finance in the M-Pesa portal (the API could not: no transaction id) and recorded here: created
    SUCCEEDED, never sent; ``reference`` is the portal's reference."""
    state = models.CharField(max_length=12, choices=State.choices, default=State.REQUESTED, editable=False)
    result_code = models.CharField(max_length=16, blank=True, editable=False)
    result_description = models.CharField(max_length=300, blank=True, editable=False)
    transaction_id = models.CharField(max_length=40, blank=True, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    check_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("reversão")
        verbose_name_plural = _("reversões")
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="reversal_amount_positive"),
            models.UniqueConstraint(
                fields=["attempt"],
                condition=models.Q(state__in=["requested", "sending", "unknown"]),
                name="one_open_reversal_per_attempt",
            ),
        ]

    def __str__(self) -> str:
        return self.reference


class AttentionItem(models.Model):
    """Something a person must look at: a payment that cannot be kept, a record stuck past its age.

    Raised by the services and the sweep (never twice while open: ``key`` is unique among open items); resolved by
    staff with a note."""

    class Kind(models.TextChoices):
        DUPLICATE_PAYMENT = "duplicate_payment", _("pagamento em duplicado")
        LATE_PAYMENT = "late_payment", _("pagamento tardio sem stock")
        AMOUNT_MISMATCH = "amount_mismatch", _("montante diferente do total")
        REVERSED_AT_GATEWAY = "reversed_at_gateway", _("revertido na M-Pesa")
        STUCK = "stuck", _("parado há demasiado tempo")
        REVERSAL_FAILED = "reversal_failed", _("reversão falhou")
        CALLBACK_FAILED = "callback_failed", _("callback não processado")

    kind = models.CharField(max_length=24, choices=Kind.choices, editable=False)
    key = models.CharField(max_length=80, editable=False)
    order = models.ForeignKey("orders.Order", null=True, blank=True, on_delete=models.PROTECT, related_name="attention")
    attempt = models.ForeignKey(PaymentAttempt, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(editable=False)
    propose_reversal = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolved_by = models.CharField(max_length=150, blank=True, editable=False)
    resolution = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("a precisar de atenção")
        verbose_name_plural = _("a precisar de atenção")
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(resolved_at__isnull=True), name="one_open_item")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.reason[:60]}"


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
    """One inbound POST to /api/mpesa/callback, stored raw in its own transaction before anything acts on it.

    States: ``transitions.DELIVERY``. A rejected delivery (malformed, unknown reference) keeps only
    ``REJECTED_BODY_BYTES`` of its body and is counted in :class:`CallbackRejection`."""

    class State(models.TextChoices):
        QUEUED = "queued", _("em fila")
        PROCESSING = "processing", _("a processar")
        RETRY = "retry", _("a repetir")
        DONE = "done", _("processado")
        REJECTED = "rejected", _("recusado")
        GAVE_UP = "gave_up", _("desistido")

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    remote_ip = models.GenericIPAddressField(null=True, blank=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    attempt = models.ForeignKey(
        PaymentAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="callbacks"
    )
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED)
    tries = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = _("callback recebido")
        verbose_name_plural = _("callbacks recebidos")
        indexes = [models.Index(fields=["state", "next_try_at"], name="delivery_state_next_try")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.received_at:%Y-%m-%d %H:%M:%S} {self.state}"


class CallbackRejection(models.Model):
    """How many deliveries were rejected, per day and reason (the rows themselves are kept capped)."""

    day = models.DateField()
    reason = models.CharField(max_length=40)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("callbacks recusados")
        verbose_name_plural = _("callbacks recusados")
        constraints = [models.UniqueConstraint(fields=["day", "reason"], name="one_rejection_count_per_day_reason")]
