"""Simulator capacity: how many C2B requests waiting for a person (scenario 00) one process holds, and its memory.

Opens N connections from raw asyncio streams (a valid HTTP/1.1 POST with a valid bearer token each), polls the
control API until the simulator reports all N pending, reads the simulator's RSS from ``/proc/<pid>/status``,
then ``POST /sandbox/reset`` answers every held request with INS-9 and each client must get an HTTP response.
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import string
import time
from typing import Any

from benchmarks.common import (
    HOST,
    POLL_INTERVAL,
    RawResponse,
    RunContext,
    Simulator,
    build_request,
    parse_response,
    raise_open_file_limit,
)
from mpesa.sandbox.settings import DEFAULT_SERVICE_PROVIDER_CODE
from mpesa.token import encrypt_api_key, load_public_key

C2B_PATH = "/ipg/v1x/c2bPayment/singleStage/"
CONNECT_CONCURRENCY = 256
"""Connections being opened and written at the same time (below the listen backlog, somaxconn is often 4096)."""
REACH_TIMEOUT = 60.0
RELEASE_TIMEOUT = 60.0
PUSH_WINDOW = 600.0
"""Long enough that no prompt expires during the run; the reset releases them."""
TARGET_FULL = 5_000
TARGET_QUICK = 200
# An MSISDN no request uses: the transaction list filtered on it is empty, so the poll is cheap while the
# ``pending`` field still counts every held request (``GET /sandbox/transactions`` reports both).
_NOBODY = "258849999999"


def _msisdn(i: int) -> str:
    """Numbers ending in 00 (wait for a person), spread over 100 phones."""
    return f"2588400{i % 100:03d}00"


async def _control(port: int, method: str, path: str) -> Any:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(build_request(port, method, path))
        await writer.drain()
        response = parse_response(await asyncio.wait_for(reader.read(), 30))
    finally:
        writer.close()
    if response.status >= 400:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}")
    return response.json()


async def _hold(
    port: int, request: bytes, connect: asyncio.Semaphore, sent: list[int], timeout: float
) -> RawResponse | BaseException:
    """Send one C2B and wait for its answer. ``connect`` bounds how many connections are being opened at once."""
    try:
        async with connect:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            await writer.drain()
        sent.append(1)
        try:
            return parse_response(await asyncio.wait_for(reader.read(), timeout))
        finally:
            writer.close()
    except (OSError, ValueError, TimeoutError) as exc:
        return exc


async def _run(sim: Simulator, target: int) -> dict[str, Any]:
    port = sim.ports.c2b
    token = encrypt_api_key(sim.api_key, load_public_key(sim.public_key))
    prefix = "C" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(4))
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Origin": "developer.mpesa.vm.co.mz",
    }

    def body(i: int) -> bytes:
        return json.dumps(
            {
                "input_TransactionReference": "T12345",
                "input_CustomerMSISDN": _msisdn(i),
                "input_Amount": "10",
                "input_ThirdPartyReference": f"{prefix}{i}",
                "input_ServiceProviderCode": DEFAULT_SERVICE_PROVIDER_CODE,
            }
        ).encode()

    requests = [build_request(port, "POST", C2B_PATH, headers=headers, body=body(i)) for i in range(target)]
    poll_path = f"/sandbox/transactions?msisdn={_NOBODY}"

    # Warm up the paths the load will take (token decryption is cached per distinct token), then settle.
    warm_request = build_request(port, "POST", C2B_PATH, headers=headers, body=body(target))
    warm = asyncio.create_task(_hold(port, warm_request, asyncio.Semaphore(1), [], 30))
    for _ in range(int(30 / POLL_INTERVAL)):
        if (await _control(port, "GET", poll_path))["pending"] >= 1 or warm.done():
            break
        await asyncio.sleep(POLL_INTERVAL)
    await _control(port, "POST", "/sandbox/reset")
    await warm
    idle = sim.memory_kb()

    connect = asyncio.Semaphore(CONNECT_CONCURRENCY)
    sent: list[int] = []
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(_hold(port, req, connect, sent, REACH_TIMEOUT + RELEASE_TIMEOUT + 30)) for req in requests
    ]
    pending = 0
    peak_rss = idle["VmRSS"]
    reached_at: float | None = None
    deadline = started + REACH_TIMEOUT
    while time.perf_counter() < deadline:
        pending = (await _control(port, "GET", poll_path))["pending"]
        peak_rss = max(peak_rss, sim.memory_kb()["VmRSS"])
        if pending >= target:
            reached_at = time.perf_counter()
            break
        if all(t.done() for t in tasks):
            break  # every client failed or was answered early: nothing more will arrive
        await asyncio.sleep(POLL_INTERVAL)
    at_peak = sim.memory_kb()
    peak_rss = max(peak_rss, at_peak["VmRSS"])
    listed = await _control(port, "GET", "/sandbox/transactions?status=Pending")
    prompts = await _control(port, "GET", f"/sandbox/phone/{_msisdn(0)}/prompts")

    released_at = time.perf_counter()
    await _control(port, "POST", "/sandbox/reset")
    done, not_done = await asyncio.wait(tasks, timeout=RELEASE_TIMEOUT)
    released = time.perf_counter() - released_at
    for task in not_done:
        task.cancel()
    outcomes: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for task in done:
        result = task.result()
        if isinstance(result, RawResponse):
            statuses[str(result.status)] += 1
            try:
                outcomes[str(result.json().get("output_ResponseCode"))] += 1
            except ValueError:
                outcomes["unparseable body"] += 1
        else:
            outcomes[f"client error: {type(result).__name__}"] += 1
    outcomes["no answer within the release timeout"] += len(not_done)
    after = sim.memory_kb()
    answered = sum(statuses.values())
    held = max(pending, listed["count"])
    grown_kb = peak_rss - idle["VmRSS"]
    return {
        "target": target,
        "held": held,
        "listed_pending": listed["count"],
        "prompts_on_one_phone": len(prompts["prompts"]),
        "requests_sent": len(sent),
        "seconds_to_all_pending": round(reached_at - started, 3) if reached_at else None,
        "rss_mb_idle": round(idle["VmRSS"] / 1024, 1),
        "rss_mb_peak": round(peak_rss / 1024, 1),
        "rss_mb_after_release": round(after["VmRSS"] / 1024, 1),
        "hwm_mb": round(after["VmHWM"] / 1024, 1),
        "kb_per_pending": round(grown_kb / held, 1) if held else None,
        "seconds_to_release_all": round(released, 3),
        "answered": answered,
        "http_statuses": dict(statuses),
        "response_codes": {k: v for k, v in outcomes.items() if v},
        "connect_concurrency": CONNECT_CONCURRENCY,
        "ok": held >= target and answered == target and statuses.get("408", 0) == target,
    }


def simulator_capacity(ctx: RunContext) -> dict[str, Any]:
    target = TARGET_QUICK if ctx.quick else TARGET_FULL
    nofile = raise_open_file_limit()
    if nofile < target + 256:
        return {"ok": False, "error": f"open file limit {nofile} is too low for {target} connections"}
    with ctx.simulator("--push-window", str(PUSH_WINDOW)) as sim:
        figures = asyncio.run(_run(sim, target))
        figures["simulator_pid"] = sim.pid
    figures["client_nofile_limit"] = nofile
    return figures
