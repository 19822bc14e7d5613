"""Log lines: JSON in production, readable text in development, every timestamp in UTC (ISO 8601 with offset).

``kulipa/settings.py`` builds ``LOGGING`` with :func:`logging_config`; one handler on stderr serves the shop, Django,
waitress and huey's consumer (``run_huey`` adds its own local-time handler only when the ``huey`` logger has none,
so it is given ours). Gunicorn configures its loggers itself: point its ``logconfig_dict`` at
:func:`gunicorn_logconfig_dict` so its error and access lines look the same.

Fields of a JSON line: ``time`` (``2026-03-01T09:15:02.123+00:00``), ``level``, ``logger``, ``message``, and any
``extra={...}`` the caller passed (payment state changes carry ``order``, ``reference``, ``outcome``, …; see
``kulipa/payments/transitions.py``). Nothing here masks values: callers log MSISDNs masked and never log secrets.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

TEXT = "text"
JSON = "json"
LOG_FORMATS = (TEXT, JSON)


def utc_timestamp(created: float) -> str:
    """``record.created`` as ISO 8601 in UTC with its offset and milliseconds: ``2026-03-01T09:15:02.123+00:00``."""
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")


class UTCTextFormatter(logging.Formatter):
    """``2026-03-01T09:15:02.123+00:00 INFO kulipa.payments.transitions attempt K… pushing -> succeeded …``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


class UTCJSONFormatter(JsonFormatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and the record's extras."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


FORMATTERS: dict[str, str] = {TEXT: f"{__name__}.UTCTextFormatter", JSON: f"{__name__}.UTCJSONFormatter"}


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """Django's ``LOGGING``: everything to stderr through one formatter (``fmt``: ``text`` or ``json``)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"KULIPA_LOG_FORMAT={fmt!r}: expected 'text' or 'json'")
    handler = {"class": "logging.StreamHandler", "formatter": fmt}
    own = {"handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {name: {"()": path} for name, path in FORMATTERS.items()},
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's defaults add a DEBUG-only console handler and mail_admins; one handler, one format instead.
            "django": {**own, "level": "INFO"},
            "django.server": {**own, "level": "INFO"},
            "django.db.backends": {"level": "WARNING"},
            # run_huey installs its own (local-time) handler when the huey logger has none.
            "huey": {**own, "level": "INFO"},
        },
    }


def gunicorn_logconfig_dict(*, fmt: str = JSON, level: str = "INFO") -> dict[str, Any]:
    """For gunicorn's ``logconfig_dict``: its error and access lines in the shop's format and time zone."""
    config = logging_config(fmt=fmt, level=level)
    own = {"handlers": ["console"], "propagate": False, "level": level}
    config["loggers"].update({"gunicorn.error": own, "gunicorn.access": dict(own)})
    return config
