"""Readiness checks: can this process do its work right now?

* ``database``: ``SELECT 1`` on the default connection (in the probing thread: the same connection the requests use).
* ``queue``: one cheap call to the queue's storage (``kulipa.payments.tasks.queue_pending_count``: Redis ZCARD or a
  SQLite COUNT), so a web process that cannot hand work to the workers is taken out of rotation.
* ``gateway``: a TCP connect to the configured M-Pesa host and C2B port, with a short timeout, its result kept for
  ``READYZ_GATEWAY_CACHE_SECONDS`` so frequent probes do not hammer the gateway. Only when
  ``settings.READYZ_GATEWAY`` is ``"required"`` (its failure makes the process not ready) or ``"report"`` (shown,
  never fails readiness); ``"off"`` skips it.

The queue and gateway calls run in a helper thread and are waited for at most their timeout, so a black-holed
address cannot hang the probe; at most one such call per check is outstanding at any time (a probe arriving while
the previous call still hangs waits on that same call instead of starting another).

Results name the check and say ``ok``/``fail``/``skipped`` with an error *kind* (an exception class name, or
``refused``/``timeout``); never an address, a URL or a message that could carry a credential. Details go to the
log, once per change of state.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

Outcome = Literal["ok", "fail", "skipped"]
GATEWAY_MODES = ("required", "report", "off")
QUEUE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    result: Outcome
    required: bool = True
    """Whether a failure of this check makes the process not ready."""
    ms: float | None = None
    error: str = ""
    cached: bool = False

    @property
    def blocks(self) -> bool:
        return self.required and self.result == "fail"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"result": self.result}
        if self.ms is not None:
            data["ms"] = round(self.ms, 1)
        if self.error:
            data["error"] = self.error
        if not self.required and self.result != "skipped":
            data["required"] = False
        if self.cached:
            data["cached"] = True
        return data


# --- running a blocking call with a bound ---------------------------------------------------------------------
class _Bounded:
    """One blocking call at a time, in a daemon thread, waited for at most a timeout."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._future: Future[Any] | None = None

    def run(self, fn: Callable[[], _T], *, timeout: float) -> _T:
        """``fn()``'s value; raises what it raised, or ``TimeoutError`` after ``timeout`` seconds (the call then
        goes on in its thread, and the next ``run`` waits on it instead of starting another)."""
        with self._lock:
            future = self._future
            if future is None or future.done():
                future = self._future = Future()
                threading.Thread(target=self._call, args=(future, fn), name=f"check-{self.name}", daemon=True).start()
        try:
            value: _T = future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"{self.name}: no answer within {timeout}s") from None
        return value

    @staticmethod
    def _call(future: Future[Any], fn: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():  # pragma: no cover - never cancelled
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)


_queue_call = _Bounded("queue")
_gateway_call = _Bounded("gateway")
_last_results: dict[str, Outcome] = {}
_log_lock = threading.Lock()


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "name not resolved"
    if isinstance(exc, ImproperlyConfigured):
        return "misconfigured"
    return type(exc).__name__


def _timed(name: str, fn: Callable[[], object], *, required: bool = True) -> CheckResult:
    started = time.monotonic()
    try:
        fn()
    except Exception as exc:
        result = CheckResult(name, "fail", required, (time.monotonic() - started) * 1000, _kind(exc))
        _log_change(result, exc)
        return result
    result = CheckResult(name, "ok", required, (time.monotonic() - started) * 1000)
    _log_change(result, None)
    return result


def _log_change(result: CheckResult, exc: BaseException | None) -> None:
    """Log a check going bad (with the exception) or recovering, once per change, not on every probe."""
    with _log_lock:
        before = _last_results.get(result.name)
        _last_results[result.name] = result.result
    if before == result.result:
        return
    if result.result == "fail":
        logger.warning("readiness: %s failing (%s): %r", result.name, result.error, exc)
    elif before == "fail":
        logger.info("readiness: %s ok again", result.name)


# --- the checks -----------------------------------------------------------------------------------------------
def check_database() -> CheckResult:
    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    return _timed("database", select_one)


def queue_pending_count() -> int:
    """Tasks waiting in the queue's storage, asked with a bound (``QUEUE_TIMEOUT_SECONDS``). Raises when the
    storage does not answer."""
    from kulipa.payments import tasks

    return _queue_call.run(tasks.queue_pending_count, timeout=QUEUE_TIMEOUT_SECONDS)


def check_queue() -> CheckResult:
    return _timed("queue", queue_pending_count)


def gateway_address() -> tuple[str, int]:
    """Host and C2B port of the configured gateway (``settings.MPESA``, as the clients see it)."""
    from kulipa.payments import gateway

    config = gateway.build_config()
    host = urlsplit(config.host_url).hostname
    if not host:  # pragma: no cover - Config refuses such a base URL
        raise ImproperlyConfigured("the M-Pesa base URL has no host")
    return host, config.ports.c2b


@dataclass(frozen=True, slots=True)
class _Seen:
    at: float
    result: CheckResult


_gateway_seen: dict[tuple[str, int], _Seen] = {}
_gateway_lock = threading.Lock()


def check_gateway() -> CheckResult:
    mode = str(getattr(settings, "READYZ_GATEWAY", "off"))
    if mode not in GATEWAY_MODES:
        raise ImproperlyConfigured(f"READYZ_GATEWAY must be one of {GATEWAY_MODES}, not {mode!r}")
    if mode == "off":
        return CheckResult("gateway", "skipped")
    required = mode == "required"
    try:
        address = gateway_address()
    except ImproperlyConfigured as exc:
        misconfigured = CheckResult("gateway", "fail", required, error=_kind(exc))
        _log_change(misconfigured, exc)
        return misconfigured
    timeout = float(getattr(settings, "READYZ_GATEWAY_TIMEOUT_SECONDS", 2.0))
    keep = float(getattr(settings, "READYZ_GATEWAY_CACHE_SECONDS", 10.0))
    with _gateway_lock:
        seen = _gateway_seen.get(address)
        if seen is not None and time.monotonic() - seen.at < keep:
            cached = seen.result
            return CheckResult("gateway", cached.result, required, cached.ms, cached.error, cached=True)

    def connect() -> None:
        socket.create_connection(address, timeout=timeout).close()

    # The helper thread's own socket timeout covers the connect; the extra second covers a slow name lookup.
    result = _timed("gateway", lambda: _gateway_call.run(connect, timeout=timeout + 1.0), required=required)
    with _gateway_lock:
        _gateway_seen[address] = _Seen(time.monotonic(), result)
    return result


def readiness() -> list[CheckResult]:
    """Every check, in order: database, queue, gateway."""
    return [check_database(), check_queue(), check_gateway()]


def forget_gateway() -> None:
    """Drop the remembered gateway results (tests; a changed configuration is a new address anyway)."""
    with _gateway_lock:
        _gateway_seen.clear()
