"""The home page's product cards, each rendered once per distinct content and reused.

Rendering 20 cards through the template engine (an ``{% include %}`` or two per card, a reversed URL, a money
format, a plural translation) was most of the home page's CPU. A card's HTML is a pure function of a few values —
the product's name, slug, image and price, the units available, the active language, the page's path (the form's
``next``), the script prefix, the static URL and the line cap — so it is memoised per process under exactly those
values: a card is never shown stale, because any change of one of them (a price edited, a unit reserved) is a
different key and renders anew. The per-request part, the CSRF token, is rendered as a placeholder (random per
process, so no product text can forge it) and replaced with this request's token on the way out.

Bounded: at :data:`MAX_CARDS` entries the memo is emptied (cards are cheap to render again; stock changes make
old keys useless anyway). Thread-safe under gunicorn's threads: dict reads and writes are atomic in CPython, and
two threads rendering the same card at once store the same text.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Sequence

from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.urls import get_script_prefix
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

from kulipa.catalog.selectors import ProductStock

CARD_TEMPLATE = "catalog/_card.html"
MAX_CARDS = 2048
_CSRF_PLACEHOLDER = f"csrf{secrets.token_hex(16)}"
_memo: dict[Hashable, str] = {}


def _key(item: ProductStock, *, language: str, next_url: str) -> Hashable:
    product = item.product
    return (
        product.pk,
        product.name,
        product.slug,
        product.image,
        product.price,
        item.available,
        language,
        next_url,
        get_script_prefix(),
        settings.STATIC_URL,
        settings.MAX_LINE_QUANTITY,
    )


def product_cards(*, request: HttpRequest, items: Sequence[ProductStock]) -> list[SafeString]:
    """The HTML of each item's card (``catalog/_card.html``), with this request's CSRF token in its form."""
    language = get_language() or settings.LANGUAGE_CODE
    next_url = request.get_full_path()
    token = get_token(request) if any(not item.sold_out for item in items) else ""
    cards: list[SafeString] = []
    for item in items:
        key = _key(item, language=language, next_url=next_url)
        html = _memo.get(key)
        if html is None:
            html = render_to_string(
                CARD_TEMPLATE,
                {"item": item, "next_url": next_url, "csrf_token": _CSRF_PLACEHOLDER},
            )
            if len(_memo) >= MAX_CARDS:
                _memo.clear()
            _memo[key] = html
        cards.append(mark_safe(html.replace(_CSRF_PLACEHOLDER, token)))  # noqa: S308 (rendered by the template engine)
    return cards
