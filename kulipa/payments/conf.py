"""Typed access to ``settings.MPESA`` and the payment timings derived from it.

``settings.MPESA`` is a plain dict of mixed values (the type checker sees ``dict[str, object]``); these accessors
return the type each caller needs and refuse values that cannot be one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MIN_C2B_READ_TIMEOUT = 120.0
"""Answers after more than 90 s have been measured (reference §5.1): a push is never given up on sooner."""


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


# --- payment timings (settings.MPESA, read on each call: tests override them) ----------------------------------
SYNC = "sync"
ASYNC = "async"

QUEUED_SEND_LIMIT = timedelta(seconds=30)
"""A push still queued this long after the customer asked is not sent late: the customer is offered "try again"."""
RECONCILE_LEASE = timedelta(seconds=60)
"""How long a reconciler owns an attempt it claimed before another may ask."""
PUSH_RESULT_SLACK = timedelta(seconds=30)
HOLD_CAP = timedelta(minutes=30)
"""No hold on stock outlives checkout + this, however many pushes and retries (``HOLD_CAP_MINUTES``)."""
RETRY_GRACE = timedelta(minutes=2)
"""After a failed push the hold shrinks back to the reservation window, but leaves at least this to retry."""
TAIL_FIRST = timedelta(minutes=5)
TAIL_HORIZON = timedelta(hours=48)
"""Closed attempts that could still complete are asked again at 5 min, 15 min, 45 min, … until this age."""
STUCK_AFTER = timedelta(hours=2)
"""An attempt, reversal or callback delivery not final after this is raised for a person (and still repaired)."""
REVERSAL_STUCK_SENDING = timedelta(minutes=5)
REQUEUE_AFTER = timedelta(seconds=60)
"""A record waiting for the queue (a REQUESTED reversal, a QUEUED delivery) this long is queued again."""
DELIVERY_MAX_TRIES = 8


def payment_mode() -> str:
    mode = str(mpesa_conf().get("MODE", SYNC)).lower()
    if mode not in (SYNC, ASYNC):
        raise ImproperlyConfigured(f"MPESA MODE must be 'sync' or 'async', not {mode!r}")
    return mode


def push_window() -> timedelta:
    return timedelta(seconds=mpesa_float("PUSH_WINDOW_SECONDS", 90))


def reconcile_margin() -> timedelta:
    return timedelta(seconds=mpesa_float("RECONCILE_MARGIN_SECONDS", 300))


def c2b_read_timeout() -> timedelta:
    return timedelta(seconds=max(MIN_C2B_READ_TIMEOUT, mpesa_float("C2B_READ_TIMEOUT_SECONDS", 150)))


def reconcile_backoff(check_count: int) -> timedelta:
    """10 s, 20 s, 40 s … capped at 10 min (``RECONCILE_BACKOFF_SECONDS`` / ``RECONCILE_BACKOFF_MAX_SECONDS``)."""
    base = mpesa_float("RECONCILE_BACKOFF_SECONDS", 10)
    cap = mpesa_float("RECONCILE_BACKOFF_MAX_SECONDS", 600)
    return timedelta(seconds=min(cap, base * (2 ** min(check_count, 20))))


def callback_grace() -> timedelta:
    """After the push window, how long to wait for a callback before asking ourselves (``CALLBACK_GRACE_SECONDS``)."""
    return timedelta(seconds=mpesa_float("CALLBACK_GRACE_SECONDS", 10))


def callbacks_authenticated() -> bool:
    """Whether callbacks are authenticated by configuration (``CALLBACK_PATH_TOKEN`` or ``CALLBACK_ALLOWED_IPS``)."""
    conf = mpesa_conf()
    return bool(conf.get("CALLBACK_PATH_TOKEN")) or bool(conf.get("CALLBACK_ALLOWED_IPS"))


def reservation_window() -> timedelta:
    return timedelta(minutes=int(settings.RESERVATION_MINUTES))


def hold_cap() -> timedelta:
    """``settings.HOLD_CAP_MINUTES`` (env ``KULIPA_HOLD_CAP_MINUTES``), default :data:`HOLD_CAP`."""
    return timedelta(minutes=float(getattr(settings, "HOLD_CAP_MINUTES", HOLD_CAP.total_seconds() / 60)))
