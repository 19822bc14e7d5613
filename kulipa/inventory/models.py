from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class StockReservation(models.Model):
    """Units of a product held for an order until ``expires_at``.

        Available = on hand − quantity of ACTIVE reservations whose ``expires_at`` is in the future. An expired
        reservation stops counting by itself; the expiry job only tidies up. COMMITTED means the units left the
        shelf (``Product.stock_on_hand`` was decremented when the payment was confirmed); RETURNED means they came back
    (a reversal with restock). States: ``kulipa.inventory.services.RESERVATION``.
    """

    class State(models.TextChoices):
        ACTIVE = "active", _("activa")
        COMMITTED = "committed", _("confirmada")
        RELEASED = "released", _("libertada")
        RETURNED = "returned", _("devolvida ao stock")

    order = models.ForeignKey("orders.Order", on_delete=models.CASCADE, related_name="reservations")
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT, related_name="reservations")
    quantity = models.PositiveIntegerField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.ACTIVE)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("reserva de stock")
        verbose_name_plural = _("reservas de stock")
        indexes = [
            models.Index(fields=["product", "state", "expires_at"]),
            # Active rows only (a few), by expiry: the sweep's tidy-up and /metrics find lapsed holds without
            # reading every reservation ever made.
            models.Index(fields=["expires_at"], condition=models.Q(state="active"), name="reservation_active_expiry"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="one_reservation_per_order_product"),
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="reservation_quantity_positive"),
        ]
