"""Real worker processes for tests: ``manage.py run_huey`` consumers (and one-off Python children) against the test
database, a huey storage of the test's own (Redis or a SQLite file) and the session's simulator.

The test process writes rows (committed: these tests use ``transactional_db``) and puts messages in the storage;
the children do the work, as in production. Their output goes to files the test reads after they stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from huey.contrib.djhuey import HUEY
from huey.storage import PriorityRedisStorage, SqliteStorage

from mpesa.sandbox import ThreadedSandbox

PROJECT_DIR = Path(__file__).resolve().parents[3]
MANAGE = PROJECT_DIR / "manage.py"


def database_url() -> str:
    """The URL of the database this test uses (pytest-django's test database), for a child process."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(str(db['NAME'])).resolve()}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise NotImplementedError(db["ENGINE"])


def storage_kinds() -> list[str]:
    """The huey storages the children can be tested on here: a SQLite file always, Redis when REDIS_URL is set."""
    return ["sqlite", "redis"] if settings.REDIS_URL else ["sqlite"]


@dataclass
class Queue:
    """A huey storage of this test alone (a unique name on Redis, a fresh file for SQLite): what the children's
    settings build from ``env``, and the test's handle on it to put messages in."""

    kind: str
    env: dict[str, str]
    storage: Any

    @classmethod
    def create(cls, kind: str, tmp_path: Path) -> Queue:
        name = f"kulipa-test-{uuid.uuid4().hex[:12]}"
        if kind == "redis":
            storage: Any = PriorityRedisStorage(name=name, url=settings.REDIS_URL)
            return cls(kind, {"REDIS_URL": settings.REDIS_URL, "HUEY_NAME": name}, storage)
        path = tmp_path / "huey.sqlite3"
        storage = SqliteStorage(name=name, filename=str(path))
        return cls(kind, {"REDIS_URL": "", "HUEY_NAME": name, "HUEY_SQLITE_PATH": str(path)}, storage)

    def put(self, task: Any) -> None:
        """Queue ``task`` (e.g. ``dispatch_payment.s(attempt_id)``) for the children, as ``task()`` would."""
        self.storage.enqueue(HUEY.serialize_task(task), task.priority)

    def flush(self) -> None:
        self.storage.flush_all()


def child_env(*, sandbox: ThreadedSandbox | None, queue: Queue | None, **extra: str) -> dict[str, str]:
    """The environment of a child: this test's database, ``queue``, and the shop pointed at ``sandbox``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MPESA_", "HUEY_", "PYTEST"))}
    env.update(
        DJANGO_SETTINGS_MODULE="kulipa.settings",
        DATABASE_URL=database_url(),
        PYTHONUNBUFFERED="1",
        KULIPA_LOG_LEVEL="INFO",
    )
    if queue is not None:
        env.update(queue.env)
    if sandbox is not None:
        env.update(
            MPESA_API_KEY="",
            MPESA_PUBLIC_KEY=sandbox.public_key,
            MPESA_BASE_URL=sandbox.base_url,
            MPESA_PORT_OFFSET=str(sandbox.port_offset),
            MPESA_SERVICE_PROVIDER_CODE=sandbox.service_provider_code,
            MPESA_MODE="sync",
            MPESA_PUSH_WINDOW_SECONDS="2",
            MPESA_RECONCILE_MARGIN_SECONDS="1",
        )
    env.update(extra)
    return env


@dataclass
class Consumer:
    """One ``manage.py run_huey`` process; its output (huey's log and the app's) in ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> None:
        """SIGINT: huey's graceful stop (running tasks finish); killed if that takes longer than ``timeout``."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def consumers(
    n: int, *, env: dict[str, str], tmp_path: Path, workers: int = 4, periodic: bool = True
) -> Iterator[list[Consumer]]:
    """``n`` consumer processes started together with ``workers`` threads each; stopped (gracefully) on exit."""
    started: list[Consumer] = []
    try:
        for i in range(n):
            log = tmp_path / f"consumer-{i}.log"
            args = [sys.executable, str(MANAGE), "run_huey", "--workers", str(workers), "--worker-type", "thread"]
            args += ["--delay", "0.05", "--max-delay", "0.5"]  # SQLite storage is polled: poll often
            if not periodic:
                args.append("--no-periodic")
            with log.open("wb") as out:
                process = subprocess.Popen(args, env=env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT)
            started.append(Consumer(f"consumer-{i}", process, log))
        yield started
    finally:
        for consumer in started:
            if consumer.alive():
                consumer.process.send_signal(signal.SIGINT)
        for consumer in started:
            consumer.stop()


TAKEN = ("c2b %s for %s: pushed (scenario %s)", "c2b %s for %s: %s at once")
REFUSED = "%s rejected: %s (third party reference %r)"


@dataclass
class C2BRequests:
    """Every C2B request the in-process simulator handled, by ThirdPartyReference, read from its log lines
    (mpesa/sandbox/operations.py): a push taken or answered at once (``TAKEN``) or refused (``REFUSED``, e.g.
    INS-10: the reference was used before)."""

    by_reference: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


class _C2BHandler(logging.Handler):
    def __init__(self, requests: C2BRequests) -> None:
        super().__init__(logging.INFO)
        self.requests = requests

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg in TAKEN:
            self.requests.by_reference[str(args[0])] += 1
        elif record.msg == REFUSED and args[0] == "c2b":
            self.requests.by_reference[str(args[2])] += 1
            self.requests.refused[f"{args[2]} {args[1]}"] += 1


@contextmanager
def c2b_requests() -> Iterator[C2BRequests]:
    """Count the C2B requests the simulator receives while the block runs."""
    requests = C2BRequests()
    handler = _C2BHandler(requests)
    sandbox_log = logging.getLogger("mpesa.sandbox")
    level = sandbox_log.level
    sandbox_log.setLevel(logging.INFO)
    sandbox_log.addHandler(handler)
    try:
        yield requests
    finally:
        sandbox_log.removeHandler(handler)
        sandbox_log.setLevel(level)
