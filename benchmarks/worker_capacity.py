"""Worker capacity: how many pending pushes ONE huey worker process (``manage.py run_huey``) holds open at once.

End to end, with real processes and the project's own code paths:

1. a temporary ``KULIPA_VAR_DIR`` (SQLite database + huey's SQLite queue), ``manage.py migrate``;
2. a setup subprocess (Django with ``kulipa.settings``) creates a product and N orders with ``order_create``;
3. ``mpesa-sandbox serve --push-window 600`` in its own process; its public key (``mpesa-sandbox public-key``)
   goes to the worker in ``MPESA_PUBLIC_KEY``, with ``MPESA_API_KEY`` empty (local sandbox mode);
4. ONE worker, ``manage.py run_huey`` with the default ``settings.HUEY`` consumer; its idle RSS is read;
5. a second setup subprocess calls ``payment_attempt_start`` for every order, each in its own transaction as the
   checkout does: the ``dispatch_payment`` tasks reach huey's SQLite queue through ``transaction.on_commit``
   (``HUEY_IMMEDIATE=0``). Every order pays from its own number ending in ``00`` (the simulated customer never
   answers), so each push stays open in the worker's push engine;
6. the simulator's ``pending`` count is polled until it reaches N; the worker's ``/proc/<pid>/status`` is read;
7. ``POST /sandbox/reset`` answers every held request with INS-9; the database is polled until no attempt is
   PUSHING any more (they become UNKNOWN and the reconciler takes over).

Run alone: ``python -m benchmarks --only worker_capacity [--quick]``. The module is also the setup script the
benchmark runs in its children (``python -m benchmarks.worker_capacity orders|attempts N``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import POLL_INTERVAL, RunContext, Simulator, _sandbox_command

PROJECT_DIR = Path(__file__).resolve().parent.parent
TARGET_FULL = 2_000
TARGET_QUICK = 200
PUSH_WINDOW = 600.0
"""Simulator push window: no prompt expires during the run; the reset releases them."""
SETUP_TIMEOUT = 120.0
WORKER_READY_TIMEOUT = 60.0
IDLE_SETTLE_TIMEOUT = 10.0
HOLD_TIMEOUT = 90.0
RECORD_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
_NOBODY = "258849999999"
"""No order uses this number: ``GET /sandbox/transactions?msisdn=`` on it lists nothing, ``pending`` counts all."""
_ENV_DROPPED = ("DATABASE_URL", "REDIS_URL", "HUEY_SQLITE_PATH", "HUEY_NAME", "HUEY_WORKERS", "HUEY_IMMEDIATE")


def _msisdn(i: int) -> str:
    """A distinct valid Vodacom number per order, ending in 00 (waits for the customer): 25884 + 5 digits + 00."""
    return f"25884{i:05d}00"


# --- child side: Django setup scripts ----------------------------------------------------------------------
def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kulipa.settings")
    import django

    django.setup()


def _child_orders(n: int) -> dict[str, Any]:
    """One product with plenty of stock and ``n`` orders of one unit each (no payment attempt yet)."""
    _django()
    from decimal import Decimal

    from django.db import transaction

    from kulipa.catalog.models import Product
    from kulipa.orders.services import order_create
    from kulipa.orders.snapshot import snapshot_current

    started = time.time()
    product = Product.objects.create(
        name="Capacidade", slug="capacidade", price=Decimal("10.00"), stock_on_hand=n * 10, is_active=True
    )
    confirmed = snapshot_current(quantities={product.pk: 1})  # what each customer's checkout page showed
    with transaction.atomic():  # one commit: creating the orders is not what is measured
        for i in range(n):
            order_create(
                quantities={product.pk: 1},
                confirmed=confirmed,
                customer_name=f"Cliente {i}",
                msisdn=_msisdn(i),
                email="",
                delivery_address="Maputo",
                user=None,
                session_key=f"bench-{i}",
                checkout_token=f"bench-{i}",
            )
    return {"orders": n, "seconds": round(time.time() - started, 3)}


def _child_attempts() -> dict[str, Any]:
    """``payment_attempt_start`` for every order, each in its own transaction (as the checkout view does)."""
    _django()
    from django.conf import settings
    from django.db import transaction

    from kulipa.orders.models import Order
    from kulipa.payments import tasks
    from kulipa.payments.services import payment_attempt_start

    if settings.HUEY.get("immediate"):
        raise SystemExit("HUEY immediate mode is on: the dispatch tasks would not go to the queue")
    orders = list(Order.objects.order_by("pk"))
    started = time.time()
    for order in orders:
        with transaction.atomic():  # the dispatch goes to the queue on commit, as after a checkout
            attempt, _created = payment_attempt_start(order=order, msisdn=order.msisdn)
            tasks.queue_dispatch(attempt.pk)
    return {"attempts": len(orders), "started_at": started, "finished_at": time.time()}


def _child_main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "orders":
        result = _child_orders(int(argv[1]))
    elif command == "attempts":
        result = _child_attempts()
    else:
        print("usage: python -m benchmarks.worker_capacity orders N | attempts", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


# --- parent side -------------------------------------------------------------------------------------------
def _proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM`` (kB, whole process: threads share it) and ``Threads`` from ``/proc/<pid>/status``."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def _nofile_limit(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                return " / ".join(line.split()[3:5])
    return "?"


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


class _Database:
    """Read-only peeks at the shop's SQLite database (WAL: readers never block the worker's writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=20)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def states(self) -> dict[str, int]:
        return dict(self._query("SELECT state, COUNT(*) FROM payments_paymentattempt GROUP BY state"))

    def references(self) -> set[str]:
        return {row[0] for row in self._query("SELECT third_party_reference FROM payments_paymentattempt")}

    def attempts_with_several_responses(self) -> int:
        rows = self._query(
            "SELECT attempt_id FROM payments_paymentevent WHERE kind = 'response' GROUP BY attempt_id "
            "HAVING COUNT(*) > 1"
        )
        return len(rows)

    def response_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM payments_paymentevent WHERE kind = 'response'")[0][0])


class _Children:
    """Child processes of one run: SIGTERM, then SIGKILL, on :meth:`stop_all` (called from ``finally``)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: list[str], *, env: dict[str, str], log: Path, capture: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``command``; stderr (and stdout unless ``capture``) go to ``log``."""
        with log.open("ab") as fh:
            process = subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else fh,
                stderr=fh if capture else subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self.processes.clear()


def _run_child(args: list[str], *, env: dict[str, str], log: Path, timeout: float) -> dict[str, Any]:
    """Run a setup command to completion (killed on timeout or on any exception, SIGTERM included)."""
    with log.open("ab") as fh:
        done = subprocess.run(
            args, cwd=PROJECT_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=fh, timeout=timeout
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:3])} exited {done.returncode}; see {log}:\n{_tail(log)}")
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _base_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPESA_") and k not in _ENV_DROPPED}
    env.update(
        DJANGO_SETTINGS_MODULE="kulipa.settings",
        KULIPA_VAR_DIR=str(var_dir),
        HUEY_IMMEDIATE="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def _public_key(sim: Simulator) -> str:
    """What ``make run`` does: ``mpesa-sandbox public-key`` with the simulator's private key file."""
    out = subprocess.run(
        [*_sandbox_command(), "public-key", "--private-key", str(sim.private_key)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if out != sim.public_key:
        raise RuntimeError("mpesa-sandbox public-key disagrees with GET /sandbox")
    return out


def _wait_for_log(process: subprocess.Popen[bytes], log: Path, needle: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            if needle in log.read_text(errors="replace"):
                return True
        time.sleep(POLL_INTERVAL)  # poll interval
    return False


def _settled_rss(pid: int, timeout: float) -> dict[str, int]:
    """``/proc`` status once VmRSS has not moved for 1 s (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = _proc_status(pid)
    steady_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < 1.0:
        time.sleep(0.1)  # poll interval
        now = _proc_status(pid)
        if now["VmRSS"] != last["VmRSS"]:
            steady_since = time.monotonic()
        last = now
    return last


def measure(ctx: RunContext, target: int) -> dict[str, Any]:
    """The whole scenario for ``target`` pushes; see the module docstring."""
    run_dir = ctx.workdir / f"worker-capacity-{target}"
    var_dir = run_dir / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = _base_env(var_dir)
    quiet = {**env, "KULIPA_LOG_LEVEL": "WARNING"}
    me = [sys.executable, "-m", "benchmarks.worker_capacity"]
    db = _Database(var_dir / "kulipa.sqlite3")
    children = _Children()
    figures: dict[str, Any] = {"target": target}

    try:
        _run_child(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            env=quiet,
            log=run_dir / "setup.log",
            timeout=SETUP_TIMEOUT,
        )
        created = _run_child([*me, "orders", str(target)], env=quiet, log=run_dir / "setup.log", timeout=SETUP_TIMEOUT)
        figures["seconds_to_create_orders"] = created.get("seconds")

        with ctx.simulator("--push-window", str(PUSH_WINDOW)) as sim:
            try:
                worker_env = {
                    **env,
                    "MPESA_API_KEY": "",
                    "MPESA_PUBLIC_KEY": _public_key(sim),
                    "MPESA_BASE_URL": "http://127.0.0.1",
                    "MPESA_PORT_OFFSET": str(sim.port_offset),
                }
                worker_log = run_dir / "worker.log"
                worker = children.start([sys.executable, "manage.py", "run_huey"], env=worker_env, log=worker_log)
                if not _wait_for_log(worker, worker_log, "Huey consumer started", WORKER_READY_TIMEOUT):
                    raise RuntimeError(f"the worker did not start; log tail:\n{_tail(worker_log)}")
                idle = _settled_rss(worker.pid, IDLE_SETTLE_TIMEOUT)
                sim_idle = sim.memory_kb()

                # The checkouts: payment_attempt_start per order, while the worker runs.
                attempts_log = run_dir / "attempts.log"
                launched = time.time()
                starter = children.start([*me, "attempts"], env=quiet, log=attempts_log, capture=True)

                pending = peak_pending = 0
                peak_rss = idle["VmRSS"]
                peak_threads = idle["Threads"]
                reached_at: float | None = None
                failure = ""
                deadline = time.monotonic() + HOLD_TIMEOUT
                while time.monotonic() < deadline:
                    pending = int(sim.control("GET", f"/sandbox/transactions?msisdn={_NOBODY}")["pending"])
                    peak_pending = max(peak_pending, pending)
                    status = _proc_status(worker.pid)
                    peak_rss = max(peak_rss, status["VmRSS"])
                    peak_threads = max(peak_threads, status["Threads"])
                    if pending >= target:
                        reached_at = time.time()
                        break
                    if worker.poll() is not None:
                        failure = f"the worker exited with {worker.returncode}"
                        break
                    if starter.poll() not in (None, 0):
                        failure = f"the attempts script exited with {starter.returncode}:\n{_tail(attempts_log)}"
                        break
                    time.sleep(POLL_INTERVAL)  # poll interval
                try:
                    out, _ = starter.communicate(timeout=SETUP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    starter.kill()
                    out, _ = starter.communicate()
                    failure = failure or "the attempts script did not finish"
                lines = out.decode(errors="replace").strip().splitlines()
                started_info = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
                at_hold = _proc_status(worker.pid) if worker.poll() is None else {}
                sim_at_hold = sim.memory_kb()
                fds_at_hold = _open_fds(worker.pid)
                states_at_hold = db.states()
                listed = sim.control("GET", "/sandbox/transactions")
                t0 = float(started_info.get("started_at", launched))

                # Every attempt is one C2B at the simulator, and each was sent once.
                sent = collections.Counter(
                    tx["third_party_reference"] for tx in listed["transactions"] if tx["kind"] == "c2b"
                )
                ours = db.references()
                pushed_twice = sum(1 for ref, count in sent.items() if count > 1)
                never_sent = len(ours - set(sent))

                held = max(peak_pending, int(listed.get("pending", 0)))
                rss_at_hold = at_hold.get("VmRSS", peak_rss)
                figures.update(
                    held=held,
                    pushing_in_db_at_hold=states_at_hold.get("pushing", 0),
                    seconds_to_enqueue_all=(
                        round(started_info["finished_at"] - started_info["started_at"], 3)
                        if "finished_at" in started_info
                        else None
                    ),
                    seconds_to_hold_all=round(reached_at - t0, 3) if reached_at else None,
                    worker_pid=worker.pid,
                    worker_rss_mb_idle=_mb(idle["VmRSS"]),
                    worker_rss_mb_held=_mb(rss_at_hold),
                    worker_rss_mb_peak=_mb(max(peak_rss, at_hold.get("VmHWM", 0))),
                    worker_threads_idle=idle["Threads"],
                    worker_threads=max(peak_threads, at_hold.get("Threads", 0)),
                    worker_open_fds=fds_at_hold,
                    worker_nofile_limit=_nofile_limit(worker.pid),
                    kb_per_pending=round((rss_at_hold - idle["VmRSS"]) / held, 1) if held else None,
                    simulator_rss_mb_idle=_mb(sim_idle["VmRSS"]),
                    simulator_rss_mb=_mb(sim_at_hold["VmRSS"]),
                )

                # Release: INS-9 for every held request; wait until no attempt is PUSHING.
                released_at = time.monotonic()
                sim.control("POST", "/sandbox/reset")
                recorded_in: float | None = None
                states = db.states()
                deadline = released_at + RECORD_TIMEOUT
                while time.monotonic() < deadline and worker.poll() is None:
                    states = db.states()
                    if not states.get("pushing") and not states.get("queued"):
                        recorded_in = time.monotonic() - released_at
                        break
                    time.sleep(POLL_INTERVAL)  # poll interval
                after = sim.control("GET", "/sandbox/transactions")
                pushed_again = sum(1 for tx in after["transactions"] if tx["kind"] == "c2b")
                several = db.attempts_with_several_responses()
                end_status = _proc_status(worker.pid) if worker.poll() is None else {}
                figures.update(
                    seconds_to_record_all=round(recorded_in, 3) if recorded_in is not None else None,
                    states_after_release=states,
                    response_events=db.response_events(),
                    pushed_twice=pushed_twice + pushed_again + several,
                    never_sent=never_sent,
                    worker_hwm_mb_end=_mb(end_status.get("VmHWM", 0)),
                    worker_alive=worker.poll() is None,
                )
                if failure:
                    figures["error"] = failure
                if held < target or recorded_in is None:
                    figures["worker_log_tail"] = _tail(worker_log, 25)
            finally:
                children.stop_all()  # the worker before the simulator
    finally:
        children.stop_all()

    figures["ok"] = bool(
        figures.get("held", 0) >= target
        and figures.get("pushing_in_db_at_hold") == target
        and figures.get("seconds_to_record_all") is not None
        and figures.get("pushed_twice") == 0
        and figures.get("never_sent") == 0
        and figures.get("response_events") == target
        and not figures.get("error")
    )
    return figures


def worker_capacity(ctx: RunContext) -> dict[str, Any]:
    return measure(ctx, TARGET_QUICK if ctx.quick else TARGET_FULL)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
