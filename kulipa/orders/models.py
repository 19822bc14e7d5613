"""Orders and their lines. Every field of ``Order`` after creation is written only by ``kulipa.orders.services``
(status through ``order_transition`` and the table ``kulipa.orders.services.ORDER``)."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


def new_public_id() -> str:
    """The order id in URLs: 128 random bits, so a link cannot be guessed."""
    return secrets.token_urlsafe(16)


class Order(models.Model):
    class Status(models.TextChoices):
        AWAITING_PAYMENT = "awaiting_payment", _("a aguardar pagamento")
        PAID = "paid", _("paga")
        NEEDS_ATTENTION = "needs_attention", _("paga — precisa de atenção")
        EXPIRED = "expired", _("expirada")
        CANCELLED = "cancelled", _("cancelada")

    class PaymentStatus(models.TextChoices):
        """What the customer sees on the order page; derived from the latest payment attempt."""

        NOT_STARTED = "not_started", _("por iniciar")
        PENDING = "pending", _("verifique o seu telemóvel")
        VERIFYING = "verifying", _("a verificar o pagamento")
        PAID = "paid", _("pago")
        DECLINED = "declined", _("cancelado no telemóvel")
        INSUFFICIENT_FUNDS = "insufficient_funds", _("saldo insuficiente")
        TIMED_OUT = "timed_out", _("não respondido a tempo")
        FAILED = "failed", _("falhou")
        NOT_SENT = "not_sent", _("M-Pesa indisponível")
        UNCONFIRMED = "unconfirmed", _("sem confirmação da M-Pesa")
        PARTIALLY_REFUNDED = "partially_refunded", _("devolvido em parte")
        REFUNDED = "refunded", _("devolvido")

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    session_key = models.CharField(max_length=64, blank=True, editable=False)
    client_ip = models.GenericIPAddressField(
        null=True, blank=True, editable=False, help_text=_("Endereço de onde foi feita (IPv6: a sua rede /64)")
    )
    checkout_token = models.CharField(
        max_length=64, unique=True, null=True, blank=True, editable=False, help_text=_("Evita encomendas duplicadas")
    )
    customer_name = models.CharField(_("nome"), max_length=120)
    msisdn = models.CharField(_("número M-Pesa"), max_length=12)
    email = models.EmailField(_("e-mail"), blank=True)
    delivery_address = models.TextField(_("morada de entrega"), blank=True)
    total = models.DecimalField(_("total (MT)"), max_digits=12, decimal_places=2, editable=False)
    status = models.CharField(
        _("estado"), max_length=20, choices=Status.choices, default=Status.AWAITING_PAYMENT, editable=False
    )
    payment_status = models.CharField(
        _("estado do pagamento"),
        max_length=20,
        choices=PaymentStatus.choices,
        default=PaymentStatus.NOT_STARTED,
        editable=False,
    )
    paid_at = models.DateTimeField(_("pago em"), null=True, blank=True, editable=False)
    paid_amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, editable=False)
    mpesa_transaction_id = models.CharField(_("ID da transacção M-Pesa"), max_length=40, blank=True, editable=False)
    attention_reason = models.TextField(_("motivo de atenção"), blank=True, editable=False)
    expires_at = models.DateTimeField(_("expira em"), editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("encomenda")
        verbose_name_plural = _("encomendas")
        indexes = [
            models.Index(fields=["status", "expires_at"]),
            # Units held per customer (docs/payments.md "Abuse limits"): only unpaid orders hold stock.
            models.Index(
                fields=["session_key"], condition=models.Q(status="awaiting_payment"), name="order_hold_session"
            ),
            models.Index(fields=["client_ip"], condition=models.Q(status="awaiting_payment"), name="order_hold_ip"),
            models.Index(fields=["msisdn"], condition=models.Q(status="awaiting_payment"), name="order_hold_msisdn"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(total__gt=0), name="order_total_positive")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.public_id[:6]}"

    def get_absolute_url(self) -> str:
        return reverse("orders:detail", kwargs={"public_id": self.public_id})

    @property
    def short_reference(self) -> str:
        """Shown to the customer and sent as the M-Pesa TransactionReference (alphanumeric, ≤ 20)."""
        return f"K{self.pk:07d}"


class OrderLine(models.Model):
    """A product as it was bought: name and unit price are copied so later catalog edits change nothing."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT, related_name="order_lines")
    product_name = models.CharField(max_length=200)
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    quantity = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="one_line_per_order_product"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="line_quantity_positive"),
        ]

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity
