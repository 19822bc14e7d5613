"""Time to paid: from the customer's approval on the phone to the ORDER PAGE showing "paid", p50/p95.

The production set-up of :mod:`benchmarks.stack` (PostgreSQL, huey on Redis, two ``run_huey`` workers, gunicorn,
``DJANGO_DEBUG=0``, sync mode: the worker holds the C2B request until M-Pesa answers) and ``mpesa-sandbox serve``;
every payment is from its own number ending in ``00`` (the simulated customer answers on the phone page).

Per payment, ``LANES`` at a time: a buyer goes add to cart → checkout page → pay, and loads the order page. From
then on a *page* task asks the status URL exactly as the page's script does — the first request and the interval
between requests read from the page itself (``data-poll-first-ms``, ``data-poll-ms``, ``data-poll-slow-ms``,
``data-poll-fast-for-s`` on ``#payment``; a page without them is the old script: 2 s, every 2 s) — until it
answers ``paid``. Meanwhile a *customer* task waits for the prompt on the simulator's phone API
(``GET /sandbox/phone/<msisdn>/prompts``), waits 0.5–3 s (reading it and typing the PIN; this also spreads the
approvals over the poll cycle), and approves (``POST .../prompts/<conversation>/approve``). Time to paid = the page
task seeing ``paid`` − the moment the approval was sent. Also from the database: ``paid_at`` − the approval (the
shop knowing; same clock), and the cost of the polling: how many status requests per second the server answers
with ``POLLERS`` clients asking at once (the budget for pages waiting at the poll interval).

``python -m benchmarks --only time_to_paid [--quick]`` (50 payments, 10 with ``--quick``).
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from typing import Any

import httpx

from benchmarks.common import RunContext, latency_summary
from benchmarks.stack import Buyer, CpuMeter, Phones, Shop, loadavg

COUNT_FULL = 50
COUNT_QUICK = 10
LANES = 5
POLLERS = 8
CAPACITY_SECONDS = 3.0
REDIS_URL = "redis://127.0.0.1:6379/7"
PIN = "1234"
OLD_PAGE = {"first_ms": 2000, "ms": 2000, "slow_ms": 2000, "fast_for_s": 0}
"""The order page's script before it carried its cadence: ``setTimeout(poll, 2000)`` after each answer."""
PAY_TIMEOUT = 60.0
_DATA = re.compile(r'data-(status-url|poll-first-ms|poll-ms|poll-slow-ms|poll-fast-for-s)="([^"]*)"')


def _cadence(page: str) -> tuple[str, dict[str, int]]:
    found = dict(_DATA.findall(page))
    cadence = dict(OLD_PAGE)
    for attribute, key in (
        ("poll-first-ms", "first_ms"),
        ("poll-ms", "ms"),
        ("poll-slow-ms", "slow_ms"),
        ("poll-fast-for-s", "fast_for_s"),
    ):
        if attribute in found:
            cadence[key] = int(found[attribute])
    return found["status-url"], cadence


async def _one(shop: Shop, sim_url: str, phones: Phones, rng: random.Random) -> dict[str, Any]:
    msisdn = phones("00")
    buyer = Buyer(shop.web, shop.product_id)
    try:
        await buyer.prepare(msisdn)
        placed = await buyer.pay()
        if placed.error:
            return {"error": f"pay: {placed.error}"}
        page = await buyer.client.get(placed.location)
        loaded = time.time()
        status_url, cadence = _cadence(page.text)
        approved: list[float] = []
        polls: list[float] = []

        async def customer() -> None:
            async with httpx.AsyncClient(base_url=sim_url, timeout=30) as phone:
                while True:
                    prompts = (await phone.get(f"/sandbox/phone/{msisdn}/prompts")).json()["prompts"]
                    if prompts:
                        break
                    await asyncio.sleep(0.05)  # poll interval of the "phone"
                await asyncio.sleep(rng.uniform(0.5, 3.0))  # the person reads the prompt and types the PIN
                cid = prompts[0]["conversation_id"]
                approved.append(time.time())
                answer = await phone.post(f"/sandbox/phone/{msisdn}/prompts/{cid}/approve", json={"pin": PIN})
                answer.raise_for_status()

        async def page_script() -> float:
            delay = cadence["first_ms"] / 1000
            while True:
                await asyncio.sleep(delay)
                t0 = time.perf_counter()
                answer = await buyer.client.get(status_url, headers={"Accept": "application/json"})
                polls.append(time.perf_counter() - t0)
                data = answer.json() if answer.status_code == 200 else {}
                if data.get("paid"):
                    return time.time()
                if data.get("final"):
                    raise RuntimeError(f"final without paid: {data.get('payment_status')}")
                fast = time.time() - loaded < cadence["fast_for_s"]
                delay = (cadence["ms"] if fast else cadence["slow_ms"]) / 1000

        _, seen = await asyncio.wait_for(asyncio.gather(customer(), page_script()), PAY_TIMEOUT)
        public_id = placed.location.rstrip("/").rsplit("/", 1)[-1]
        rows = shop.sql(f"SELECT extract(epoch from paid_at) FROM orders_order WHERE public_id = '{public_id}'")
        paid_at = float(rows[0][0]) if rows and rows[0][0] else None
        return {
            "page_seconds": seen - approved[0],
            "recorded_seconds": paid_at - approved[0] if paid_at else None,
            "polls": polls,
            "cadence": cadence,
        }
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        await buyer.close()


async def _payments(shop: Shop, sim_url: str, count: int) -> list[dict[str, Any]]:
    phones = Phones()
    rng = random.Random(9)
    queue = list(range(count))
    results: list[dict[str, Any]] = []

    async def lane() -> None:
        while queue:
            queue.pop()
            results.append(await _one(shop, sim_url, phones, rng))

    await asyncio.gather(*(lane() for _ in range(LANES)))
    return results


async def _status_capacity(shop: Shop, status_url: str) -> dict[str, Any]:
    """``POLLERS`` clients asking one order's status URL back to back for ``CAPACITY_SECONDS``."""
    latencies: list[float] = []
    meter = CpuMeter()
    meter.start()
    deadline = time.monotonic() + CAPACITY_SECONDS

    async def poller() -> None:
        async with httpx.AsyncClient(base_url=shop.web, timeout=30) as client:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                answer = await client.get(status_url, headers={"Accept": "application/json"})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(poller() for _ in range(POLLERS)))
    cpu = meter.stop()
    return {
        "pollers": POLLERS,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / cpu["wall_seconds"], 1),
        **latency_summary(latencies),
        "load_generator_cpu": cpu,
    }


def time_to_paid(ctx: RunContext) -> dict[str, Any]:
    count = COUNT_QUICK if ctx.quick else COUNT_FULL
    figures: dict[str, Any] = {"payments": count, "lanes": LANES, "loadavg_start": loadavg()}
    with (
        ctx.simulator() as sim,
        Shop(name="pending_ttp", workdir=ctx.workdir, sim=sim, redis_url=REDIS_URL, workers=2) as shop,
    ):
        try:
            sim_url = f"http://127.0.0.1:{sim.ports.c2b}"
            results = asyncio.run(_payments(shop, sim_url, count))
            good = [r for r in results if "error" not in r]
            errors = [r["error"] for r in results if "error" in r]
            page = [r["page_seconds"] for r in good]
            recorded = [r["recorded_seconds"] for r in good if r["recorded_seconds"] is not None]
            polls = [p for r in good for p in r["polls"]]
            figures.update(
                cadence=good[0]["cadence"] if good else None,
                approval_to_page_paid=latency_summary(page),
                approval_to_paid_in_database=latency_summary(recorded),
                status_request=latency_summary(polls),
                status_requests_per_payment=round(len(polls) / len(good), 1) if good else None,
                errors=len(errors),
                error_examples=sorted(set(errors))[:5],
            )
            orders = shop.sql("SELECT public_id FROM orders_order ORDER BY id LIMIT 1")
            if orders:
                capacity = asyncio.run(_status_capacity(shop, f"/pedido/{orders[0][0]}/estado/"))
                interval = (figures["cadence"] or OLD_PAGE)["ms"] / 1000
                capacity["pages_polling_at_once"] = int(capacity["requests_per_s"] * interval)
                figures["status_capacity"] = capacity
        finally:
            shop.stop()
            shop.drop_database()
    figures["loadavg_end"] = loadavg()
    p95 = figures["approval_to_page_paid"]["p95_ms"]
    figures["target_p95_le_1s"] = p95 is not None and p95 <= 1000
    figures["ok"] = figures["errors"] == 0 and len(page) == count
    print(
        f"time_to_paid ({count} payments, cadence {figures['cadence']}, loadavg {figures['loadavg_start']})\n"
        f"  approval -> page paid   p50 {figures['approval_to_page_paid']['p50_ms']} ms, p95 {p95} ms\n"
        f"  approval -> paid in DB  p50 {figures['approval_to_paid_in_database']['p50_ms']} ms, "
        f"p95 {figures['approval_to_paid_in_database']['p95_ms']} ms\n"
        f"  status polls: {figures.get('status_capacity', {}).get('requests_per_s')} req/s at {POLLERS} clients "
        f"= {figures.get('status_capacity', {}).get('pages_polling_at_once')} pages waiting at the poll interval",
        file=sys.stderr,
    )
    return figures
