"""URL helpers for links to pages another app may not have registered yet."""

from __future__ import annotations

from typing import Any

from django.urls import NoReverseMatch, reverse


def url_or_default(*, name: str, default: str = "", kwargs: dict[str, Any] | None = None) -> str:
    """``reverse(name)``, or ``default`` when no such URL is registered (e.g. ``orders:checkout``)."""
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        return default
