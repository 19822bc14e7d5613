"""``{% load backoffice_tags %}``: today's figures for the admin index."""

from __future__ import annotations

from datetime import date, timedelta

from django import template
from django.utils import timezone

from kulipa.backoffice import selectors

register = template.Library()


@register.simple_tag
def today_summary() -> selectors.TodaySummary:
    """``{% today_summary as summary %}``: paid total and count, pending, unknown, needs attention (Maputo day)."""
    return selectors.today_summary()


@register.simple_tag
def today_range(days: int = 7) -> tuple[date, date]:
    """``{% today_range as range %}``: the last ``days`` days up to today (Maputo), the export's default."""
    today = timezone.localdate(timezone=selectors.MAPUTO)
    return today - timedelta(days=days - 1), today
