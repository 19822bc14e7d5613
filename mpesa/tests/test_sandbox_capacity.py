"""Capacity: the simulator holds many C2B requests open at once without threads or busy loops.

1,000 here to keep the suite fast; the benchmark in ``benchmarks/`` measures 5,000.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from mpesa.sandbox import ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings, payment_body

pytestmark = pytest.mark.timeout(120)

HELD = 1000


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    with run_in_thread(fast_settings(push_window=120.0)) as running:
        yield running


async def held_c2b(host: str, port: int, path: str, token: str, msisdn: str) -> tuple[int, dict[str, str]]:
    """One raw HTTP/1.1 C2B request on its own connection; returns (status, body) once answered."""
    body = json.dumps(payment_body(msisdn=msisdn)).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


async def test_holds_a_thousand_pending_c2b_requests(sandbox: ThreadedSandbox) -> None:
    url = urlsplit(sandbox.url("c2b"))
    assert url.hostname is not None and url.port is not None
    token = sandbox.bearer_token()
    requests = [
        asyncio.create_task(held_c2b(url.hostname, url.port, url.path, token, f"2588{4 + i % 2}{i:05d}00"))
        for i in range(HELD)
    ]
    async with httpx.AsyncClient(timeout=20) as control:
        deadline = time.monotonic() + 60
        while True:
            listing = (await control.get(f"{sandbox.control_url}/transactions", params={"status": "Completed"})).json()
            if listing["pending"] == HELD:
                break
            assert not any(r.done() for r in requests), "a held request was answered early"
            assert time.monotonic() < deadline, f"only {listing['pending']} of {HELD} pending"
            await asyncio.sleep(0.05)
        pending = (await control.get(f"{sandbox.control_url}/transactions", params={"status": "Pending"})).json()
        assert pending["count"] == HELD
        # still responsive while holding them all
        started = time.monotonic()
        assert (await control.get(f"{sandbox.control_url}/config")).status_code == 200
        assert time.monotonic() - started < 2
        await control.post(f"{sandbox.control_url}/reset")  # answers every held request: push expired
    results = await asyncio.wait_for(asyncio.gather(*requests), 60)
    assert {(status, body["output_ResponseCode"]) for status, body in results} == {(408, "INS-9")}
