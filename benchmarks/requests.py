"""Request level: what one request of the buyer's flow costs inside Django, without a server or a load generator.

For each of the home page, a product page, "add to cart", the checkout page (GET) and the pay request (POST that
places the order and queues its push), on SQLite and on PostgreSQL: queries per request, wall time (mean, p50,
p95) and CPU time of this process per request.

Each database runs in a child process (``python -m benchmarks.requests child ...``) with production-like settings:
``DJANGO_DEBUG=0`` (so the cached template loader, JSON logs, secure defaults), the cache as production has it
(Redis with PostgreSQL, the locked file cache with SQLite), database sessions, huey NOT immediate (the push is only
queued: huey's SQLite file, or Redis). Requests go through ``django.test.Client`` with ``enforce_csrf_checks=True``
and the whole middleware stack; the test environment is not set up (no template instrumentation). Abuse limits are
turned off in the child's settings. Every buyer is a new browser (no cookies: its own session) paying from its own
number ``25884{n:05d}01``.

Queries are counted on one extra buyer under ``CaptureQueriesContext`` (counting costs time, so the timed buyers run
without it). CPU is ``time.process_time()`` of the child: on SQLite it includes the database's work, on PostgreSQL
the server's own CPU is not in it.

``python -m benchmarks --only requests [--quick]``; PostgreSQL at ``REQUESTS_BENCH_DATABASE_URL`` (default
``postgres://postgres:postgres@127.0.0.1:5432/kulipa_requests_bench``: the database is dropped and created), Redis
at ``REQUESTS_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/8``; flushed at the end). ``REQUESTS_BENCH_DBS``
(``sqlite,postgresql``) chooses the databases. ``REQUESTS_BENCH_PROFILE=pay:/tmp/pay-profile.txt`` also writes
the cProfile statistics of that request's timed steps (top functions by cumulative and by own time) to the file;
the profiler's overhead then inflates that request's figures.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RunContext, latency_summary

PROJECT_DIR = Path(__file__).resolve().parent.parent
REQUESTS = ("home", "product", "cart_add", "checkout_page", "pay")
PRODUCTS = 20
BUYERS_FULL = 300
BUYERS_QUICK = 30
WARMUP = 10
CHILD_TIMEOUT = 900.0
DEFAULT_PG_URL = "postgres://postgres:postgres@127.0.0.1:5432/kulipa_requests_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
_ENV_DROPPED = (
    "DATABASE_URL",
    "REDIS_URL",
    "HUEY_SQLITE_PATH",
    "HUEY_NAME",
    "HUEY_WORKERS",
    "HUEY_IMMEDIATE",
    "DJANGO_SETTINGS_MODULE",
    "PROMETHEUS_MULTIPROC_DIR",
)


# --- child side ----------------------------------------------------------------------------------------------
def _msisdn(n: int) -> str:
    return f"25884{n:05d}01"


_CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{re.escape(name)}"[^>]*value="([^"]*)"', html) or re.search(
        rf'value="([^"]*)"[^>]*name="{re.escape(name)}"', html
    )
    if match is None:
        raise RuntimeError(f"no field {name!r} in the page")
    return match.group(1).replace("&quot;", '"').replace("&#x27;", "'").replace("&amp;", "&")


_CLIENTS: list[Any] = []


def _client() -> Any:
    """One ``Client`` for every buyer: its handler loads the middleware once, as a server process does (a new
    ``Client`` per buyer would build WhiteNoise's file index again on its first request, ~10 ms)."""
    if not _CLIENTS:
        from django.test import Client

        _CLIENTS.append(Client(enforce_csrf_checks=True))
    return _CLIENTS[0]


class _Buyer:
    """One customer, a new browser (no cookies) on the shared client: home → product → add → checkout → pay."""

    def __init__(self, n: int, products: list[tuple[int, str]]) -> None:
        from http.cookies import SimpleCookie

        self.n = n
        self.client = _client()
        self.client.cookies = SimpleCookie()  # a new browser: no session, no CSRF cookie yet
        self.product_id, self.slug = products[n % len(products)]
        self.csrf = ""
        self.checkout_html = ""

    def step(self, name: str) -> Any:
        client = self.client
        if name == "home":
            response = client.get("/")
            self._expect(response, 200, name)
            self.csrf = _CSRF_RE.search(response.content.decode()).group(1)  # type: ignore[union-attr]
        elif name == "product":
            response = client.get(f"/produto/{self.slug}/")
            self._expect(response, 200, name)
        elif name == "cart_add":
            response = client.post(
                "/carrinho/adicionar/",
                {"product_id": self.product_id, "quantity": 1, "next": "/", "csrfmiddlewaretoken": self.csrf},
            )
            self._expect(response, 302, name)
        elif name == "checkout_page":
            response = client.get("/checkout/")
            self._expect(response, 200, name)
            self.checkout_html = response.content.decode()
        elif name == "pay":
            html = self.checkout_html
            data = {
                "csrfmiddlewaretoken": _CSRF_RE.search(html).group(1),  # type: ignore[union-attr]
                "customer_name": f"Cliente {self.n}",
                "msisdn": _msisdn(self.n),
                "email": "",
                "delivery_address": "Maputo",
                "checkout_token": _field(html, "checkout_token"),
                "snapshot": _field(html, "snapshot"),
            }
            response = client.post("/checkout/", data)
            self._expect(response, 303, name)
        else:
            raise ValueError(name)
        return response

    @staticmethod
    def _expect(response: Any, status: int, name: str) -> None:
        if response.status_code != status:
            body = response.content.decode(errors="replace")[:500]
            raise RuntimeError(f"{name}: HTTP {response.status_code}, expected {status}: {body}")


def _child(buyers: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0, interactive=False)
    for name in dir(settings):  # abuse limits off: thousands of orders from one address and session machinery
        if name.startswith("LIMIT_"):
            setattr(settings, name, "" if isinstance(getattr(settings, name), str) else 0)
    if settings.DEBUG or settings.HUEY.get("immediate"):
        raise SystemExit("the benchmark needs DJANGO_DEBUG=0 and huey not immediate")

    from decimal import Decimal

    from kulipa.catalog.models import Product
    from kulipa.orders.models import Order

    products = [
        Product.objects.create(
            name=f"Produto {i:02d}",
            slug=f"produto-{i:02d}",
            price=Decimal("125.50") + i,
            stock_on_hand=1_000_000,
            is_active=True,
        )
        for i in range(PRODUCTS)
    ]
    pairs = [(p.pk, p.slug) for p in products]

    for n in range(90_000, 90_000 + WARMUP):  # templates compiled, connections open, caches warm
        buyer = _Buyer(n, pairs)
        for name in REQUESTS:
            buyer.step(name)

    queries: dict[str, int] = {}
    statements: dict[str, list[str]] = {}
    buyer = _Buyer(99_999, pairs)
    for name in REQUESTS:
        with CaptureQueriesContext(connection) as ctx:
            buyer.step(name)
        queries[name] = len(ctx)
        statements[name] = [q["sql"][:160] for q in ctx.captured_queries]

    wall: dict[str, list[float]] = {name: [] for name in REQUESTS}
    cpu: dict[str, list[float]] = {name: [] for name in REQUESTS}
    profiled = os.environ.get("REQUESTS_BENCH_PROFILE", "")  # "<request>:<path>": cProfile of that request's steps
    profile_step, _, profile_path = profiled.partition(":")
    profiler = cProfile.Profile() if profiled else None
    started = time.perf_counter()
    for n in range(buyers):
        buyer = _Buyer(n, pairs)
        for name in REQUESTS:
            c0, t0 = time.process_time(), time.perf_counter()
            if profiler is not None and name == profile_step:
                profiler.runcall(buyer.step, name)
            else:
                buyer.step(name)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    seconds = time.perf_counter() - started
    if profiler is not None:
        with open(profile_path, "w") as out:
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(25)

    results: dict[str, Any] = {}
    for name in REQUESTS:
        summary = latency_summary(wall[name])
        results[name] = {
            "queries": queries[name],
            "mean_ms": summary["mean_ms"],
            "p50_ms": summary["p50_ms"],
            "p95_ms": summary["p95_ms"],
            "cpu_ms": round(sum(cpu[name]) / len(cpu[name]) * 1000, 3),
        }
    flow_ms = sum(r["mean_ms"] for r in results.values())
    orders = Order.objects.count()
    return {
        "vendor": connection.vendor,
        "buyers": buyers,
        "warmup_buyers": WARMUP,
        "seconds": round(seconds, 2),
        "orders_placed": orders,
        "flow_mean_ms": round(flow_ms, 3),
        "flow_per_s_one_thread": round(1000 / flow_ms, 1) if flow_ms else None,
        "pay_per_s_one_thread": round(1000 / results["pay"]["mean_ms"], 1) if results["pay"]["mean_ms"] else None,
        "requests": results,
        "statements": statements,
        "ok": orders == buyers + WARMUP + 1,
    }


# --- parent side ---------------------------------------------------------------------------------------------
def _pg_recreate(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def _run_child(vendor: str, buyers: int, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROPPED and not k.startswith(("MPESA_", "KULIPA_"))}
    var = workdir / f"var-{vendor}"
    var.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "kulipa.settings",
            "KULIPA_ENV_FILE": "",
            "KULIPA_VAR_DIR": str(var),
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
            "DJANGO_ALLOWED_HOSTS": "testserver",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SECURE_COOKIES": "0",
            "MPESA_ENVIRONMENT": "simulator",
            "HUEY_IMMEDIATE": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    redis_url = os.environ.get("REQUESTS_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    if vendor == "postgresql":
        pg_url = os.environ.get("REQUESTS_BENCH_DATABASE_URL", DEFAULT_PG_URL)
        _pg_recreate(pg_url)
        env["DATABASE_URL"] = pg_url
        env["REDIS_URL"] = redis_url  # production with PostgreSQL: cache and huey on Redis
        env["HUEY_NAME"] = f"bench-requests-{os.getpid()}"
    log = workdir / f"requests-{vendor}.log"
    try:
        with log.open("ab") as err:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.requests", "child", str(buyers)],
                cwd=PROJECT_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=CHILD_TIMEOUT,
                check=False,
            )
    finally:
        if vendor == "postgresql":
            _redis_flush(redis_url)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        return {"ok": False, "error": f"child exited {proc.returncode}", "log_tail": tail}
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'request':<14} {'db':<10} {'queries':>7} {'mean ms':>8} {'p95 ms':>8} {'cpu ms':>8}"]
    for name in REQUESTS:
        for vendor, figures in results.items():
            r = figures.get("requests", {}).get(name)
            if r:
                lines.append(
                    f"{name:<14} {vendor:<10} {r['queries']:>7} {r['mean_ms']:>8.2f} {r['p95_ms']:>8.2f} "
                    f"{r['cpu_ms']:>8.2f}"
                )
    return "\n".join(lines)


def request_costs(ctx: RunContext) -> dict[str, Any]:
    buyers = BUYERS_QUICK if ctx.quick else BUYERS_FULL
    vendors = [v.strip() for v in os.environ.get("REQUESTS_BENCH_DBS", "sqlite,postgresql").split(",") if v.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-requests-", dir=ctx.workdir) as work:
        results = {vendor: _run_child(vendor, buyers, Path(work)) for vendor in vendors}
    table = _table(results)
    print(table, file=sys.stderr)
    return {"ok": all(r.get("ok") for r in results.values()), "buyers": buyers, "table": table.splitlines(), **results}


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "child":
        print(json.dumps(_child(int(sys.argv[2]))), flush=True)
    else:
        print(
            "usage: python -m benchmarks.requests child BUYERS (run it through python -m benchmarks)", file=sys.stderr
        )
        sys.exit(2)
