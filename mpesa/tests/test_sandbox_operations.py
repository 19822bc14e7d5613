"""The simulated gateway's operations over raw HTTP: auth, validation order, C2B scenarios, queries, reversals,
B2C, B2B and customer name."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mpesa.sandbox import ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings, payment_body, unique_reference

pytestmark = pytest.mark.timeout(60)

SPC = "171717"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    with run_in_thread(fast_settings()) as running:
        yield running


@pytest.fixture
async def http(sandbox: ThreadedSandbox) -> AsyncIterator[httpx.AsyncClient]:
    token = sandbox.bearer_token()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as client:
        await client.post(f"{sandbox.control_url}/reset")
        yield client


async def c2b(sandbox: ThreadedSandbox, http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await http.post(sandbox.url("c2b"), json=body)


async def query(sandbox: ThreadedSandbox, http: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    params = {
        "input_QueryReference": reference,
        "input_ThirdPartyReference": unique_reference("Q"),
        "input_ServiceProviderCode": SPC,
    }
    response = await http.get(sandbox.url("query"), params=params)
    assert response.status_code == 200, response.text
    assert "output_TransactionID" not in response.json()
    return dict(response.json())


async def paid(sandbox: ThreadedSandbox, http: httpx.AsyncClient, amount: str = "100") -> dict[str, Any]:
    response = await c2b(sandbox, http, payment_body(amount=amount))
    assert response.status_code == 201, response.text
    return dict(response.json())


def reversal_body(transaction_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "input_TransactionID": transaction_id,
        "input_SecurityCredential": "Mpesa2019",
        "input_InitiatorIdentifier": "MPesa2018",
        "input_ThirdPartyReference": unique_reference("V"),
        "input_ServiceProviderCode": SPC,
    }
    body.update(extra)
    return body


# auth -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer not-base64!", "Bearer " + "A" * 684, "Basic abc"])
async def test_missing_or_wrong_token_is_ins2_401(sandbox: ThreadedSandbox, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(sandbox.url("c2b"), json=payment_body(), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"output_ResponseCode": "INS-2", "output_ResponseDesc": "Invalid API Key"}


async def test_token_for_another_api_key_is_refused(sandbox: ThreadedSandbox) -> None:
    from mpesa.token import encrypt_api_key, load_public_key

    token = encrypt_api_key("some-other-key-0000000000000000", load_public_key(sandbox.public_key))
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(sandbox.url("query"), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["output_ResponseCode"] == "INS-2"


# validation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"input_Amount": None}, "INS-20", 400),
        ({"input_ServiceProviderCode": "171718"}, "INS-13", 400),
        ({"input_CustomerMSISDN": "841234501"}, "INS-2051", 400),
        ({"input_CustomerMSISDN": "258821234501"}, "INS-2051", 400),
        ({"input_Amount": "0"}, "INS-15", 400),
        ({"input_Amount": "10.123"}, "INS-15", 400),
        ({"input_Amount": "-5"}, "INS-15", 400),
        ({"input_TransactionReference": "has space"}, "INS-17", 400),
        ({"input_TransactionReference": "x" * 21}, "INS-17", 400),
        ({"input_ThirdPartyReference": "ref-1"}, "INS-19", 400),
        ({"input_CustomerMSISDN": ["258841234501"]}, "INS-21", 400),
        # the earlier check wins: a bad code and a bad MSISDN together are INS-13
        ({"input_ServiceProviderCode": "1", "input_CustomerMSISDN": "1"}, "INS-13", 400),
    ],
)
async def test_c2b_rejections(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, change: dict[str, Any], code: str, status: int
) -> None:
    body = payment_body()
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    response = await c2b(sandbox, http, body)
    assert response.status_code == status
    data = response.json()
    assert data["output_ResponseCode"] == code
    assert len(data["output_ConversationID"]) == 32


async def test_non_json_body_is_ins21(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(sandbox.url("c2b"), content=b"input_Amount=10")
    assert response.status_code == 400
    assert response.json()["output_ResponseCode"] == "INS-21"


async def test_numeric_amount_is_accepted(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    response = await c2b(sandbox, http, payment_body(amount=10.5))  # type: ignore[arg-type]
    assert response.status_code == 201


async def test_reused_third_party_reference_is_ins10_409(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    body = payment_body(msisdn="258841234503")  # cancelled: the reference is taken all the same
    assert (await c2b(sandbox, http, body)).json()["output_ResponseCode"] == "INS-5"
    again = await c2b(sandbox, http, {**body, "input_CustomerMSISDN": "258841234501"})
    assert again.status_code == 409
    assert again.json()["output_ResponseCode"] == "INS-10"
    b2c = await http.post(sandbox.url("b2c"), json={**body, "input_CustomerMSISDN": "258841234501"})
    assert b2c.status_code == 409


async def test_paths_work_without_trailing_slash(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(sandbox.url("c2b").rstrip("/"), json=payment_body())
    assert response.status_code == 201


# C2B scenarios ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("suffix", "code", "status", "query_status"),
    [
        ("01", "INS-0", 201, "Completed"),
        ("42", "INS-0", 201, "Completed"),
        ("02", "INS-2006", 422, "Cancelled"),
        ("03", "INS-5", 401, "Cancelled"),
        ("05", "INS-6", 401, "Cancelled"),
        ("06", "INS-1", 500, "Cancelled"),
    ],
)
async def test_c2b_automatic_scenarios(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, suffix: str, code: str, status: int, query_status: str
) -> None:
    body = payment_body(msisdn=f"2588412345{suffix}")
    response = await c2b(sandbox, http, body)
    assert response.status_code == status
    data = response.json()
    assert data["output_ResponseCode"] == code
    assert data["output_ThirdPartyReference"] == body["input_ThirdPartyReference"]
    assert len(data["output_TransactionID"]) == 12 and data["output_TransactionID"].isalnum()
    assert (await query(sandbox, http, body["input_ThirdPartyReference"]))["output_ResponseTransactionStatus"] == (
        query_status
    )


async def test_c2b_04_never_answered_expires(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    await http.put(f"{sandbox.control_url}/config", json={"push_window": 0.2})
    body = payment_body(msisdn="258841234504")
    started = time.monotonic()
    response = await c2b(sandbox, http, body)
    assert time.monotonic() - started >= 0.2
    assert (response.status_code, response.json()["output_ResponseCode"]) == (408, "INS-9")
    assert (await query(sandbox, http, body["input_ThirdPartyReference"]))["output_ResponseTransactionStatus"] == (
        "Expired"
    )


async def test_c2b_07_overloaded_records_nothing(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    body = payment_body(msisdn="258841234507")
    response = await c2b(sandbox, http, body)
    assert (response.status_code, response.json()["output_ResponseCode"]) == (503, "INS-16")
    assert (await query(sandbox, http, body["input_ThirdPartyReference"]))["output_ResponseTransactionStatus"] == "N/A"
    listing = (await http.get(f"{sandbox.control_url}/transactions")).json()
    assert listing["count"] == 0


async def test_c2b_08_paid_but_connection_dropped(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    body = payment_body(msisdn="258841234508")
    with pytest.raises(httpx.TransportError):
        await c2b(sandbox, http, body)
    assert (await query(sandbox, http, body["input_ThirdPartyReference"]))["output_ResponseTransactionStatus"] == (
        "Completed"
    )


async def test_c2b_09_answers_after_the_long_wait(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    config = (await http.put(f"{sandbox.control_url}/config", json={"long_wait": 0.3})).json()
    assert config["long_wait"] == 0.3
    started = time.monotonic()
    response = await c2b(sandbox, http, payment_body(msisdn="258841234509"))
    assert time.monotonic() - started >= 0.3
    assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")


async def test_c2b_00_pending_until_answered(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    body = payment_body(msisdn="258840000000")
    request = asyncio.create_task(c2b(sandbox, http, body))
    prompts_url = f"{sandbox.control_url}/phone/258840000000/prompts"
    deadline = time.monotonic() + 10
    prompts: list[dict[str, Any]] = []
    while not prompts:
        assert time.monotonic() < deadline, "the prompt never appeared"
        prompts = (await http.get(prompts_url)).json()["prompts"]
        await asyncio.sleep(0.01)
    # still waiting for the customer: the query does not know yet
    assert (await query(sandbox, http, body["input_ThirdPartyReference"]))["output_ResponseTransactionStatus"] == "N/A"
    approve = await http.post(f"{prompts_url}/{prompts[0]['conversation_id']}/approve", json={"pin": "1234"})
    assert approve.json()["result_code"] == "INS-0"
    response = await request
    assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")
    assert response.json()["output_ConversationID"] == prompts[0]["conversation_id"]


async def test_c2b_00_unanswered_expires(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    await http.put(f"{sandbox.control_url}/config", json={"push_window": 0.2})
    response = await c2b(sandbox, http, payment_body(msisdn="258850000000"))
    assert (response.status_code, response.json()["output_ResponseCode"]) == (408, "INS-9")


async def test_reset_restores_started_delays(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    await http.put(f"{sandbox.control_url}/config", json={"answer_delay": 7})
    await http.post(f"{sandbox.control_url}/reset")
    assert (await http.get(f"{sandbox.control_url}/config")).json()["answer_delay"] == 0.0


async def test_config_rejects_bad_values(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    for change in ({"answer_delay": -1}, {"nonsense": 1}, {"callback_url": "http://127.0.0.1:12000/cb"}):
        response = await http.put(f"{sandbox.control_url}/config", json=change)
        assert response.status_code == 400, change
        assert "error" in response.json()


# queries ----------------------------------------------------------------------------------------------------
async def test_query_by_each_reference(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    body = payment_body()
    data = (await c2b(sandbox, http, body)).json()
    for reference in (data["output_TransactionID"], body["input_ThirdPartyReference"], data["output_ConversationID"]):
        answer = await query(sandbox, http, reference)
        assert answer["output_ResponseCode"] == "INS-0"
        assert answer["output_ResponseTransactionStatus"] == "Completed"
        assert answer["output_Reversed"] == "False"


async def test_query_unknown_reference_is_na(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    answer = await query(sandbox, http, "nosuchthing")
    assert (answer["output_ResponseCode"], answer["output_ResponseTransactionStatus"]) == ("INS-0", "N/A")


async def test_query_rejections(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    missing = await http.get(sandbox.url("query"), params={"input_QueryReference": "x"})
    assert (missing.status_code, missing.json()["output_ResponseCode"]) == (400, "INS-20")
    params = {"input_QueryReference": "x", "input_ThirdPartyReference": "Q1", "input_ServiceProviderCode": "999999"}
    wrong = await http.get(sandbox.url("query"), params=params)
    assert (wrong.status_code, wrong.json()["output_ResponseCode"]) == (400, "INS-13")


# reversals --------------------------------------------------------------------------------------------------
async def test_full_reversal(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    payment = await paid(sandbox, http, "100")
    response = await http.put(sandbox.url("reversal"), json=reversal_body(payment["output_TransactionID"]))
    assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")
    assert response.json()["output_TransactionID"] != payment["output_TransactionID"]
    answer = await query(sandbox, http, payment["output_TransactionID"])
    assert (answer["output_Reversed"], answer["output_ReversedAmount"]) == ("True", "100")
    again = await http.put(sandbox.url("reversal"), json=reversal_body(payment["output_TransactionID"]))
    assert again.json()["output_ResponseCode"] == "INS-15"


async def test_partial_reversals_then_over_amount(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    tid = (await paid(sandbox, http, "100"))["output_TransactionID"]
    first = await http.put(sandbox.url("reversal"), json=reversal_body(tid, input_ReversalAmount="30"))
    assert first.json()["output_ResponseCode"] == "INS-0"
    alias = await http.put(sandbox.url("reversal"), json=reversal_body(tid, input_Amount="20.50"))
    assert alias.json()["output_ResponseCode"] == "INS-0"
    over = await http.put(sandbox.url("reversal"), json=reversal_body(tid, input_ReversalAmount="49.51"))
    assert (over.status_code, over.json()["output_ResponseCode"]) == (400, "INS-15")
    assert (await query(sandbox, http, tid))["output_ReversedAmount"] == "50.50"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"input_InitiatorIdentifier": "wrong"}, "INS-24"),
        ({"input_SecurityCredential": "wrong"}, "INS-25"),
        ({"input_ServiceProviderCode": "123456"}, "INS-13"),
        ({"input_SecurityCredential": None}, "INS-20"),
        ({"input_TransactionID": "unknown1234"}, "INS-18"),
    ],
)
async def test_reversal_rejections(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, change: dict[str, Any], code: str
) -> None:
    tid = (await paid(sandbox, http))["output_TransactionID"]
    body = reversal_body(tid)
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    response = await http.put(sandbox.url("reversal"), json=body)
    assert response.json()["output_ResponseCode"] == code
    assert response.status_code == 400


async def test_reversal_of_a_cancelled_payment_is_ins18(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    tid = (await c2b(sandbox, http, payment_body(msisdn="258841234503"))).json()["output_TransactionID"]
    response = await http.put(sandbox.url("reversal"), json=reversal_body(tid))
    assert response.json()["output_ResponseCode"] == "INS-18"


# B2C, B2B, customer name ------------------------------------------------------------------------------------
async def test_b2c_succeeds_at_once(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    body = payment_body(msisdn="258840000000")  # no phone prompt for B2C
    response = await http.post(sandbox.url("b2c"), json=body)
    assert (response.status_code, response.json()["output_ResponseCode"]) == (201, "INS-0")
    tid = response.json()["output_TransactionID"]
    assert (await query(sandbox, http, tid))["output_ResponseTransactionStatus"] == "Completed"
    bad = await http.post(sandbox.url("b2c"), json=payment_body(msisdn="25884123"))
    assert bad.json()["output_ResponseCode"] == "INS-2051"


def b2b_body(**extra: Any) -> dict[str, Any]:
    body = {
        "input_TransactionReference": "T12344C",
        "input_Amount": "250",
        "input_ThirdPartyReference": unique_reference("B"),
        "input_PrimaryPartyCode": SPC,
        "input_ReceiverPartyCode": "979797",
    }
    body.update(extra)
    return body


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({}, "INS-0", 201),
        ({"input_ReceiverPartyCode": "12345"}, "INS-0", 201),
        ({"input_ReceiverPartyCode": "97979x"}, "INS-2002", 400),
        ({"input_PrimaryPartyCode": "171718"}, "INS-13", 400),
        ({"input_Amount": "abc"}, "INS-15", 400),
    ],
)
async def test_b2b(
    sandbox: ThreadedSandbox, http: httpx.AsyncClient, change: dict[str, Any], code: str, status: int
) -> None:
    response = await http.post(sandbox.url("b2b"), json=b2b_body(**change))
    assert (response.status_code, response.json()["output_ResponseCode"]) == (status, code)


async def test_customer_name_is_masked(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    params = {
        "input_CustomerMSISDN": "258841234567",
        "input_ThirdPartyReference": "N1",
        "input_ServiceProviderCode": SPC,
    }
    response = await http.get(sandbox.url("customer_name"), params=params)
    assert response.status_code == 200
    data = response.json()
    assert data["output_ResponseCode"] == "INS-0"
    assert data["output_CustomerMSISDN"] == "258841234567"
    for name in (data["output_FirstName"], data["output_SecondName"]):
        assert name[0].isalpha() and set(name[1:]) == {"*"}
    bad = await http.get(sandbox.url("customer_name"), params={**params, "input_CustomerMSISDN": "123"})
    assert bad.json()["output_ResponseCode"] == "INS-2051"


async def test_transactions_listing(sandbox: ThreadedSandbox, http: httpx.AsyncClient) -> None:
    payment = await paid(sandbox, http, "75.25")
    listing = (await http.get(f"{sandbox.control_url}/transactions")).json()
    assert listing["count"] == 1
    tx = listing["transactions"][0]
    assert tx["transaction_id"] == payment["output_TransactionID"]
    assert (tx["amount"], tx["status"], tx["msisdn"]) == ("75.25", "Completed", "258841234501")
