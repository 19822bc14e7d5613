"""The checkout benchmark's load generator: ``python -m benchmarks.loadgen`` reads a JSON plan on stdin, drives the
shop with closed-loop virtual buyers (asyncio + aiohttp, one process, one event loop) and prints one JSON document.

A separate process so that its CPU time is its own: each phase reports the generator's user+sys CPU seconds
(``getrusage``) beside the whole machine's busy time (``/proc/stat``) over the same wall time.

Phases (``kind``):

* ``flow``: the whole buyer flow, counted as one unit: GET ``/`` (a new visitor: no cookies), POST
  ``/carrinho/adicionar/`` (one unit of a product, CSRF token from the cookie the home page set), GET
  ``/checkout/`` (its hidden fields: the checkout token and the signed snapshot), POST ``/checkout/`` (name and a
  phone number used by no other attempt of the run) → must answer 303 to ``/pedido/...``.
* ``pay``: carts are prepared first, untimed (each its own session: POST add to cart with a CSRF cookie of the
  visitor's own, GET the checkout page): ``max_count`` for the first pay phase, then 2.5 times what the last pay
  rate needs for the phase (at least 4 per buyer); then only the POSTs to ``/checkout/`` that place the order and
  queue the push are run and timed, each buyer taking the next prepared cart.
* ``floor``: POST ``/_floor/`` (one INSERT in a transaction).

Every phase: ``warmup`` seconds, then a ``seconds`` window; the units that end inside the window are counted
(:func:`run_window`).

A unit is an error when a request fails, answers a status other than the expected one, or the page lacks what the
next step needs; its latency is not counted.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import math
import os
import re
import resource
import secrets
import string
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.common import cpu_seconds, latency_summary

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
PRODUCT_ID = re.compile(r'name="product_id" value="(\d+)"')
ALNUM = string.ascii_letters + string.digits
CUSTOMER = "Cliente Benchmark"


class UnitError(Exception):
    """The step did not get what a browser would need to go on."""


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_stat() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


@dataclass
class Meter:
    """CPU of this process and of the machine between :meth:`start` and :meth:`stop`."""

    roots: dict[str, int] = field(default_factory=dict)
    """The stack's processes (name → pid) whose CPU is measured too, see :func:`benchmarks.common.cpu_seconds`."""
    t0: float = 0.0
    cpu0: float = 0.0
    stat0: tuple[int, int] = (0, 0)
    by_process0: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.t0, self.cpu0, self.stat0 = time.monotonic(), _cpu_seconds(), _proc_stat()
        self.by_process0 = cpu_seconds(self.roots)

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        cpu = _cpu_seconds() - self.cpu0
        busy1, total1 = _proc_stat()
        busy, total = busy1 - self.stat0[0], total1 - self.stat0[1]
        cores = os.cpu_count() or 1
        tick = os.sysconf("SC_CLK_TCK")
        by_process = {
            name: round(used - self.by_process0.get(name, 0.0), 2) for name, used in cpu_seconds(self.roots).items()
        }
        return {
            "cpu_seconds_by_process": by_process,
            "loadgen_cpu_seconds": round(cpu, 3),
            "wall_seconds": round(wall, 3),
            "loadgen_cores": round(cpu / wall, 3) if wall else None,
            # share of the machine's capacity (all cores over the wall time)
            "loadgen_pct_of_machine": round(100 * cpu / (wall * cores), 1) if wall else None,
            "machine_busy_pct": round(100 * busy / total, 1) if total else None,
            # share of the CPU the machine actually spent (everyone: server, workers, database, simulator, us, others)
            "loadgen_pct_of_cpu_used": round(100 * cpu * tick / busy, 1) if busy else None,
        }


class Visitor:
    """One browser: its own cookies (no shared jar), on the generator's shared connection pool."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base, self.cookies = http, base, dict[str, str]()

    def _remember(self, response: aiohttp.ClientResponse) -> None:
        for name, morsel in response.cookies.items():
            if morsel.value == "" or morsel.get("max-age") == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value

    async def request(
        self, method: str, path: str, *, data: dict[str, str] | None = None, expect: tuple[int, ...]
    ) -> tuple[int, str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if method == "POST":
            headers["Referer"] = self.base + "/"
        async with self.http.request(
            method, self.base + path, data=data, headers=headers, allow_redirects=False
        ) as response:
            body = await response.text()
            self._remember(response)
            if response.status not in expect:
                raise UnitError(f"{method} {path}: HTTP {response.status} {body[:160]!r}")
            return response.status, body, response.headers.get("Location", "")

    def csrf(self) -> str:
        token = self.cookies.get("csrftoken")
        if not token:
            raise UnitError("no csrftoken cookie")
        return token


class Plan:
    def __init__(self, spec: dict[str, Any], http: aiohttp.ClientSession) -> None:
        self.base = spec["base_url"].rstrip("/")
        self.cpu_roots: dict[str, int] = {k: int(v) for k, v in spec.get("cpu_roots", {}).items()}
        self.http = http
        self.products: list[str] = []
        self.next_number = int(spec.get("first_number", 1))
        self.pay_rate: float | None = None

    def msisdn(self) -> str:
        """A number no other attempt of the run used, ending in 01 (the simulator's 'customer approves')."""
        n = self.next_number
        self.next_number += 1
        if n > 99_999:
            raise UnitError("ran out of phone numbers")
        return f"25884{n:05d}01"

    def product(self, i: int) -> str:
        return self.products[i % len(self.products)]

    async def discover(self) -> int:
        visitor = Visitor(self.http, self.base)
        _, page, _ = await visitor.request("GET", "/", expect=(200,))
        self.products = list(dict.fromkeys(PRODUCT_ID.findall(page)))
        if not self.products:
            raise UnitError("no product on the home page")
        return len(self.products)

    # --- the steps ----------------------------------------------------------------------------------------
    async def add_and_open_checkout(self, visitor: Visitor, product: str) -> dict[str, str]:
        await visitor.request(
            "POST",
            "/carrinho/adicionar/",
            data={"product_id": product, "quantity": "1", "csrfmiddlewaretoken": visitor.csrf()},
            expect=(302, 303),
        )
        _, page, _ = await visitor.request("GET", "/checkout/", expect=(200,))
        fields = {name: html.unescape(value) for name, value in HIDDEN.findall(page)}
        if "checkout_token" not in fields or "snapshot" not in fields:
            raise UnitError("checkout page without its hidden fields")
        fields.update(customer_name=CUSTOMER, msisdn=self.msisdn(), csrfmiddlewaretoken=visitor.csrf())
        return fields

    async def pay(self, visitor: Visitor, fields: dict[str, str]) -> None:
        _, _, location = await visitor.request("POST", "/checkout/", data=fields, expect=(303,))
        if "/pedido/" not in location:
            raise UnitError(f"checkout redirected to {location!r}")

    async def flow(self, i: int) -> None:
        visitor = Visitor(self.http, self.base)
        await visitor.request("GET", "/", expect=(200,))
        fields = await self.add_and_open_checkout(visitor, self.product(i))
        await self.pay(visitor, fields)

    async def prepared_cart(self, i: int) -> tuple[Visitor, dict[str, str]]:
        visitor = Visitor(self.http, self.base)
        visitor.cookies["csrftoken"] = "".join(secrets.choice(ALNUM) for _ in range(32))  # as the browser keeps it
        return visitor, await self.add_and_open_checkout(visitor, self.product(i))

    async def floor(self, i: int) -> None:
        await Visitor(self.http, self.base).request("POST", "/_floor/", data={"n": str(i)}, expect=(200,))


@dataclass
class Tally:
    """Units that ended inside the measurement window: their latencies, and the failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.examples) < 5:
            self.examples.append(f"{type(exc).__name__}: {exc}"[:300])


FAILURES = (TimeoutError, UnitError, aiohttp.ClientError, OSError)


async def run_window(
    concurrency: int,
    seconds: float,
    warmup: float,
    next_unit: Callable[[], Callable[[], Awaitable[None]] | None],
    roots: dict[str, int],
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` buyers, each starting its next unit when its last one ended, until the window
    closes or ``next_unit`` has no more. Counted: the units that END inside the window (``warmup`` after the start,
    ``seconds`` long), so a unit slower than the window still counts where it ends, and the rate is completions per
    second of window. Units still in flight when it closes finish (their orders count in the database) unmeasured.
    """
    tally, meter = Tally(), Meter(roots=roots)
    window = {"open": False, "closed": False, "exhausted": False}

    async def buyer() -> None:
        while not window["closed"]:
            unit = next_unit()
            if unit is None:
                window["exhausted"] = True
                return
            t0 = time.perf_counter()
            try:
                await unit()
            except FAILURES as exc:
                if window["open"] and not window["closed"]:
                    tally.failed(exc)
                continue
            if window["open"] and not window["closed"]:
                tally.latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(buyer()) for _ in range(concurrency)]
    everyone = asyncio.gather(*tasks)
    await asyncio.wait([everyone], timeout=warmup)
    window["open"] = True
    meter.start()
    await asyncio.wait([everyone], timeout=seconds)  # returns early if the units ran out
    window["closed"] = True
    cpu = meter.stop()
    await everyone
    wall = cpu["wall_seconds"]
    done = len(tally.latencies)
    return {
        "units": done,
        "seconds": wall,
        "per_s": round(done / wall, 1) if wall else None,
        **latency_summary(tally.latencies),
        "errors": tally.errors,
        "error_examples": tally.examples,
        "ran_out_of_carts": window["exhausted"],
        "cpu": cpu,
        # CPU each part of the system spent per unit that ended in the window (work still queued behind the window,
        # such as pushes not yet recorded, is in the next phase's figures)
        "cpu_ms_per_unit": {k: round(1000 * v / done, 2) for k, v in cpu["cpu_seconds_by_process"].items()}
        if done
        else {},
    }


def _endless(unit: Callable[[int], Awaitable[None]]) -> Callable[[], Callable[[], Awaitable[None]]]:
    counter = iter(range(1 << 62))
    return lambda: functools.partial(unit, next(counter))


async def phase(plan: Plan, spec: dict[str, Any]) -> dict[str, Any]:
    kind, concurrency = spec["kind"], int(spec["concurrency"])
    seconds, warmup = float(spec["seconds"]), float(spec["warmup"])
    if kind == "flow":
        return await run_window(concurrency, seconds, warmup, _endless(plan.flow), plan.cpu_roots)
    if kind == "floor":
        return await run_window(concurrency, seconds, warmup, _endless(plan.floor), plan.cpu_roots)
    if kind == "pay":
        # Enough carts for the window at 2.5 times the last pay rate measured (the first phase: max_count).
        count = int(spec["max_count"])
        if plan.pay_rate:
            count = min(count, max(4 * concurrency, math.ceil(plan.pay_rate * (warmup + seconds) * 2.5)))
        prepared: list[tuple[Visitor, dict[str, str]]] = []
        setup = Tally()
        t0 = time.monotonic()
        indexes = iter(range(count))

        async def prepare() -> None:
            for i in indexes:
                try:
                    prepared.append(await plan.prepared_cart(i))
                except FAILURES as exc:
                    setup.failed(exc)

        await asyncio.gather(*(prepare() for _ in range(int(spec.get("setup_concurrency", 16)))))
        setup_seconds = time.monotonic() - t0
        carts = iter(prepared)

        def next_pay() -> Callable[[], Awaitable[None]] | None:
            cart = next(carts, None)
            return None if cart is None else functools.partial(plan.pay, *cart)

        figures = await run_window(concurrency, seconds, warmup, next_pay, plan.cpu_roots)
        plan.pay_rate = figures["per_s"] or plan.pay_rate
        figures["setup"] = {
            "carts": len(prepared),
            "carts_unused": sum(1 for _ in carts),
            "seconds": round(setup_seconds, 2),
            "errors": setup.errors,
            "error_examples": setup.examples,
        }
        return figures
    raise ValueError(f"unknown phase kind {kind!r}")


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=float(spec.get("request_timeout", 60)))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
        plan = Plan(spec, http)
        result: dict[str, Any] = {"products_on_home": await plan.discover(), "phases": []}
        for item in spec["phases"]:
            figures = await phase(plan, item)
            result["phases"].append({**item, **figures})
            print(
                f"  {item['kind']:>5} x{item['concurrency']:<3} {figures['per_s']}/s p95 {figures['p95_ms']} ms"
                f" errors {figures['errors']} (load generator {figures['cpu']['loadgen_pct_of_machine']}% of machine)",
                file=sys.stderr,
                flush=True,
            )
        result["numbers_used"] = plan.next_number - int(spec.get("first_number", 1))
        return result


def main() -> None:
    spec = json.load(sys.stdin)
    print(json.dumps(asyncio.run(main_async(spec))))


if __name__ == "__main__":
    main()
