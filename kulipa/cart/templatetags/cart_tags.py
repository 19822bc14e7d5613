"""``{% load cart_tags %}`` then ``{% cart_count %}``: units in the visitor's cart (no database query)."""

from __future__ import annotations

from typing import Any

from django import template

from kulipa.cart.services import Cart

register = template.Library()


@register.simple_tag(takes_context=True)
def cart_count(context: dict[str, Any]) -> int:
    request = context.get("request")
    session = getattr(request, "session", None)
    return len(Cart(session=session)) if session is not None else 0
