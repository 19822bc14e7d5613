"""The shop as production runs it, for the end-to-end benchmarks: PostgreSQL, Redis (huey and the cache), gunicorn
from ``deploy/gunicorn.conf.py`` with ``DJANGO_DEBUG=0``, N ``manage.py run_huey`` workers, and a simulator started
by the caller (``RunContext.simulator``). Plus an asyncio buyer (httpx, one cookie jar per buyer) that goes through
the real pages: home, add to cart, checkout page, pay.

What differs from ``deploy/try_here.py``: the simulator speaks plain HTTP on loopback (``MPESA_ENVIRONMENT=simulator``,
which the production gate accepts with a warning), the database is a throw-away ``kulipa_<name>`` one, the abuse
limits are off (:mod:`benchmarks.settings`, the production settings with ``LIMIT_*`` off: the benchmarks place
thousands of orders from one address) and gunicorn writes no access log.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import HOST, POLL_INTERVAL, Simulator, _sandbox_command
from mpesa.sandbox import DEFAULT_INITIATOR_IDENTIFIER, DEFAULT_SECURITY_CREDENTIAL, DEFAULT_SERVICE_PROVIDER_CODE

PROJECT_DIR = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
POSTGRES = "postgres://postgres:postgres@127.0.0.1:5432/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM`` (kB) and ``Threads`` of one process, from ``/proc/<pid>/status`` (empty once gone)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def machine_memory_mb() -> dict[str, float]:
    """``MemTotal`` and ``MemAvailable`` of the machine, in MB."""
    values: dict[str, float] = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = round(int(rest.split()[0]) / 1024, 1)
    return {"total_mb": values.get("MemTotal", 0.0), "available_mb": values.get("MemAvailable", 0.0)}


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return fh.read().strip()


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's worker processes)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(p) for p in fh.read().split()]
    return found


class CpuMeter:
    """The CPU this process used between :meth:`start` and :meth:`stop`, as a share of the machine's CPUs."""

    def __init__(self) -> None:
        self._cpu = self._wall = 0.0

    @staticmethod
    def _used() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._cpu, self._wall = self._used(), time.monotonic()

    def stop(self) -> dict[str, float]:
        cpu, wall = self._used() - self._cpu, time.monotonic() - self._wall
        cores = os.cpu_count() or 1
        return {
            "cpu_seconds": round(cpu, 2),
            "wall_seconds": round(wall, 2),
            "share_of_machine": round(cpu / wall / cores, 3) if wall else 0.0,
        }


@dataclass
class Shop:
    """The production set-up on this machine (see the module docstring). ``with Shop(...) as shop:``."""

    name: str
    """Suffix of the PostgreSQL database ``kulipa_<name>`` (dropped and created) and of the log files."""
    workdir: Path
    sim: Simulator
    redis_url: str
    workers: int = 2
    settings_module: str = "benchmarks.settings"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    web_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    product_id: int = 0

    @property
    def database(self) -> str:
        return f"kulipa_{self.name}"

    @property
    def web(self) -> str:
        return f"http://{HOST}:{self.web_port}"

    def __enter__(self) -> Shop:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _environment(self) -> dict[str, str]:
        public_key = subprocess.run(
            [*_sandbox_command(), "public-key", "--private-key", str(self.sim.private_key)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        var = self.workdir / f"{self.name}-var"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MPESA_", "HUEY_", "KULIPA_", "GUNICORN_", "DJANGO_", "PYTEST"))
        }
        env.update(
            {
                "KULIPA_ENV_FILE": "",
                "KULIPA_VAR_DIR": str(var),
                "DJANGO_SETTINGS_MODULE": self.settings_module,
                "DJANGO_DEBUG": "0",
                "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DJANGO_SECURE_COOKIES": "0",
                "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
                "DJANGO_SECURE_HSTS_PRELOAD": "1",
                "DATABASE_URL": POSTGRES + self.database,
                "REDIS_URL": self.redis_url,
                "HUEY_NAME": f"kulipa-{self.name}",
                "MPESA_ENVIRONMENT": "simulator",
                "MPESA_BASE_URL": f"http://{HOST}",
                "MPESA_PORT_OFFSET": str(self.sim.port_offset),
                "MPESA_API_KEY": self.sim.api_key,
                "MPESA_PUBLIC_KEY": public_key,
                "MPESA_SERVICE_PROVIDER_CODE": DEFAULT_SERVICE_PROVIDER_CODE,
                "MPESA_INITIATOR_IDENTIFIER": DEFAULT_INITIATOR_IDENTIFIER,
                "MPESA_SECURITY_CREDENTIAL": DEFAULT_SECURITY_CREDENTIAL,
                "MPESA_MODE": "sync",
                "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"{self.name}-metrics"),
                "GUNICORN_BIND": f"{HOST}:{self.web_port}",
                "GUNICORN_ACCESS_LOG": "",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        import redis

        self.web_port = self.web_port or free_port()
        self.env = self._environment()
        redis.Redis.from_url(self.redis_url).flushdb()  # our own db number only
        subprocess.run(["dropdb", "--if-exists", "-h", HOST, "-U", "postgres", self.database], check=True)
        subprocess.run(["createdb", "-h", HOST, "-U", "postgres", self.database], check=True)
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("collectstatic", "--noinput", "-v", "0")
        out = self.manage(
            "shell",
            "-c",
            "from decimal import Decimal; from kulipa.catalog.models import Product; "
            "p = Product.objects.create(name='Banco', slug='banco', price=Decimal('10.00'), "
            "stock_on_hand=10_000_000, is_active=True); print(p.pk)",
        )
        self.product_id = int(out.strip().splitlines()[-1])
        self._spawn("web", str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py")
        for n in range(1, self.workers + 1):
            self._spawn(f"worker{n}", sys.executable, "manage.py", "run_huey")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive()
            workers_up = all("Huey consumer started" in self.log(f"worker{n}") for n in range(1, self.workers + 1))
            with contextlib.suppress(httpx.HTTPError):
                if workers_up and httpx.get(f"{self.web}/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(POLL_INTERVAL * 4)  # poll interval
        raise RuntimeError(f"the shop did not start; web log:\n{self.log('web')[-2000:]}")

    def _spawn(self, name: str, *argv: str) -> None:
        with (self.workdir / f"{self.name}-{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                cwd=PROJECT_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, name: str) -> str:
        try:
            return (self.workdir / f"{self.name}-{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)[-2000:]}")

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def worker_names(self) -> list[str]:
        return [name for name in self.processes if name.startswith("worker")]

    def web_pids(self) -> list[int]:
        return children_of(self.pid("web"))

    def stop(self, *, fast: bool = False) -> None:
        """SIGTERM (workers: SIGINT, huey's graceful stop), or SIGQUIT/SIGKILL with ``fast``; SIGKILL after a
        timeout. Each process group is one we started."""
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                sig = signal.SIGINT if name.startswith("worker") else signal.SIGTERM
                if fast:
                    sig = signal.SIGKILL if name.startswith("worker") else signal.SIGQUIT
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
        for process in self.processes.values():
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        self.processes.clear()

    # --- the database, read with psql (the benchmark process has no Django) ----------------------------------
    def sql(self, query: str) -> list[list[str]]:
        done = subprocess.run(
            ["psql", "-h", HOST, "-U", "postgres", "-d", self.database, "-At", "-F", "\t", "-c", query],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def attempt_states(self) -> dict[str, int]:
        return {
            state: int(count)
            for state, count in self.sql("SELECT state, COUNT(*) FROM payments_paymentattempt GROUP BY state")
        }

    def drop_database(self) -> None:
        subprocess.run(
            ["dropdb", "--if-exists", "-h", HOST, "-U", "postgres", self.database], check=False, capture_output=True
        )


# --- buyers ---------------------------------------------------------------------------------------------------
_PRODUCT_FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


class Phones:
    """Distinct valid numbers ``25884{n:05d}{scenario}``: one prompt in flight per number is a database rule."""

    def __init__(self, start: int = 0) -> None:
        self.next = start

    def __call__(self, scenario: str) -> str:
        self.next += 1
        return f"25884{self.next:05d}{scenario}"


@dataclass
class Paid:
    status: int
    seconds: float
    location: str = ""
    error: str = ""


class Buyer:
    """One customer with a cookie jar: ``await buyer.prepare(msisdn)`` (add to cart, checkout page) then
    ``await buyer.pay()``, the pay request alone (timed), which answers 303 to the order page."""

    def __init__(self, shop_url: str, product_id: int, *, timeout: float = 60.0) -> None:
        self.client = httpx.AsyncClient(base_url=shop_url, timeout=timeout, follow_redirects=False)
        self.product_id = product_id
        self.fields: dict[str, str] = {}

    async def close(self) -> None:
        await self.client.aclose()

    async def prepare(self, msisdn: str) -> None:
        if "csrftoken" not in self.client.cookies:
            (await self.client.get("/")).raise_for_status()
        added = await self.client.post(
            "/carrinho/adicionar/",
            data={
                "product_id": str(self.product_id),
                "quantity": "1",
                "csrfmiddlewaretoken": self.client.cookies.get("csrftoken") or "",
            },
        )
        if added.status_code >= 400:
            raise RuntimeError(f"add to cart: HTTP {added.status_code}")
        page = await self.client.get("/checkout/")
        page.raise_for_status()
        self.fields = dict(_PRODUCT_FIELD.findall(page.text))
        self.fields.update(
            customer_name="Cliente de Teste",
            msisdn=msisdn,
            delivery_address="Maputo",
            csrfmiddlewaretoken=self.client.cookies.get("csrftoken") or "",
        )

    async def pay(self) -> Paid:
        started = time.perf_counter()
        try:
            answer = await self.client.post("/checkout/", data=self.fields)
        except httpx.HTTPError as exc:
            return Paid(0, time.perf_counter() - started, error=type(exc).__name__)
        seconds = time.perf_counter() - started
        location = answer.headers.get("location", "")
        error = "" if answer.status_code in (302, 303) else f"HTTP {answer.status_code}"
        return Paid(answer.status_code, seconds, location, error)


def summary_errors(results: list[Paid]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    return errors
