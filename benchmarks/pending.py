"""Pending pushes: how many payments wait on M-Pesa at once, and the checkout's p95 meanwhile, against the common
approach of calling C2B inside the checkout request, on the same server in the same run.

The production set-up of :mod:`benchmarks.stack` (PostgreSQL, huey on Redis, TWO ``run_huey`` workers, gunicorn
from deploy/gunicorn.conf.py, ``DJANGO_DEBUG=0``) against ``mpesa-sandbox serve --answer-delay 30``: every C2B
request (scenario ``01``) is answered "paid" after 30 s. gunicorn runs ``benchmarks.inrequest.settings`` (the
production settings plus one benchmark-only URL, :mod:`benchmarks.inrequest.views`).

1. *idle*: 8 buyers (asyncio, httpx, one session each) go through add to cart → checkout page → pay for 10 s; the
   pay request alone is timed. Nothing is pending when it starts (its own pushes then are).
2. wait until those pushes are answered and recorded (the warm-up's few are still held during the idle phase);
3. *held*: a setup child (Django, the shop's environment) places N orders with ``checkout_place`` and queues their
   dispatch, as the checkout view does, all in one transaction (placing them one commit or one HTTP request each
   takes longer than the 30 s they are held on this machine: the first would be answered before the last is sent;
   the commit hands all N dispatches to the queue at once); once
   the simulator holds them all, the same 8 buyers run again for 10 s. Pending counts (simulator, and attempts
   PUSHING in the database), the workers' and gunicorn's RSS and the machine's memory are sampled meanwhile;
4. wait until every push is answered and recorded (nothing lost: all ``succeeded``);
5. *in request*: N clients POST ``/bench/pay-in-request/`` at once (each its own connection), then 8 other buyers
   (carts and checkout pages loaded before) press pay, one request per buyer at a time, 20 s timeout each, for
   10 s: the pushes pending at once are bounded by gunicorn's threads, and the other buyers wait behind them.

``python -m benchmarks --only pending [--quick]`` (quick: N = 200, 4 s phases). The module is also the setup
child (``python -m benchmarks.pending place N FIRST``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RunContext, build_request, latency_summary, parse_response, raise_open_file_limit
from benchmarks.stack import (
    PROJECT_DIR,
    Buyer,
    CpuMeter,
    Paid,
    Phones,
    Shop,
    loadavg,
    machine_memory_mb,
    proc_status,
    summary_errors,
)

TARGET_FULL = 2_000
TARGET_QUICK = 200
BUYERS = 8
PHASE_FULL = 10.0
PHASE_QUICK = 4.0
ANSWER_DELAY = 30
IN_REQUEST_TIMEOUT = 20.0
REDIS_URL = "redis://127.0.0.1:6379/7"
DATABASE_NAME = "pending"  # kulipa_pending
SETTLE_TIMEOUT = 120.0
PLACE_TIMEOUT = 120.0
_NOBODY = "258849999999"
"""No order uses this number: ``GET /sandbox/transactions?msisdn=`` on it lists nothing, ``pending`` counts all."""


def _msisdn(n: int) -> str:
    return f"25884{n:05d}01"


# --- child side ------------------------------------------------------------------------------------------------
def _child_place(n: int, first: int) -> dict[str, Any]:
    """``n`` orders placed as the checkout view places them (``checkout_place``, then the dispatch queued)."""
    import django

    django.setup()
    from django.db import transaction

    from kulipa.catalog.models import Product
    from kulipa.orders.snapshot import snapshot_current

    product = Product.objects.get(slug="banco")
    confirmed = snapshot_current(quantities={product.pk: 1})
    started = time.time()
    # One transaction for all: the dispatches reach the queue together at the commit (on_commit), so the pushes
    # are all sent within seconds. One commit per order runs at about 20-60/s on this shared machine: the first
    # pushes would be answered (30 s) before the last ones were sent.
    with transaction.atomic():
        for i in range(n):
            _place_one(product.pk, confirmed, first + i)
    return {"placed": n, "started_at": started, "finished_at": time.time()}


def _place_one(product_id: int, confirmed: Any, n: int) -> None:
    from kulipa.payments import tasks
    from kulipa.payments.services import checkout_place

    _order, attempt = checkout_place(
        quantities={product_id: 1},
        confirmed=confirmed,
        customer_name=f"Cliente {n}",
        msisdn=_msisdn(n),
        email="",
        delivery_address="Maputo",
        user=None,
        session_key=f"held-{n}",
        checkout_token=f"held-{n}",
        client_ip="127.0.0.1",
    )
    if attempt is not None:
        tasks.queue_dispatch(attempt.pk)  # on the commit of the whole batch


# --- parent side -----------------------------------------------------------------------------------------------
class Sampler:
    """Every 0.25 s in a thread: the simulator's pending count and the RSS of the workers and gunicorn's workers."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.pending: list[int] = []
        self.rss_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pending_now(self) -> int:
        return int(self.shop.sim.control("GET", f"/sandbox/transactions?msisdn={_NOBODY}")["pending"])

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.pending.append(self.pending_now())
            for name, kb in self.memory_kb().items():
                self.rss_kb[name] = max(self.rss_kb.get(name, 0), kb)
            self._stop.wait(0.25)

    def memory_kb(self) -> dict[str, int]:
        values = {name: proc_status(self.shop.pid(name)).get("VmRSS", 0) for name in self.shop.worker_names()}
        values["web_workers"] = sum(proc_status(pid).get("VmRSS", 0) for pid in self.shop.web_pids())
        return values

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def figures(self) -> dict[str, Any]:
        return {
            "pending_min": min(self.pending, default=None),
            "pending_max": max(self.pending, default=None),
            "rss_mb_peak": {name: round(kb / 1024, 1) for name, kb in self.rss_kb.items()},
        }


def _phase(results: list[Paid], seconds: float, cpu: dict[str, float]) -> dict[str, Any]:
    ok = [r.seconds for r in results if not r.error]
    return {
        "pays": len(results),
        "pays_ok": len(ok),
        "pays_per_s": round(len(ok) / seconds, 1) if seconds else None,
        **latency_summary(ok),
        "errors": summary_errors(results),
        "load_generator_cpu": cpu,
    }


async def _buyers_loop(shop: Shop, phones: Phones, *, seconds: float) -> tuple[list[Paid], dict[str, float]]:
    """``BUYERS`` buyers: prepare (cart, checkout page) then pay, over and over for ``seconds``."""
    buyers = [Buyer(shop.web, shop.product_id) for _ in range(BUYERS)]
    results: list[Paid] = []
    meter = CpuMeter()
    meter.start()
    deadline = time.monotonic() + seconds

    async def lane(buyer: Buyer) -> None:
        while time.monotonic() < deadline:
            try:
                await buyer.prepare(phones("01"))
            except Exception as exc:
                results.append(Paid(0, 0.0, error=f"prepare: {type(exc).__name__}"))
                continue
            results.append(await buyer.pay())

    try:
        await asyncio.gather(*(lane(b) for b in buyers))
    finally:
        await asyncio.gather(*(b.close() for b in buyers))
    return results, meter.stop()


def _wait_settled(shop: Shop, timeout: float) -> tuple[float | None, dict[str, int]]:
    """Until no attempt is QUEUED or PUSHING (every answer recorded). Returns (seconds, states)."""
    started = time.monotonic()
    states = shop.attempt_states()
    while time.monotonic() - started < timeout:
        shop.check_alive()
        states = shop.attempt_states()
        if not states.get("queued") and not states.get("pushing"):
            return round(time.monotonic() - started, 2), states
        time.sleep(0.5)  # poll interval
    return None, states


def _place(shop: Shop, n: int, first: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pending", "place", str(n), str(first)],
            cwd=PROJECT_DIR,
            env={**shop.env, "KULIPA_LOG_LEVEL": "WARNING"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=fh,
        )


async def _in_request(shop: Shop, sampler: Sampler, phones: Phones, *, held: int, seconds: float) -> dict[str, Any]:
    """``held`` in-request payments at once, then the other buyers' pay requests while those are held."""
    lanes = [[Buyer(shop.web, shop.product_id, timeout=IN_REQUEST_TIMEOUT) for _ in range(3)] for _ in range(BUYERS)]
    for lane in lanes:  # carts and checkout pages loaded before the server fills up
        for buyer in lane:
            await buyer.prepare(phones("01"))
    port = shop.web_port
    answered: list[float] = []
    started = time.monotonic()

    async def one(msisdn: str) -> None:
        body = f"msisdn={msisdn}".encode()
        request = build_request(
            port,
            "POST",
            "/bench/pay-in-request/",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=body,
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            response = parse_response(await reader.read())
            if response.status == 200:
                answered.append(time.monotonic() - started)
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(phones("01"))) for _ in range(held)]
    # The simulator's count stops rising once every gunicorn thread holds one (a few seconds at most).
    last, steady_since = -1, time.monotonic()
    while time.monotonic() - steady_since < 2.0 and time.monotonic() - started < 15.0:
        await asyncio.sleep(0.25)
        now = sampler.pending[-1] if sampler.pending else 0
        if now != last:
            last, steady_since = now, time.monotonic()
    pending_before = last
    meter = CpuMeter()
    meter.start()
    results: list[Paid] = []
    deadline = time.monotonic() + seconds

    async def lane(buyers: list[Buyer]) -> None:
        for buyer in buyers:
            if time.monotonic() >= deadline:
                return
            results.append(await buyer.pay())

    await asyncio.gather(*(lane(buyers) for buyers in lanes))
    cpu = meter.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for buyers in lanes:
        await asyncio.gather(*(b.close() for b in buyers))
    figures = _phase(results, cpu["wall_seconds"], cpu)
    figures["timeouts"] = sum(1 for r in results if r.error in ("ReadTimeout", "ConnectTimeout", "PoolTimeout"))
    return {
        "fired": held,
        "pending_when_buyers_start": pending_before,
        "in_request_answered_during_run": len(answered),
        "other_buyers": figures,
    }


def measure(ctx: RunContext, target: int, seconds: float) -> dict[str, Any]:
    raise_open_file_limit()
    figures: dict[str, Any] = {"target": target, "buyers": BUYERS, "phase_seconds": seconds, "loadavg_start": loadavg()}
    phones = Phones()
    with (
        ctx.simulator("--answer-delay", str(ANSWER_DELAY)) as sim,
        Shop(
            name=DATABASE_NAME,
            workdir=ctx.workdir,
            sim=sim,
            redis_url=REDIS_URL,
            workers=2,
            settings_module="benchmarks.inrequest.settings",
        ) as shop,
    ):
        try:
            sampler = Sampler(shop)
            kulipa: dict[str, Any] = {}
            figures["kulipa"] = kulipa
            kulipa["memory_mb_before"] = {k: round(v / 1024, 1) for k, v in sampler.memory_kb().items()}
            kulipa["machine_memory_before"] = machine_memory_mb()

            # 1. idle
            asyncio.run(_buyers_loop(shop, phones, seconds=1.0))  # warm-up: every gunicorn thread connected
            with sampler:
                results, cpu = asyncio.run(_buyers_loop(shop, phones, seconds=seconds))
            kulipa["idle"] = {**_phase(results, seconds, cpu), **sampler.figures()}
            kulipa["idle"]["seconds_to_record_its_pushes"], _ = _wait_settled(shop, SETTLE_TIMEOUT)

            # 3. held
            sampler = Sampler(shop)
            placer = _place(shop, target, phones.next + 1, ctx.workdir / "pending-place.log")
            phones.next += target
            with sampler:
                out, _ = placer.communicate(timeout=PLACE_TIMEOUT)
                if placer.returncode:
                    raise RuntimeError(f"placing the held orders failed; see {ctx.workdir / 'pending-place.log'}")
                placed = json.loads(out.decode().strip().splitlines()[-1])
                reached = time.monotonic()
                while sampler.pending_now() < target and time.monotonic() - reached < ANSWER_DELAY / 2:
                    time.sleep(0.1)  # poll interval
                at_start = sampler.pending_now()
                sampler.pending.clear()  # the figures of the buyers' phase only
                held_since = time.time() - placed["finished_at"]
                results, cpu = asyncio.run(_buyers_loop(shop, phones, seconds=seconds))
                pushing = shop.attempt_states().get("pushing", 0)
                memory = sampler.memory_kb()
                machine = machine_memory_mb()
            kulipa["held"] = {
                **_phase(results, seconds, cpu),
                **sampler.figures(),
                "placed": placed["placed"],
                "seconds_to_place": round(placed["finished_at"] - placed["started_at"], 2),
                "pending_when_buyers_start": at_start,
                "seconds_from_commit_to_buyers_start": round(held_since, 2),
                "pushing_in_db_after_phase": pushing,
                "rss_mb_after_phase": {k: round(v / 1024, 1) for k, v in memory.items()},
                "machine_memory": machine,
            }
            idle_p95, held_p95 = kulipa["idle"]["p95_ms"], kulipa["held"]["p95_ms"]
            kulipa["p95_held_over_idle"] = round(held_p95 / idle_p95, 2) if idle_p95 and held_p95 else None
            for name in shop.worker_names():
                status = proc_status(shop.pid(name))
                kulipa.setdefault("workers", {})[name] = {
                    "pid": shop.pid(name),
                    "rss_mb": round(status.get("VmRSS", 0) / 1024, 1),
                    "hwm_mb": round(status.get("VmHWM", 0) / 1024, 1),
                    "threads": status.get("Threads"),
                }
            seconds_to_record, states = _wait_settled(shop, SETTLE_TIMEOUT)
            kulipa["after_release"] = {"seconds_to_record_all": seconds_to_record, "states": states}

            # 5. in request
            sampler = Sampler(shop)
            with sampler:
                in_request = asyncio.run(_in_request(shop, sampler, phones, held=target, seconds=seconds))
                in_request["rss_mb_at_end"] = {k: round(v / 1024, 1) for k, v in sampler.memory_kb().items()}
                in_request["machine_memory"] = machine_memory_mb()
            in_request.update(sampler.figures())
            figures["in_request"] = in_request
        finally:
            shop.stop(fast=True)  # gunicorn still holds in-request payments: no graceful wait
            shop.drop_database()
    figures["loadavg_end"] = loadavg()
    held = figures["kulipa"]["held"]
    idle = figures["kulipa"]["idle"]
    figures["targets"] = {
        "pending_at_least_target": (held.get("pending_max") or 0) >= target,
        "held_p95_within_20pct_of_idle": (figures["kulipa"].get("p95_held_over_idle") or 99) <= 1.2,
    }
    states = figures["kulipa"]["after_release"]["states"]
    figures["ok"] = bool(
        not idle["errors"]
        and not held["errors"]
        and held["placed"] == target
        and set(states) == {"succeeded"}
        and figures["kulipa"]["after_release"]["seconds_to_record_all"] is not None
    )
    _table(figures)
    return figures


def _table(f: dict[str, Any]) -> None:
    k, r = f["kulipa"], f["in_request"]
    rows = [
        ("", "pending at once", "pay p50 ms", "pay p95 ms", "pays ok/all", "timeouts"),
        ("kulipa idle", k["idle"]["pending_max"], k["idle"]["p50_ms"], k["idle"]["p95_ms"],
         f"{k['idle']['pays_ok']}/{k['idle']['pays']}", "-"),
        ("kulipa held", k["held"]["pending_max"], k["held"]["p50_ms"], k["held"]["p95_ms"],
         f"{k['held']['pays_ok']}/{k['held']['pays']}", "-"),
        ("C2B in request", r["pending_max"], r["other_buyers"]["p50_ms"], r["other_buyers"]["p95_ms"],
         f"{r['other_buyers']['pays_ok']}/{r['other_buyers']['pays']}", r["other_buyers"]["timeouts"]),
    ]  # fmt: skip
    print(f"pending (target {f['target']}, {f['buyers']} buyers, loadavg {f['loadavg_start']})", file=sys.stderr)
    for row in rows:
        print("  " + " ".join(f"{c!s:>16}" for c in row), file=sys.stderr)
    print(
        f"  held/idle p95: {k['p95_held_over_idle']}; workers RSS MB: "
        + ", ".join(f"{n} {w['rss_mb']}" for n, w in k.get("workers", {}).items())
        + f"; web RSS MB held: {k['held']['rss_mb_after_phase'].get('web_workers')}, in request: "
        f"{r['rss_mb_at_end'].get('web_workers')}",
        file=sys.stderr,
    )


def pending(ctx: RunContext) -> dict[str, Any]:
    if ctx.quick:
        return measure(ctx, TARGET_QUICK, PHASE_QUICK)
    return measure(ctx, TARGET_FULL, PHASE_FULL)


if __name__ == "__main__":
    if sys.argv[1:2] == ["place"]:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kulipa.settings")
        print(json.dumps(_child_place(int(sys.argv[2]), int(sys.argv[3]))), flush=True)
    else:
        print("usage: python -m benchmarks.pending place N FIRST", file=sys.stderr)
        sys.exit(2)
