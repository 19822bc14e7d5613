"""The staff audit log: who did what to which payment, why, and what it changed.

A :class:`StaffAction` is written by ``kulipa.backoffice.services`` in the same transaction as the change it records
(the payments services make the change; this app never writes an order, attempt or reversal itself). Rows are
append-only, like ``PaymentEvent``: ``save`` refuses an update and ``delete`` refuses.

The staff permissions (``Meta.permissions``) live here; the groups "suporte" and "financeiro" that hold them are
created by migration 0002 (``kulipa.backoffice.roles``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class StaffAction(models.Model):
    class Action(models.TextChoices):
        RECHECK = "recheck", _("verificação na M-Pesa")
        REVERSE = "reverse", _("reversão pedida")
        PORTAL_REVERSAL = "portal_reversal", _("reversão registada (portal M-Pesa)")
        FORCE_CONFIRM = "force_confirm", _("encomenda confirmada à mão")
        DISMISS = "dismiss", _("caso arquivado")
        EXPORT = "export", _("exportação de pagamentos")

    created_at = models.DateTimeField(_("quando"), auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("quem"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text=_("Vazio para um operador na linha de comandos."),
    )
    actor_name = models.CharField(_("nome de quem"), max_length=150)
    action = models.CharField(_("acção"), max_length=20, choices=Action.choices)
    order = models.ForeignKey(
        "orders.Order",
        verbose_name=_("encomenda"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="staff_actions",
    )
    attempt = models.ForeignKey(
        "payments.PaymentAttempt",
        verbose_name=_("tentativa de pagamento"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    reversal = models.ForeignKey(
        "payments.Reversal",
        verbose_name=_("reversão"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    attention = models.ForeignKey(
        "payments.AttentionItem",
        verbose_name=_("caso a precisar de atenção"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    reason = models.TextField(_("motivo"), blank=True)
    before = models.JSONField(_("antes"), default=dict, blank=True)
    after = models.JSONField(_("depois"), default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = _("acção da equipa")
        verbose_name_plural = _("acções da equipa")
        # Stored as they are (like Django's own "Can add …"), not translated.
        permissions = [
            ("recheck_payment", "Pode verificar pagamentos na M-Pesa"),
            ("reverse_payment", "Pode reverter pagamentos"),
            ("resolve_attention", "Pode resolver casos a precisar de atenção"),
            ("force_confirm_payment", "Pode confirmar à mão uma encomenda a precisar de atenção"),
            ("export_payments", "Pode exportar pagamentos"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name}: {self.get_action_display()}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise RuntimeError("staff actions are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise RuntimeError("staff actions are append-only")
