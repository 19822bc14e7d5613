from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _


class Product(models.Model):
    """Something the shop sells. ``stock_on_hand`` is what is physically there; what a customer can still buy
    is that minus the live reservations (see ``kulipa.inventory.selectors``)."""

    name = models.CharField(_("nome"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=220, unique=True)
    description = models.TextField(_("descrição"), blank=True)
    price = models.DecimalField(
        _("preço (MT)"), max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))]
    )
    stock_on_hand = models.PositiveIntegerField(_("stock físico"), default=0)
    image = models.CharField(_("imagem"), max_length=300, blank=True, help_text=_("Caminho em static/"))
    is_active = models.BooleanField(_("activo"), default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("produto")
        verbose_name_plural = _("produtos")
        constraints = [models.CheckConstraint(condition=models.Q(price__gt=0), name="product_price_positive")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:product_detail", kwargs={"slug": self.slug})
