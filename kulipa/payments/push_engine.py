"""The push engine: one asyncio event loop in a daemon thread that holds thousands of C2B pushes open at once.

A C2B call blocks until the customer types the PIN (a minute or more). Holding each in a thread would need
thousands of threads; instead the huey task ``dispatch_payment`` wins the ``queued → pushing`` transition and hands
a :class:`PushJob` to this engine, then returns. The call runs on the engine's loop (one :class:`mpesa.AsyncClient`
per loop, see :func:`kulipa.payments.gateway.async_client`), at most ``limit`` at a time (a semaphore; the rest wait
in memory, not in the connection pool). Its answer goes to the engine's ``recorder`` — one named function,
``kulipa.payments.tasks.push_answered`` in the worker — run in a small thread pool (a thread keeps its DB
connection while answers keep coming, and closes it when the engine is idle).

If the process dies mid-push the attempt stays PUSHING in the database; the reconciler queries it after its
deadline. Nothing here retries a push.

API::

    engine = PushEngine(recorder=push_answered)   # the worker's: kulipa.payments.tasks.engine()
    engine.push(job)                               # thread-safe; recorder(job, result) runs in the recorder pool
    engine.wait_idle(timeout=30)                   # True once nothing is in flight or being recorded
    engine.stats()                                 # in_flight, holding, peak_holding, recording, ...
    engine.wait_holding(2000, timeout=60)          # capacity measurements
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections

from kulipa.payments import gateway
from mpesa import MpesaError, Outcome, Result
from mpesa.config import Operation

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 5000
DEFAULT_RECORDERS = 8


def raise_open_file_limit(wanted: int) -> int:
    """Each held push is a socket: lift the soft RLIMIT_NOFILE towards the hard limit. Returns the soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.warning("could not raise the open file limit above %s", soft)
    return soft


@dataclass(frozen=True, slots=True)
class PushJob:
    """One C2B push: everything the call needs, read from the database before it is handed over (the engine's
    loop never touches the ORM)."""

    attempt_id: int
    amount: Decimal
    msisdn: str
    transaction_reference: str
    third_party_reference: str


PushRecorder = Callable[[PushJob, "Result"], None]


@dataclass(frozen=True, slots=True)
class EngineStats:
    in_flight: int
    """Pushes handed over and not finished (running, or waiting for the semaphore)."""
    holding: int
    """Jobs running now (past the semaphore: a push held open at the gateway)."""
    peak_holding: int
    recording: int
    """Results handed to the recorder pool and not yet recorded."""
    peak_in_flight: int
    submitted: int
    completed: int
    failed: int


class PushEngine:
    """An event loop in a daemon thread plus a recorder thread pool. Create with :func:`get_engine` or directly."""

    def __init__(
        self,
        *,
        recorder: PushRecorder,
        limit: int = DEFAULT_LIMIT,
        recorders: int = DEFAULT_RECORDERS,
        name: str = "push",
    ) -> None:
        self.recorder = recorder
        self.limit = limit
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._semaphore: asyncio.Semaphore | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-engine", daemon=True)
        self._recorders = ThreadPoolExecutor(max_workers=recorders, thread_name_prefix=f"{name}-recorder")
        self._cond = threading.Condition()
        self._in_flight = 0
        self._recording = 0
        self._peak = 0
        self._holding = 0
        self._peak_holding = 0
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._closed = False
        raise_open_file_limit(limit + 1024)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def init() -> None:
            self._semaphore = asyncio.Semaphore(self.limit)

        self._loop.run_until_complete(init())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # pushing ----------------------------------------------------------------------------------------------
    def push(self, job: PushJob) -> None:
        """Send ``job``'s C2B on the loop; its answer goes to ``recorder(job, result)`` in the recorder pool (an
        exception instead of an answer becomes a result, see :func:`result_from_exception`). Thread-safe."""
        with self._cond:
            if self._closed:
                raise RuntimeError("push engine is shut down")
            self._in_flight += 1
            self._submitted += 1
            self._peak = max(self._peak, self._in_flight)
            self._cond.notify_all()
        asyncio.run_coroutine_threadsafe(self._held(job), self._loop)

    async def _held(self, job: PushJob) -> None:
        assert self._semaphore is not None
        ok = True
        try:
            async with self._semaphore:
                with self._cond:
                    self._holding += 1
                    self._peak_holding = max(self._peak_holding, self._holding)
                    self._cond.notify_all()
                try:
                    result = await gateway.async_client().c2b_payment(
                        amount=job.amount,
                        msisdn=job.msisdn,
                        transaction_reference=job.transaction_reference,
                        third_party_reference=job.third_party_reference,
                    )
                finally:
                    with self._cond:
                        self._holding -= 1
        except BaseException as exc:  # recorded as a result, never lost
            logger.exception("push %s raised", job.third_party_reference)
            ok, result = False, result_from_exception(exc)
        with self._cond:
            self._in_flight -= 1
            self._recording += 1
            if ok:
                self._completed += 1
            else:
                self._failed += 1
            self._cond.notify_all()
        self._recorders.submit(self._record, job, result)

    def _record(self, job: PushJob, result: Result) -> None:
        close_old_connections()
        try:
            self.recorder(job, result)
        except Exception:
            logger.exception("recording push %s failed", job.third_party_reference)
        finally:
            # While more answers are coming, keep the connection (past CONN_MAX_AGE or broken, it is replaced):
            # closing it after every answer made each recorded push open a new PostgreSQL connection, a new server
            # process with cold caches, about 20 ms of database CPU per payment. Once the engine is idle, do not
            # sit on it.
            with self._cond:
                idle = self._in_flight == 0 and self._recording == 1
            if idle:
                connections.close_all()
            else:
                close_old_connections()
            with self._cond:
                self._recording -= 1
                self._cond.notify_all()

    # observing --------------------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(
                in_flight=self._in_flight,
                holding=self._holding,
                peak_holding=self._peak_holding,
                recording=self._recording,
                peak_in_flight=self._peak,
                submitted=self._submitted,
                completed=self._completed,
                failed=self._failed,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is in flight or being recorded; ``False`` if ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight or self._recording:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def wait_holding(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` jobs run at once (pushes held open; for capacity tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._holding < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting work, wait up to ``timeout`` for what is in flight, stop the loop and the pool.

        Pushes still held are abandoned: their attempts stay PUSHING and the reconciler settles them.
        """
        with self._cond:
            self._closed = True
        self.wait_idle(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._recorders.shutdown(wait=False, cancel_futures=True)


def result_from_exception(exc: BaseException) -> Result:
    """An exception instead of an answer. Raised before sending (bad configuration or arguments): the push never
    left. Anything else may have been sent: unknown."""
    sent = not isinstance(exc, MpesaError | ImproperlyConfigured)
    return Result(
        operation=Operation.C2B,
        outcome=Outcome.UNKNOWN if sent else Outcome.INVALID_REQUEST,
        description="exception while pushing" if sent else "refused before sending",
        error=f"{type(exc).__name__}: {exc}"[:500],
        sent=sent,
    )


def close_at_exit(engine: PushEngine) -> None:
    """Worker shutdown: close the engine's M-Pesa connections on its loop (bounded), then stop it.

    Pushes still held are cut; their attempts stay PUSHING (or are recorded UNKNOWN) and the reconciler settles
    them by status query. Nothing is pushed again.
    """
    try:
        gateway.reset(timeout=2.0)
    except Exception:  # exiting anyway; the reconciler covers whatever was in flight
        logger.warning("closing M-Pesa clients at exit failed", exc_info=True)
    engine.shutdown(timeout=2.0)
