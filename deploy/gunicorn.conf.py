"""Gunicorn for production: ``gunicorn -c deploy/gunicorn.conf.py`` (the app is ``kulipa.wsgi:application``).

Processes × threads, sized by the cores this process may use; every value can be overridden from the environment
(``GUNICORN_*``, documented in .env.example). How to size it, with the measurements behind the defaults and the
database-connection arithmetic: docs/scaling.md.

* ``gthread`` workers: a request that waits on the database gives its core to another thread, and a worker killed
  by ``max_requests`` or a deploy finishes the requests it holds first.
* ``kill -HUP <master>`` is the graceful restart of a deploy: new workers start with the new code (the app is not
  preloaded in the master, so they import it afresh), old ones finish their requests within ``graceful_timeout``.
  ``kill -TERM`` stops gracefully, ``kill -INT``/``-QUIT`` at once.
* Logs go to standard error (the access log to standard output), every timestamp in UTC (ISO 8601, ``Z``), the
  access log with the worker's pid and no query string (search terms and phone numbers stay out of it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Any

from gunicorn import glogging


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def usable_cores() -> int:
    """The cores this process may run on (CPU affinity, e.g. ``taskset`` or a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


CORES = usable_cores()

wsgi_app = "kulipa.wsgi:application"
# Behind a reverse proxy (nginx, a load balancer) on the same machine; several addresses: comma-separated.
bind = [address.strip() for address in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",") if address]

worker_class = "gthread"
# One process per core, 8 threads each: measured on 2 cores (docs/scaling.md), 2 × cores + 1 processes served no
# more and took 2.3 times the memory; 8 threads served more than 4 in 20 of 22 rounds (the page waits on PostgreSQL).
workers = _int("GUNICORN_WORKERS", CORES)
threads = _int("GUNICORN_THREADS", 8)

# No request waits on M-Pesa (pushes, queries and reversals run in the huey workers): a request busy 30 s is stuck.
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)  # longer than none, shorter than the proxy's upstream keepalive timeout

# Restart each worker after about this many requests (slow leaks never pile up); the jitter keeps the workers from
# restarting all at once.
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 200)

# The workers' heartbeat files: in memory, so a slow or full disk never makes the master think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - a directory, not a temp file

# Which proxies may set X-Forwarded-Proto (https) for gunicorn; the client address is kulipa.core.net's business.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

proc_name = "kulipa-web"
# gunicornc's control socket only when asked for (a path): two servers on one machine would share the default one.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # a path, "-" (stdout) or empty (none)
# time, client, forwarded-for, method, path (no query string), status, bytes, milliseconds, worker pid, user agent
access_log_format = '%(t)s %(h)s fwd=%({x-forwarded-for}i)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms pid=%(p)s "%(a)s"'


class UtcLogger(glogging.Logger):
    """Gunicorn's logger with every timestamp in UTC: the master runs in the machine's time zone and the workers in
    Django's TIME_ZONE once the app is loaded; the log of one server must not mix the two."""

    datefmt = "%Y-%m-%dT%H:%M:%SZ"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if handler.formatter is not None:
                    handler.formatter.converter = time.gmtime

    def now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


logger_class = UtcLogger


def when_ready(server: Any) -> None:
    server.log.info("kulipa: %s workers × %s threads (%s usable cores)", workers, threads, CORES)


def worker_abort(worker: Any) -> None:
    """A worker past ``timeout`` gets SIGABRT: log where each of its threads was, to find what hung."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            stack = "".join(traceback.format_stack(frame))
            worker.log.error("worker %s timed out; thread %s:\n%s", worker.pid, thread.name, stack)
