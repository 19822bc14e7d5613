"""Async mode: C2B answered at once, result POSTed to a local receiver, with retries and injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from mpesa.sandbox import RuntimeConfig, SandboxConfigError, SandboxSettings, ThreadedSandbox, run_in_thread
from mpesa.sandbox import validate_callback_url as validate
from mpesa.sandbox.cli import main as cli_main
from mpesa.sandbox.testing import fast_settings, payment_body

pytestmark = pytest.mark.timeout(60)


class Receiver:
    """A merchant's result listener that can be told to fail its next N requests."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures = 0
        self.url = ""
        self._changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"error": "not now"}, status=500)
        self.received.append(await request.json())
        self._changed.set()
        return web.json_response({"output_ResponseCode": "0", "output_ResponseDesc": "Successfully Accepted Result"})

    async def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"got {len(self.received)} callbacks, wanted {count}"
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.received


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    with run_in_thread(fast_settings()) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/mpesa/result", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/mpesa/result"
    yield receiver
    await runner.cleanup()


@pytest.fixture
async def http(sandbox: ThreadedSandbox, receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {sandbox.bearer_token()}"}, timeout=20) as client:
        await client.post(f"{sandbox.control_url}/reset")
        config = {"callback_url": receiver.url, "allow_insecure_callbacks": True}
        response = await client.put(f"{sandbox.control_url}/config", json=config)
        assert response.status_code == 200, response.text
        yield client


async def deliveries(http: httpx.AsyncClient, sandbox: ThreadedSandbox) -> list[dict[str, Any]]:
    return list((await http.get(f"{sandbox.control_url}/callbacks")).json()["deliveries"])


async def wait_until(check: Callable[[], Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_c2b_answers_at_once_and_posts_the_result(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.put(f"{sandbox.control_url}/config", json={"answer_delay": 0.2})
    body = payment_body()
    started = time.monotonic()
    response = await http.post(sandbox.url("c2b"), json=body)
    assert time.monotonic() - started < 0.2
    data = response.json()
    assert (response.status_code, data["output_ResponseCode"], data["output_TransactionID"]) == (201, "INS-0", "N/A")
    [result] = await receiver.wait_for(1)
    assert result["input_OriginalConversationID"] == data["output_ConversationID"]
    assert result["input_ThirdPartyReference"] == body["input_ThirdPartyReference"]
    assert (result["input_ResultCode"], result["input_ResultDesc"]) == ("INS-0", "Request processed successfully")
    query = await http.get(
        sandbox.url("query"),
        params={
            "input_QueryReference": result["input_TransactionID"],
            "input_ThirdPartyReference": "Q1",
            "input_ServiceProviderCode": "171717",
        },
    )
    assert query.json()["output_ResponseTransactionStatus"] == "Completed"


@pytest.mark.parametrize(("suffix", "code"), [("02", "INS-2006"), ("03", "INS-5"), ("04", "INS-9")])
async def test_failure_outcomes_are_delivered(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver, suffix: str, code: str
) -> None:
    await http.put(f"{sandbox.control_url}/config", json={"push_window": 0.1})
    response = await http.post(sandbox.url("c2b"), json=payment_body(msisdn=f"2588412345{suffix}"))
    assert response.json()["output_ResponseCode"] == "INS-0"
    [result] = await receiver.wait_for(1)
    assert result["input_ResultCode"] == code


async def test_overload_is_still_answered_synchronously(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(sandbox.url("c2b"), json=payment_body(msisdn="258841234507"))
    assert (response.status_code, response.json()["output_ResponseCode"]) == (503, "INS-16")


async def test_scenario_08_completes_but_the_delivery_is_lost(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post(sandbox.url("c2b"), json=payment_body(msisdn="258841234508"))
    await http.post(sandbox.url("c2b"), json=payment_body())  # a later one arrives: the first was really lost
    [result] = await receiver.wait_for(1)
    assert result["input_ResultCode"] == "INS-0"
    log = await deliveries(http, sandbox)
    assert sorted(d["state"] for d in log) == ["delivered", "dropped"]
    listing = (await http.get(f"{sandbox.control_url}/transactions")).json()
    assert {tx["status"] for tx in listing["transactions"]} == {"Completed"}


async def test_phone_approval_is_delivered(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    data = (await http.post(sandbox.url("c2b"), json=payment_body(msisdn="258840000000"))).json()
    url = f"{sandbox.phone_url('258840000000')}/prompts/{data['output_ConversationID']}/approve"
    assert (await http.post(url, json={"pin": "1234"})).status_code == 200
    [result] = await receiver.wait_for(1)
    assert (result["input_OriginalConversationID"], result["input_ResultCode"]) == (
        data["output_ConversationID"],
        "INS-0",
    )


async def test_retries_while_the_receiver_fails(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.failures = 2
    await http.post(sandbox.url("c2b"), json=payment_body())
    await receiver.wait_for(1)
    [delivery] = await deliveries(http, sandbox)
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [500, 500, 200]


async def test_gives_up_after_the_attempts(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.failures = 100
    await http.put(f"{sandbox.control_url}/config", json={"callback_attempts": 3})
    await http.post(sandbox.url("c2b"), json=payment_body())

    async def failed() -> bool:
        log = await deliveries(http, sandbox)
        return bool(log) and log[0]["state"] == "failed"

    await wait_until(failed)
    assert len((await deliveries(http, sandbox))[0]["attempts"]) == 3


async def test_connection_errors_are_retried(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    config = {"callback_url": f"http://127.0.0.1:{closed_port}/x", "callback_attempts": 2}
    await http.put(f"{sandbox.control_url}/config", json=config)
    await http.post(sandbox.url("c2b"), json=payment_body())

    async def failed() -> bool:
        log = await deliveries(http, sandbox)
        return bool(log) and log[0]["state"] == "failed"

    await wait_until(failed)
    attempts = (await deliveries(http, sandbox))[0]["attempts"]
    assert len(attempts) == 2 and all("error" in a for a in attempts)


async def test_duplicate_deliveries(sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver) -> None:
    faults = await http.post(f"{sandbox.control_url}/faults", json={"duplicate_callbacks": 3})
    assert faults.json()["duplicate_callbacks"] == 3
    await http.post(sandbox.url("c2b"), json=payment_body())
    results = await receiver.wait_for(3)
    assert len({r["input_OriginalConversationID"] for r in results}) == 1


async def test_dropped_deliveries(sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver) -> None:
    await http.post(f"{sandbox.control_url}/faults", json={"drop_callbacks": 1})
    first = (await http.post(sandbox.url("c2b"), json=payment_body())).json()
    second = (await http.post(sandbox.url("c2b"), json=payment_body())).json()
    [result] = await receiver.wait_for(1)
    assert result["input_OriginalConversationID"] == second["output_ConversationID"]
    states = {d["conversation_id"]: d["state"] for d in await deliveries(http, sandbox)}
    assert states[first["output_ConversationID"]] == "dropped"
    assert (await http.get(f"{sandbox.control_url}/faults")).json()["drop_callbacks"] == 0


async def test_delayed_deliveries(sandbox: ThreadedSandbox, http: httpx.AsyncClient, receiver: Receiver) -> None:
    await http.post(f"{sandbox.control_url}/faults", json={"delay_callbacks": 0.3})
    started = time.monotonic()
    await http.post(sandbox.url("c2b"), json=payment_body())
    await receiver.wait_for(1)
    assert time.monotonic() - started >= 0.3


async def test_bad_faults_are_refused(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    for change in ({"drop_callbacks": -1}, {"delay_callbacks": "x"}, {"explode": True}):
        assert (await http.post(f"{sandbox.control_url}/faults", json=change)).status_code == 400


async def test_http_callback_refused_without_the_dev_flag(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    await http.post(f"{sandbox.control_url}/reset")
    response = await http.put(f"{sandbox.control_url}/config", json={"callback_url": "http://127.0.0.1:12000/cb"})
    assert response.status_code == 400
    assert "HTTPS" in response.json()["error"]
    assert (await http.get(f"{sandbox.control_url}/config")).json()["callback_url"] is None


def test_callback_url_rule() -> None:
    assert validate("https://shop.example:12000/cb", allow_insecure=False)
    for url in ("http://shop.example:12000/cb", "https://shop.example/cb", "https://shop.example:19001/cb", "ftp://x"):
        with pytest.raises(SandboxConfigError):
            validate(url, allow_insecure=False)
    assert validate("http://127.0.0.1:8000/cb", allow_insecure=True)
    with pytest.raises(SandboxConfigError):
        SandboxSettings(runtime=RuntimeConfig(callback_url="http://127.0.0.1:8000/cb"))


def test_cli_refuses_http_callback_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--callback-url", "http://127.0.0.1:8000/cb", "--port-offset", "1"]) == 2
    assert "allow-insecure-callbacks" in capsys.readouterr().err
