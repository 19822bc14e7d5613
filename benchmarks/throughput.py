"""Client calls per second against ``mpesa-sandbox serve --answer-delay 0`` (a separate process).

Phases, each bounded by a duration and a call cap: sync ``Client`` sequential C2B (scenario 01), sync status
queries of those payments, then ``AsyncClient`` C2B and status queries with N concurrent workers. A last phase
sends the same C2B requests with aiohttp (not our client) as a reference for what the simulator itself sustains.

In the same run, ``per_call_c2b`` does what the public SDKs do on every call: a new HTTP client (so a new
connection) and a new bearer token (the RSA encryption of the API key) per payment — here a new ``Client`` per call,
whose constructor encrypts the token and opens its own connection pool — against ``sync_c2b`` (one ``Client``
reusing its connection and its token); ``per_call_ratio`` is how many times more calls per second ours makes.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from benchmarks.common import RunContext, Simulator, latency_summary
from mpesa import AsyncClient, Client, Outcome, QueryResult, Result, TransactionStatus

SUCCESS_MSISDN = "258840000001"
AMOUNT = "10"
TRANSACTION_REFERENCE = "T12345"
WARMUP_CALLS = 20
_SWEEP_KEYS = ("calls_per_s", "p50_ms", "p95_ms", "errors")


class _References:
    """Unique alphanumeric ThirdPartyReferences (<= 20 chars) for one run."""

    def __init__(self) -> None:
        self._prefix = "B" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(4))
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter)}"


def _is_error(result: Result) -> bool:
    """A non-success outcome; for a status query also a payment that is not reported ``Completed``."""
    if result.outcome is not Outcome.SUCCESS:
        return True
    return isinstance(result, QueryResult) and result.transaction_status is not TransactionStatus.COMPLETED


def _phase(latencies: list[float], results: list[Result], elapsed: float, **extra: Any) -> dict[str, Any]:
    errors = [r for r in results if _is_error(r)]
    return {
        "calls": len(results),
        "seconds": round(elapsed, 3),
        "calls_per_s": round(len(results) / elapsed, 1) if elapsed > 0 else None,
        **latency_summary(latencies),
        "errors": len(errors),
        "error_examples": sorted({f"{r.outcome.value}/{r.code}/{r.error}" for r in errors})[:5],
        **extra,
    }


def _sync_phase(call: Callable[[int], Result], duration: float, max_calls: int) -> tuple[dict[str, Any], list[Result]]:
    latencies: list[float] = []
    results: list[Result] = []
    started = time.perf_counter()
    deadline = started + duration
    for i in range(max_calls):
        t0 = time.perf_counter()
        results.append(call(i))
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if t1 >= deadline:
            break
    return _phase(latencies, results, time.perf_counter() - started), results


async def _async_phase(
    call: Callable[[int], Awaitable[Result]], duration: float, max_calls: int, concurrency: int
) -> tuple[dict[str, Any], list[Result]]:
    latencies: list[float] = []
    results: list[Result] = []
    counter = itertools.count()
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            if i >= max_calls:
                return
            t0 = time.perf_counter()
            result = await call(i)
            latencies.append(time.perf_counter() - t0)
            results.append(result)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _phase(latencies, results, time.perf_counter() - started, concurrency=concurrency), results


async def _aiohttp_reference(
    sim: Simulator, ref: _References, duration: float, max_calls: int, concurrency: int
) -> dict[str, Any]:
    """The C2B phase with a plain aiohttp session (keep-alive pool): the simulator's ceiling, not our client."""
    from mpesa.token import encrypt_api_key, load_public_key

    token = encrypt_api_key(sim.api_key, load_public_key(sim.public_key))
    url = f"http://127.0.0.1:{sim.ports.c2b}/ipg/v1x/c2bPayment/singleStage/"
    latencies: list[float] = []
    codes: list[str] = []
    counter = itertools.count()
    headers = {"Authorization": f"Bearer {token}", "Origin": "developer.mpesa.vm.co.mz"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            while time.perf_counter() < deadline and next(counter) < max_calls:
                body = {
                    "input_TransactionReference": TRANSACTION_REFERENCE,
                    "input_CustomerMSISDN": SUCCESS_MSISDN,
                    "input_Amount": AMOUNT,
                    "input_ThirdPartyReference": ref(),
                    "input_ServiceProviderCode": "171717",
                }
                t0 = time.perf_counter()
                async with session.post(url, json=body) as response:
                    data = await response.json()
                latencies.append(time.perf_counter() - t0)
                codes.append(str(data.get("output_ResponseCode")))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "calls": len(codes),
        "seconds": round(elapsed, 3),
        "calls_per_s": round(len(codes) / elapsed, 1),
        **latency_summary(latencies),
        "errors": sum(code != "INS-0" for code in codes),
        "concurrency": concurrency,
    }


def client_throughput(ctx: RunContext) -> dict[str, Any]:
    duration = 1.0 if ctx.quick else 3.0
    max_calls = 2_000 if ctx.quick else 50_000
    concurrency = 20 if ctx.quick else 100
    sweep = (5,) if ctx.quick else (10, 50)
    ref = _References()
    out: dict[str, Any] = {
        "duration_per_phase_s": duration,
        "max_calls_per_phase": max_calls,
        "msisdn": SUCCESS_MSISDN,
        "warmup_calls": WARMUP_CALLS,
    }
    with ctx.simulator() as sim:
        config = sim.client_config()
        out["simulator_pid"] = sim.pid
        with Client(config) as client:

            def c2b(_: int) -> Result:
                return client.c2b_payment(
                    amount=AMOUNT,
                    msisdn=SUCCESS_MSISDN,
                    transaction_reference=TRANSACTION_REFERENCE,
                    third_party_reference=ref(),
                )

            for i in range(WARMUP_CALLS):
                c2b(i)
            out["sync_c2b"], paid = _sync_phase(c2b, duration, max_calls)
            paid_ids = [r.transaction_id for r in paid if r.ok and r.transaction_id] or ["N/A"]

            def query(i: int) -> Result:
                return client.query_transaction_status(
                    query_reference=paid_ids[i % len(paid_ids)], third_party_reference=ref()
                )

            out["sync_query"], _ = _sync_phase(query, duration, max_calls)

        def per_call_c2b(_: int) -> Result:
            """The public SDKs' way: a new HTTP client (new connection) and a new token for every call."""
            with Client(config) as fresh:
                return fresh.c2b_payment(
                    amount=AMOUNT,
                    msisdn=SUCCESS_MSISDN,
                    transaction_reference=TRANSACTION_REFERENCE,
                    third_party_reference=ref(),
                )

        for i in range(3):
            per_call_c2b(i)
        out["per_call_c2b"], _ = _sync_phase(per_call_c2b, duration, max_calls)
        ours, theirs = out["sync_c2b"]["calls_per_s"], out["per_call_c2b"]["calls_per_s"]
        out["per_call_ratio"] = round(ours / theirs, 1) if ours and theirs else None

        async def run_async() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            async with AsyncClient(config) as client:

                async def c2b(_: int) -> Result:
                    return await client.c2b_payment(
                        amount=AMOUNT,
                        msisdn=SUCCESS_MSISDN,
                        transaction_reference=TRANSACTION_REFERENCE,
                        third_party_reference=ref(),
                    )

                await asyncio.gather(*(c2b(i) for i in range(min(concurrency, WARMUP_CALLS * 5))))
                c2b_figures, paid = await _async_phase(c2b, duration, max_calls, concurrency)
                ids = [r.transaction_id for r in paid if r.ok and r.transaction_id] or ["N/A"]

                async def query(i: int) -> Result:
                    return await client.query_transaction_status(
                        query_reference=ids[i % len(ids)], third_party_reference=ref()
                    )

                query_figures, _ = await _async_phase(query, duration, max_calls, concurrency)
                by_concurrency: dict[str, Any] = {}
                for level in sweep:
                    figures, _ = await _async_phase(c2b, duration, max_calls, level)
                    by_concurrency[str(level)] = {k: figures[k] for k in _SWEEP_KEYS}
                by_concurrency[str(concurrency)] = {k: c2b_figures[k] for k in _SWEEP_KEYS}
                return c2b_figures, query_figures, by_concurrency

        out["async_c2b"], out["async_query"], out["async_c2b_by_concurrency"] = asyncio.run(run_async())
        out["reference_aiohttp_c2b"] = asyncio.run(_aiohttp_reference(sim, ref, duration, max_calls, concurrency))
        out["simulator_rss_mb_after"] = round(sim.memory_kb()["VmRSS"] / 1024, 1)
    phases = ("sync_c2b", "sync_query", "per_call_c2b", "async_c2b", "async_query")
    out["errors"] = sum(out[p]["errors"] for p in phases) + sum(
        level["errors"] for level in out["async_c2b_by_concurrency"].values()
    )
    out["ok"] = out["errors"] == 0 and all(out[p]["calls"] > 0 for p in phases)
    return out
