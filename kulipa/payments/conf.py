"""Typed access to ``settings.MPESA``.

``settings.MPESA`` is a plain dict of mixed values (the type checker sees ``dict[str, object]``); these accessors
return the type each caller needs and refuse values that cannot be one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def mpesa_conf() -> Mapping[str, object]:
    """The current ``settings.MPESA`` (read each call: tests override it)."""
    conf: Mapping[str, object] = settings.MPESA
    return conf


def _number(key: str, value: object) -> int | float | str | Decimal:
    if isinstance(value, int | float | str | Decimal):
        return value
    raise ImproperlyConfigured(f"MPESA[{key!r}] must be a number, not {value!r}")


def mpesa_int(key: str, default: int) -> int:
    """``int(settings.MPESA.get(key, default))``."""
    return int(_number(key, mpesa_conf().get(key, default)))


def mpesa_float(key: str, default: float) -> float:
    """``float(settings.MPESA.get(key, default))``."""
    return float(_number(key, mpesa_conf().get(key, default)))


def mpesa_str(key: str) -> str:
    """``settings.MPESA[key]`` as text; unset or empty → ``""``."""
    return str(mpesa_conf().get(key) or "")


def mpesa_str_list(key: str) -> list[str]:
    """``settings.MPESA[key]`` as a list of strings; unset or empty → ``[]``.

    A bare string is refused: iterating it would yield its characters.
    """
    value = mpesa_conf().get(key) or []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ImproperlyConfigured(f"MPESA[{key!r}] must be a list of strings, not {value!r}")
    return [str(item) for item in value]
