"""``checkout``: the shop under load through the production stack, beside two floors, on SQLite and PostgreSQL.

Per database (``--database sqlite|postgres|both``; default both when PostgreSQL answers on 127.0.0.1:5432):

1. the simulator (``mpesa-sandbox serve --answer-delay 0``, scenario 01: the customer approves at once);
2. a fresh database (SQLite in WAL in a temporary ``KULIPA_VAR_DIR``, huey on SQLite, the file cache; or the
   PostgreSQL database ``kulipa_bench_checkout``, huey and the cache on Redis db 6), ``migrate``,
   ``collectstatic``, the demo catalogue with a large stock;
3. what ``deploy/try-here`` starts, with its ``Processes``: gunicorn from ``deploy/gunicorn.conf.py`` and two
   ``manage.py run_huey`` workers, ``DJANGO_DEBUG=0`` (the configuration gate passes), ``MPESA_ENVIRONMENT=
   simulator``, ``DJANGO_SETTINGS_MODULE=benchmarks.floor.settings``: production settings with every abuse limit
   off (``LIMIT_*``) plus one benchmark-only view ``/_floor/`` (one INSERT in a transaction) on the same server;
4. the load generator (:mod:`benchmarks.loadgen`, its own asyncio process) at each concurrency: the floor view, the
   pay request alone, the whole buyer flow;
5. the database floor: ``pgbench`` (one INSERT per transaction) on PostgreSQL, on SQLite the same from Python
   threads (``sqlite3``, WAL);
6. waits until no payment attempt is still on its way, then counts orders, attempts by state, units sold, held and
   oversold.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import HOST, RunContext, Simulator, latency_summary
from benchmarks.worker_capacity import _public_key
from deploy.try_here import Processes, manage

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgres://postgres:postgres@127.0.0.1:5432"
PG_DATABASE = "kulipa_bench_checkout"
PGBENCH_DATABASE = "kulipa_bench_pgbench"
REDIS_URL = "redis://127.0.0.1:6379/6"
STOCK = 1_000_000
SETTLE_TIMEOUT = 180.0
IN_FLIGHT = ("queued", "pushing", "awaiting_callback")
LIMITS_OFF = {
    "LIMIT_CHECKOUTS_PER_SESSION": "",
    "LIMIT_CHECKOUTS_PER_IP": "",
    "LIMIT_RETRIES_PER_SESSION": "",
    "LIMIT_RETRIES_PER_IP": "",
    "LIMIT_PROMPTS_PER_PHONE": "",
    "LIMIT_ATTEMPTS_PER_ORDER": 0,
    "LIMIT_UNITS_HELD_PER_SESSION": 0,
    "LIMIT_UNITS_HELD_PER_PHONE": 0,
    "LIMIT_UNITS_HELD_PER_IP": 0,
}
"""What benchmarks/floor/settings.py sets (reported in the JSON); checked against the running settings in ``seed``."""
_DROPPED_PREFIXES = ("MPESA_", "HUEY_", "KULIPA_", "DJANGO_", "GUNICORN_")
_DROPPED = ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"concurrency": [1, 8], "seconds": 2.0, "warmup": 0.5, "pay_max": {1: 60, 8: 200}, "pgbench_t": 2}
    return {
        "concurrency": [1, 8, 32, 64],
        "seconds": 6.0,
        "warmup": 1.0,
        "pay_max": {1: 300, 8: 2000, 32: 3000, 64: 3000},
        "pgbench_t": 10,
    }


def pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return False
    return shutil.which("psql") is not None or _psycopg_ok()


def _psycopg_ok() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        psycopg.connect(f"{PG_URL}/postgres", connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def _pg_recreate(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _child_json(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.checkout_db", *args],
        cwd=ROOT,
        env={**env, "KULIPA_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"checkout_db {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _manage(env: dict[str, str], *args: str) -> str:
    try:
        return manage(env, *args)
    except SystemExit as exc:  # try_here's helper exits; here one failed stack must not end the whole run
        raise RuntimeError(str(exc)) from None


class Stack:
    """The production processes for one database, with the simulator; stopped on exit whatever happened."""

    def __init__(self, ctx: RunContext, database: str, work: Path) -> None:
        self.ctx, self.database, self.work = ctx, database, work
        self.port = _free_port()
        self.processes: Processes | None = None
        self.sim: Simulator | None = None
        self.env: dict[str, str] = {}
        self.facts: dict[str, Any] = {}

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            self._start()
            yield self
        finally:
            if self.processes is not None:
                self.processes.stop()
            if self.sim is not None:
                self.sim.stop()
            if self.database == "postgres":
                import redis

                redis.Redis.from_url(REDIS_URL).flushdb()  # this benchmark's own db: huey's queue, the cache

    def _start(self) -> None:
        self.sim = self.ctx.simulator()
        self.sim.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED}
        env.update(
            KULIPA_ENV_FILE="",
            KULIPA_VAR_DIR=str(self.work / "var"),
            DJANGO_SETTINGS_MODULE="benchmarks.floor.settings",
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_SECURE_SSL_REDIRECT="0",  # no nginx in front: plain HTTP on loopback, as deploy/try-here
            DJANGO_SECURE_COOKIES="0",
            DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
            DJANGO_SECURE_HSTS_PRELOAD="1",
            MPESA_ENVIRONMENT="simulator",
            MPESA_API_KEY="",
            MPESA_PUBLIC_KEY=_public_key(self.sim),
            MPESA_BASE_URL=f"http://{HOST}",
            MPESA_PORT_OFFSET=str(self.sim.port_offset),
            MPESA_SERVICE_PROVIDER_CODE="171717",
            MPESA_MODE="sync",
            PROMETHEUS_MULTIPROC_DIR=str(self.work / "metrics"),
            GUNICORN_BIND=f"{HOST}:{self.port}",
            PYTHONUNBUFFERED="1",
        )
        if self.database == "postgres":
            _pg_recreate(PG_DATABASE)
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()  # this benchmark's own db: stale counters and queues
            env.update(
                DATABASE_URL=f"{PG_URL}/{PG_DATABASE}", REDIS_URL=REDIS_URL, HUEY_NAME=f"bench-{uuid.uuid4().hex[:8]}"
            )
        self.env = env
        (self.work / "metrics").mkdir(exist_ok=True)
        _manage(env, "migrate", "--noinput")
        _manage(env, "collectstatic", "--noinput")
        self.facts["seed"] = _child_json(env, "seed", str(STOCK))
        if self.facts["seed"].pop("limits") != LIMITS_OFF:
            raise RuntimeError("the abuse limits are not off in benchmarks.floor.settings")

        self.processes = Processes(env, self.work)
        self.processes.start("web", sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py")
        for n in (1, 2):
            self.processes.start(f"worker{n}", sys.executable, "manage.py", "run_huey")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        assert self.processes is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.running.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}): {self.log_tail(name)}")
            with contextlib.suppress(OSError):
                status, _ = _get(self.port, "/readyz")
                workers_up = all("Huey consumer started" in self.log_tail(f"worker{n}", 200) for n in (1, 2))
                if status == 200 and workers_up:
                    break
            time.sleep(0.2)  # poll interval
        else:
            raise RuntimeError(f"stack not ready after {timeout:.0f} s: {self.log_tail('web')}")
        status, home = _get(self.port, "/")
        static = re.search(rb'(/static/[^"\']+\.css)', home)
        self.facts["static_status"] = _get(self.port, static[1].decode())[0] if static else None
        ready = re.search(r"(\d+) workers × (\d+) threads", self.log_tail("web", 400))
        self.facts["gunicorn"] = {"workers": int(ready[1]), "threads": int(ready[2])} if ready else None

    def pids(self) -> dict[str, int]:
        """The stack's processes by role (gunicorn's master: its workers are its children)."""
        assert self.processes is not None and self.sim is not None
        workers = {
            f"huey_{name}": proc.pid for name, proc in self.processes.running.items() if name.startswith("worker")
        }
        return {"gunicorn": self.processes.running["web"].pid, **workers, "simulator": self.sim.pid}

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.work / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stats(self) -> dict[str, Any]:
        return dict(_child_json(self.env, "stats", str(STOCK)))

    def settle(self, timeout: float) -> tuple[dict[str, Any], float]:
        """Wait (polling the database) until no attempt is queued, pushing or awaiting its callback."""
        t0 = time.monotonic()
        while True:
            stats = self.stats()
            pending = sum(stats["attempts_by_state"].get(state, 0) for state in IN_FLIGHT)
            if not pending or time.monotonic() - t0 > timeout:
                return stats, time.monotonic() - t0
            time.sleep(0.5)  # poll interval


def _loadgen(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen"],
        cwd=ROOT,
        input=json.dumps(spec),
        stdout=subprocess.PIPE,
        stderr=None,  # its progress lines go to ours
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"load generator exited {done.returncode}")
    return dict(json.loads(done.stdout))


# --- database floors ---------------------------------------------------------------------------------------------
PGBENCH_SCRIPT = "BEGIN;\nINSERT INTO floor_hit (note) VALUES ('floor');\nCOMMIT;\n"


def pgbench_floor(work: Path, *, clients: int, seconds: int) -> dict[str, Any]:
    """``pgbench -c clients -j 2 -T seconds`` of one INSERT in a transaction, on a scratch database."""
    import psycopg

    _pg_recreate(PGBENCH_DATABASE)
    try:
        with psycopg.connect(f"{PG_URL}/{PGBENCH_DATABASE}", autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE floor_hit (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),"
                " note varchar(20) NOT NULL)"
            )
        logs = work / "pgbench"
        logs.mkdir()
        script = logs / "insert.sql"
        script.write_text(PGBENCH_SCRIPT)
        command = ["pgbench", "-n", "-h", "127.0.0.1", "-U", "postgres", "-f", str(script)]
        command += ["-c", str(clients), "-j", "2", "-T", str(seconds), "-l", "--log-prefix", str(logs / "tx")]
        command.append(PGBENCH_DATABASE)
        done = subprocess.run(
            command,
            cwd=logs,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
            env={**os.environ, "PGPASSWORD": "postgres"},
        )
        if done.returncode:
            return {"tool": "pgbench", "clients": clients, "tps": None, "error": done.stderr[-500:]}
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
        average = re.search(r"latency average = ([\d.]+) ms", done.stdout)
        latencies = []
        for log in logs.glob("tx*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3:
                    latencies.append(int(parts[2]) / 1e6)
        return {
            "tool": "pgbench",
            "command": " ".join(command[:-1]).replace(str(logs) + "/", "") + " " + PGBENCH_DATABASE,
            "clients": clients,
            "tps": round(float(tps[1]), 1) if tps else None,
            "latency_average_ms": float(average[1]) if average else None,
            **latency_summary(latencies),
            "transactions": len(latencies),
        }
    finally:
        _pg_drop(PGBENCH_DATABASE)


def sqlite_floor(work: Path, *, threads: int, seconds: float) -> dict[str, Any]:
    """One INSERT per transaction (``BEGIN IMMEDIATE``) from ``threads`` Python threads, each its own ``sqlite3``
    connection, WAL and ``synchronous=NORMAL`` as the shop's settings: SQLite's single writer seen from Python."""
    path = work / "floor.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE floor_hit (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, note TEXT NOT NULL)")
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.monotonic() + seconds

    def writer(mine: list[float]) -> None:
        conn = sqlite3.connect(path, timeout=20, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO floor_hit (created_at, note) VALUES (datetime('now'), 'floor')")
                conn.execute("COMMIT")
                mine.append(time.perf_counter() - t0)
        finally:
            conn.close()

    t0 = time.monotonic()
    pool = [threading.Thread(target=writer, args=(mine,)) for mine in latencies]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.monotonic() - t0
    flat = [x for mine in latencies for x in mine]
    return {
        "tool": "python sqlite3 threads",
        "clients": threads,
        "tps": round(len(flat) / wall, 1),
        **latency_summary(flat),
        "transactions": len(flat),
    }


# --- the benchmark -----------------------------------------------------------------------------------------------
def _phases(sizes: dict[str, Any]) -> list[dict[str, Any]]:
    phases: list[dict[str, Any]] = []
    for c in sizes["concurrency"]:
        timing = {"seconds": sizes["seconds"], "warmup": sizes["warmup"]}
        phases.append({"kind": "floor", "concurrency": c, **timing})
        phases.append({"kind": "pay", "concurrency": c, **timing, "max_count": sizes["pay_max"][c]})
        phases.append({"kind": "flow", "concurrency": c, **timing})
    return phases


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


def run_database(ctx: RunContext, database: str) -> dict[str, Any]:
    sizes = _sizes(ctx.quick)
    loadavg = _loadavg()
    with tempfile.TemporaryDirectory(prefix=f"kulipa-bench-checkout-{database}-") as name:
        work = Path(name)
        stack = Stack(ctx, database, work)
        with stack.running():
            spec = {
                "base_url": f"http://{HOST}:{stack.port}",
                "first_number": 1,
                "phases": _phases(sizes),
                "cpu_roots": stack.pids(),
            }
            print(f"checkout [{database}] gunicorn on :{stack.port}, {stack.facts.get('gunicorn')}", file=sys.stderr)
            load = _loadgen(spec, timeout=1800)
            final, waited = stack.settle(SETTLE_TIMEOUT)
        # The stack stopped (its ~32 database connections closed): the database floor alone on the same server.
        if database == "postgres":
            db_floor = pgbench_floor(work, clients=32, seconds=sizes["pgbench_t"])
        else:
            db_floor = sqlite_floor(work, threads=32, seconds=sizes["pgbench_t"])
        by_kind: dict[str, dict[str, Any]] = {"floor": {}, "pay": {}, "flow": {}}
        for item in load["phases"]:
            figures = {k: v for k, v in item.items() if k not in ("kind", "concurrency")}
            by_kind[item["kind"]][str(item["concurrency"])] = figures
        ratios: dict[str, dict[str, float | None]] = {}
        for c in map(str, sizes["concurrency"]):
            pay, floor, flow = by_kind["pay"][c]["per_s"], by_kind["floor"][c]["per_s"], by_kind["flow"][c]["per_s"]
            ratios[c] = {
                "pay_over_floor": round(pay / floor, 3) if pay and floor else None,
                "flow_over_floor": round(flow / floor, 3) if flow and floor else None,
                "pay_over_db_floor": round(pay / db_floor["tps"], 5) if pay and db_floor.get("tps") else None,
                "floor_over_db_floor": round(floor / db_floor["tps"], 5) if floor and db_floor.get("tps") else None,
            }
        succeeded = final["attempts_by_state"].get("succeeded", 0)
        errors = sum(figures.get("errors", 0) for kind in by_kind.values() for figures in kind.values())
        errors += sum(by_kind["pay"][c]["setup"]["errors"] for c in by_kind["pay"])
        result = {
            "database": "PostgreSQL + Redis (huey, cache)" if database == "postgres" else "SQLite WAL (huey on SQLite)",
            "load_average_at_start": loadavg,
            "server": {
                "gunicorn": stack.facts.get("gunicorn"),
                "config": "deploy/gunicorn.conf.py",
                "settings": "benchmarks.floor.settings (kulipa.settings + /_floor/)",
                "huey_workers": 2,
                "debug": False,
                "static_status": stack.facts.get("static_status"),
                "mpesa": "simulator, answer delay 0, scenario 01 (approves at once), sync mode",
                "limits_off": LIMITS_OFF,
            },
            "catalogue": {**stack.facts.get("seed", {}), "products_on_home": load["products_on_home"]},
            "flow": by_kind["flow"],
            "pay": by_kind["pay"],
            "floor_view": by_kind["floor"],
            "db_floor": db_floor,
            "ratios": ratios,
            "phone_numbers_used": load["numbers_used"],
            "orders_placed": final["orders"],
            "attempts": final["attempts"],
            "attempts_by_state": final["attempts_by_state"],
            "orders_by_status": final["orders_by_status"],
            "attempts_succeeded": succeeded,
            "seconds_waiting_for_worker": round(waited, 1),
            "units_sold": final["units_sold"],
            "units_held": final["units_held"],
            "units_oversold": final["units_oversold"],
            "stock_on_hand_mismatch": final["stock_on_hand_mismatch"],
            "floor_rows": final["floor_rows"],
            "errors": errors,
        }
        result["ok"] = bool(
            final["units_oversold"] == 0
            and final["stock_on_hand_mismatch"] == 0
            and final["attempts"] > 0
            and succeeded == final["attempts"]
            and final["orders"] == final["attempts"]
            and errors == 0
        )
        if database == "postgres":
            _pg_drop(PG_DATABASE)
        return result


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for database, r in results.items():
        if "flow" not in r:
            lines.append(f"checkout [{database}]: {r.get('error')}")
            continue
        f = r["db_floor"]
        lines.append(
            f"checkout [{database}]  db floor ({f.get('tool')}, {f.get('clients')} clients): {f.get('tps')} tps,"
            f" p95 {f.get('p95_ms')} ms"
        )
        lines.append("  buyers |  floor/s  p95 ms |    pay/s  p95 ms  p99 ms | flows/s  p95 ms | pay÷floor | gen CPU")
        for c in r["pay"]:
            fl, p, w, ratio = r["floor_view"][c], r["pay"][c], r["flow"][c], r["ratios"][c]
            gen = max(x["cpu"]["loadgen_pct_of_machine"] or 0 for x in (fl, p, w))
            lines.append(
                f"  {c:>6} | {fl['per_s']:>8} {fl['p95_ms']!s:>7} | {p['per_s']:>8} {p['p95_ms']!s:>7}"
                f" {p['p99_ms']!s:>7} | {w['per_s']:>7} {w['p95_ms']!s:>7} | {ratio['pay_over_floor']!s:>9} |"
                f" ≤{gen}%"
            )
        for c in r["pay"]:
            per_pay = r["pay"][c].get("cpu_ms_per_unit") or {}
            parts = ", ".join(f"{name} {ms}" for name, ms in per_pay.items())
            lines.append(f"  CPU ms per order placed, {c} buyers (pay phase): {parts}")
        lines.append(
            f"  orders {r['orders_placed']}, attempts {r['attempts']}, succeeded {r['attempts_succeeded']},"
            f" oversold {r['units_oversold']}, errors {r['errors']}, ok {r['ok']}"
        )
    return "\n".join(lines)


def checkout(ctx: RunContext) -> dict[str, Any]:
    choice = getattr(ctx, "database", "auto")
    reachable = pg_reachable()
    if choice == "auto":
        databases = ["sqlite", "postgres"] if reachable else ["sqlite"]
    elif choice == "both":
        databases = ["sqlite", "postgres"]
    else:
        databases = [choice]
    report: dict[str, Any] = {
        "load_average_at_start": _loadavg(),
        "cores": os.cpu_count(),
        "postgres_reachable": reachable,
        "abuse_limits": "off for the run (benchmarks/floor/settings.py): "
        + ", ".join(f"{k}={v!r}" for k, v in LIMITS_OFF.items()),
        "databases": {},
    }
    for database in databases:
        try:
            report["databases"][database] = run_database(ctx, database)
        except Exception as exc:  # one database failing must not hide the other's figures
            import traceback

            traceback.print_exc(file=sys.stderr)
            report["databases"][database] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(_table(report["databases"]), file=sys.stderr)
    report["ok"] = bool(report["databases"]) and all(r.get("ok") for r in report["databases"].values())
    return report
