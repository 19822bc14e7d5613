"""The phone page and its JSON/form endpoints: a person approving or declining a held C2B request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mpesa.sandbox import ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings, payment_body

pytestmark = pytest.mark.timeout(60)

NUMBER = "258840000000"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    with run_in_thread(fast_settings(push_window=30.0)) as running:
        yield running


@pytest.fixture
async def http(sandbox: ThreadedSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {sandbox.bearer_token()}"}, timeout=20) as client:
        await client.post(f"{sandbox.control_url}/reset")
        yield client


async def wait_for_prompt(http: httpx.AsyncClient, sandbox: ThreadedSandbox, msisdn: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        prompts = (await http.get(f"{sandbox.phone_url(msisdn)}/prompts")).json()["prompts"]
        if prompts:
            return dict(prompts[0])
        await asyncio.sleep(0.01)
    raise AssertionError("no prompt appeared")


async def test_page_shows_a_pending_prompt(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    empty = await http.get(sandbox.phone_url(NUMBER))
    assert empty.status_code == 200 and "text/html" in empty.headers["content-type"]
    assert "No payment requests" in empty.text
    assert "/prompts" in empty.text  # the polling script
    body = payment_body(msisdn=NUMBER, amount="125.50", input_TransactionReference="ORDER42")
    held = asyncio.create_task(http.post(sandbox.url("c2b"), json=body))
    prompt = await wait_for_prompt(http, sandbox, NUMBER)
    assert (prompt["amount"], prompt["reference"]) == ("125.50", "ORDER42")
    assert "171717" in prompt["merchant"]
    assert 0 < prompt["expires_in"] <= 30
    page = (await http.get(sandbox.phone_url(NUMBER))).text
    assert "125.50" in page and "ORDER42" in page and prompt["conversation_id"] in page
    decline = await http.post(f"{sandbox.phone_url(NUMBER)}/prompts/{prompt['conversation_id']}/decline")
    assert decline.json() == {
        "conversation_id": prompt["conversation_id"],
        "result_code": "INS-5",
        "status": "Cancelled",
    }
    response = await held
    assert (response.status_code, response.json()["output_ResponseCode"]) == (401, "INS-5")


async def test_form_approve_redirects_back(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    held = asyncio.create_task(http.post(sandbox.url("c2b"), json=payment_body(msisdn=NUMBER)))
    prompt = await wait_for_prompt(http, sandbox, NUMBER)
    url = f"{sandbox.phone_url(NUMBER)}/prompts/{prompt['conversation_id']}/approve"
    bad_pin = await http.post(url, data={"pin": "12"}, headers={"Accept": "application/json"})
    assert bad_pin.status_code == 400
    approve = await http.post(url, data={"pin": "0000"})
    assert approve.status_code == 303
    assert approve.headers["location"] == f"/sandbox/phone/{NUMBER}"
    response = await held
    assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")
    again = await http.post(url, json={"pin": "0000"})
    assert again.status_code == 404


async def test_prompt_belongs_to_its_number(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    held = asyncio.create_task(http.post(sandbox.url("c2b"), json=payment_body(msisdn=NUMBER)))
    prompt = await wait_for_prompt(http, sandbox, NUMBER)
    other = await http.post(
        f"{sandbox.phone_url('258850000000')}/prompts/{prompt['conversation_id']}/approve", json={"pin": "1234"}
    )
    assert other.status_code == 404
    assert (await http.get(f"{sandbox.phone_url('258850000000')}/prompts")).json()["prompts"] == []
    await http.post(f"{sandbox.phone_url(NUMBER)}/prompts/{prompt['conversation_id']}/approve", json={"pin": "9876"})
    assert (await held).status_code == 201


async def test_automatic_scenarios_do_not_show_on_the_phone(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    await http.put(f"{sandbox.control_url}/config", json={"answer_delay": 30})
    held = asyncio.create_task(http.post(sandbox.url("c2b"), json=payment_body(msisdn="258840000001")))
    deadline = time.monotonic() + 10
    while (await http.get(f"{sandbox.control_url}/transactions?status=Pending")).json()["count"] == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert (await http.get(f"{sandbox.phone_url('258840000001')}/prompts")).json()["prompts"] == []
    await http.post(f"{sandbox.control_url}/reset")  # answers the held request (INS-9) and forgets it
    response = await held
    assert response.json()["output_ResponseCode"] == "INS-9"


async def test_phone_index(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{sandbox.control_url}/phone")
    assert response.status_code == 200 and "258840000000" in response.text
