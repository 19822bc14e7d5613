"""``{% load shop_tags %}``: ``{% optional_url "orders:history" as history_url %}`` gives "" when the
URL name is not registered, so templates can link pages of apps that may not exist yet."""

from __future__ import annotations

from django import template

from kulipa.core.urls import url_or_default

register = template.Library()


@register.simple_tag
def optional_url(name: str, default: str = "") -> str:
    return url_or_default(name=name, default=default)
