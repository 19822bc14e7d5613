"""The sync and async clients against the real simulator over real sockets: every operation and scenario."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

import httpx
import pytest

from mpesa import AsyncClient, Client, Outcome, Ports, Result, Timeouts, TransactionStatus, ValidationError
from mpesa.sandbox import ThreadedSandbox, run_in_thread
from mpesa.sandbox.testing import fast_settings
from mpesa.tests.conftest import client_config, sandbox_transactions, set_sandbox_config

_refs = itertools.count(1)


def ref() -> str:
    return f"IT{int(time.time()) % 100000}{next(_refs)}"


class Both:
    """Runs one scenario through the sync client or the async client, so every test covers both faces."""

    def __init__(self, sandbox: ThreadedSandbox, face: str, **config: Any) -> None:
        self.face = face
        self.config = client_config(sandbox, **config)

    def call(self, method: str, **kwargs: Any) -> Any:
        if self.face == "sync":
            with Client(self.config) as client:
                return getattr(client, method)(**kwargs)

        async def run() -> Any:
            async with AsyncClient(self.config) as client:
                return await getattr(client, method)(**kwargs)

        return asyncio.run(run())

    def pay(self, msisdn: str, amount: str = "10", **kwargs: Any) -> Result:
        result: Result = self.call(
            "c2b_payment",
            amount=amount,
            msisdn=msisdn,
            transaction_reference="T12344C",
            third_party_reference=kwargs.pop("third_party_reference", ref()),
        )
        return result


@pytest.fixture(params=["sync", "async"])
def mpesa(request: pytest.FixtureRequest, fresh_sandbox: ThreadedSandbox) -> Both:
    return Both(fresh_sandbox, request.param)


@pytest.mark.parametrize(
    ("msisdn", "outcome", "code", "status"),
    [
        ("258840000001", Outcome.SUCCESS, "INS-0", TransactionStatus.COMPLETED),
        ("84 000 0011", Outcome.SUCCESS, "INS-0", TransactionStatus.COMPLETED),  # unlisted suffix: success
        ("258840000002", Outcome.INSUFFICIENT_FUNDS, "INS-2006", TransactionStatus.CANCELLED),
        ("258840000003", Outcome.DECLINED, "INS-5", TransactionStatus.CANCELLED),
        ("258840000004", Outcome.UNKNOWN, "INS-9", TransactionStatus.EXPIRED),
        ("258840000005", Outcome.FAILED, "INS-6", TransactionStatus.CANCELLED),
        ("258840000006", Outcome.UNKNOWN, "INS-1", TransactionStatus.CANCELLED),
        ("258840000007", Outcome.UNKNOWN, "INS-16", TransactionStatus.NOT_FOUND),
        ("258850000009", Outcome.SUCCESS, "INS-0", TransactionStatus.COMPLETED),  # long wait, within timeout
    ],
)
def test_each_scenario_gives_its_outcome_and_the_query_agrees(
    mpesa: Both, msisdn: str, outcome: Outcome, code: str, status: TransactionStatus
) -> None:
    reference = ref()
    result = mpesa.pay(msisdn, third_party_reference=reference)
    assert result.outcome is outcome
    assert result.code == code
    if outcome is Outcome.SUCCESS:
        assert result.transaction_id
        assert result.conversation_id
    query = mpesa.call("query_transaction_status", query_reference=reference, third_party_reference=ref())
    assert query.outcome is Outcome.SUCCESS
    assert query.transaction_status is status


def test_a_dropped_response_is_unknown_and_the_query_says_it_was_paid(mpesa: Both) -> None:
    reference = ref()
    result = mpesa.pay("258840000008", third_party_reference=reference)
    assert result.outcome is Outcome.UNKNOWN
    assert result.http_status is None
    assert result.error
    assert result.sent is True  # the connection was open: it may have been (and here was) processed
    query = mpesa.call("query_transaction_status", query_reference=reference, third_party_reference=ref())
    assert query.transaction_status is TransactionStatus.COMPLETED


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_refused_connection_is_unknown_but_provably_not_sent(face: str, fresh_sandbox: ThreadedSandbox) -> None:
    """Nothing listens on the C2B port: the connection never opened, so the gateway cannot have the payment —
    ``sent`` is False and a shop may offer "try again" at once."""
    from mpesa.sandbox.testing import find_free_port_offset

    nowhere = Both(fresh_sandbox, face, ports=Ports().shifted(find_free_port_offset()))
    result = nowhere.pay("258840000001")
    assert result.outcome is Outcome.UNKNOWN and result.sent is False
    assert "not sent" in result.description
    assert sandbox_transactions(fresh_sandbox) == []
    ok = Both(fresh_sandbox, face).pay("258840000001")
    assert ok.outcome is Outcome.SUCCESS and ok.sent is True


def test_a_c2b_is_sent_once_even_when_the_answer_is_lost(mpesa: Both, fresh_sandbox: ThreadedSandbox) -> None:
    mpesa.pay("258840000008")
    assert len(sandbox_transactions(fresh_sandbox)) == 1


def test_a_client_timeout_is_unknown_never_failed(fresh_sandbox: ThreadedSandbox) -> None:
    set_sandbox_config(fresh_sandbox, long_wait=5)
    for face in ("sync", "async"):
        short = Both(fresh_sandbox, face, timeouts=Timeouts(connect=5, read=5, c2b_read=0.5))
        result = short.pay("258840000009")
        assert result.outcome is Outcome.UNKNOWN
        assert result.description == "timed out"


def test_approval_on_the_phone_page_answers_the_held_request(mpesa: Both, fresh_sandbox: ThreadedSandbox) -> None:
    set_sandbox_config(fresh_sandbox, push_window=20)
    msisdn = "258840000000"

    def approve_when_prompted() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            prompts = httpx.get(f"{fresh_sandbox.control_url}/phone/{msisdn}/prompts").json()["prompts"]
            if prompts:
                cid = prompts[0]["conversation_id"]
                httpx.post(f"{fresh_sandbox.control_url}/phone/{msisdn}/prompts/{cid}/approve", json={"pin": "1234"})
                return
            time.sleep(0.02)

    approver = threading.Thread(target=approve_when_prompted)
    approver.start()
    result = mpesa.pay(msisdn)
    approver.join()
    assert result.outcome is Outcome.SUCCESS


def test_full_and_partial_reversals(mpesa: Both) -> None:
    paid = mpesa.pay("258840000001", amount="100")
    assert paid.transaction_id
    partial = mpesa.call("reversal", transaction_id=paid.transaction_id, third_party_reference=ref(), amount="30.50")
    assert partial.outcome is Outcome.SUCCESS
    too_much = mpesa.call("reversal", transaction_id=paid.transaction_id, third_party_reference=ref(), amount="70")
    assert too_much.outcome is Outcome.INVALID_REQUEST
    assert too_much.code == "INS-15"
    rest = mpesa.call("reversal", transaction_id=paid.transaction_id, third_party_reference=ref())
    assert rest.outcome is Outcome.SUCCESS
    query = mpesa.call("query_transaction_status", query_reference=paid.transaction_id, third_party_reference=ref())
    assert query.reversed is True
    assert query.reversed_amount == Decimal("100")


def test_a_reversal_with_the_wrong_credential_is_an_auth_error(mpesa: Both, fresh_sandbox: ThreadedSandbox) -> None:
    paid = mpesa.pay("258840000001")
    wrong = Both(fresh_sandbox, mpesa.face, security_credential="wrong")
    result = wrong.call("reversal", transaction_id=paid.transaction_id, third_party_reference=ref())
    assert result.outcome is Outcome.AUTH_ERROR
    assert result.code == "INS-25"


def test_query_by_transaction_and_conversation_id(mpesa: Both) -> None:
    paid = mpesa.pay("258840000001")
    for reference in (paid.transaction_id, paid.conversation_id):
        query = mpesa.call("query_transaction_status", query_reference=reference, third_party_reference=ref())
        assert query.transaction_status is TransactionStatus.COMPLETED


def test_b2c_b2b_and_customer_name(mpesa: Both) -> None:
    b2c = mpesa.call(
        "b2c_payment", amount="25", msisdn="258841112201", transaction_reference="PAYOUT1", third_party_reference=ref()
    )
    assert b2c.outcome is Outcome.SUCCESS
    assert b2c.transaction_id
    b2b = mpesa.call(
        "b2b_payment",
        amount="25",
        receiver_party_code="979797",
        transaction_reference="SUPPLIER1",
        third_party_reference=ref(),
    )
    assert b2b.outcome is Outcome.SUCCESS
    name = mpesa.call("query_customer_name", msisdn="841112201", third_party_reference=ref())
    assert name.outcome is Outcome.SUCCESS
    assert name.first_name
    assert "*" in name.first_name


def test_a_reused_third_party_reference_is_a_duplicate(mpesa: Both) -> None:
    reference = ref()
    assert mpesa.pay("258840000001", third_party_reference=reference).ok
    again = mpesa.pay("258840000001", third_party_reference=reference)
    assert again.outcome is Outcome.INVALID_REQUEST
    assert (again.code, again.http_status) == ("INS-10", 409)


def test_a_wrong_api_key_is_an_auth_error(fresh_sandbox: ThreadedSandbox) -> None:
    for face in ("sync", "async"):
        result = Both(fresh_sandbox, face, api_key="not-the-key").pay("258840000001")
        assert result.outcome is Outcome.AUTH_ERROR
        assert (result.code, result.http_status) == ("INS-2", 401)


def test_a_wrong_service_provider_code_is_refused_by_the_gateway(fresh_sandbox: ThreadedSandbox) -> None:
    result = Both(fresh_sandbox, "sync", service_provider_code="17171").pay("258840000001")
    assert result.code == "INS-13"
    assert result.outcome is Outcome.INVALID_REQUEST


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"msisdn": "821234567"}, "msisdn"),
        ({"amount": "0"}, "amount"),
        ({"amount": "10.005"}, "amount"),
        ({"transaction_reference": "has space"}, "transaction_reference"),
        ({"third_party_reference": "x" * 21}, "third_party_reference"),
    ],
)
def test_invalid_input_is_refused_before_anything_is_sent(
    fresh_sandbox: ThreadedSandbox, kwargs: dict[str, str], field: str
) -> None:
    arguments = {
        "amount": "10",
        "msisdn": "258840000001",
        "transaction_reference": "T1",
        "third_party_reference": ref(),
        **kwargs,
    }
    with Client(client_config(fresh_sandbox)) as client, pytest.raises(ValidationError) as excinfo:
        client.c2b_payment(**arguments)
    assert excinfo.value.field == field
    assert sandbox_transactions(fresh_sandbox) == []


def test_queries_retry_transport_errors_but_payments_do_not(fresh_sandbox: ThreadedSandbox) -> None:
    """A closed port: the query is tried 1 + query_retries times, the payment once."""
    attempts: list[str] = []

    def count(request: httpx.Request) -> None:
        attempts.append(request.url.path)

    config = client_config(fresh_sandbox, ports=Ports(c2b=1, query=1), query_retries=2)
    with Client(config) as client:
        client._http.event_hooks["request"] = [count]
        query = client.query_transaction_status(query_reference="ABC", third_party_reference=ref())
        payment = client.c2b_payment(
            amount="1", msisdn="258840000001", transaction_reference="T1", third_party_reference=ref()
        )
    assert query.outcome is Outcome.UNKNOWN
    assert payment.outcome is Outcome.UNKNOWN
    assert attempts.count("/ipg/v1x/queryTransactionStatus/") == 3
    assert attempts.count("/ipg/v1x/c2bPayment/singleStage/") == 1


def test_tls_with_the_generated_certificate() -> None:
    with run_in_thread(fast_settings(tls=True)) as tls_sandbox:
        assert tls_sandbox.ca_file is not None
        assert tls_sandbox.base_url.startswith("https://")
        trusted = client_config(tls_sandbox, ca_bundle=str(tls_sandbox.ca_file))
        with Client(trusted) as client:
            result = client.c2b_payment(
                amount="10", msisdn="258840000001", transaction_reference="T1", third_party_reference=ref()
            )
        assert result.outcome is Outcome.SUCCESS

        async def async_pay() -> Result:
            async with AsyncClient(trusted) as client:
                return await client.c2b_payment(
                    amount="10", msisdn="258840000001", transaction_reference="T1", third_party_reference=ref()
                )

        assert asyncio.run(async_pay()).outcome is Outcome.SUCCESS
        # Without the CA bundle the self-signed certificate is refused: TLS checks are never off.
        with Client(client_config(tls_sandbox)) as untrusting:
            refused = untrusting.c2b_payment(
                amount="10", msisdn="258840000001", transaction_reference="T1", third_party_reference=ref()
            )
        assert refused.outcome is Outcome.UNKNOWN
        assert "CERTIFICATE" in (refused.error or "").upper()


def test_many_concurrent_async_payments_share_one_client(fresh_sandbox: ThreadedSandbox) -> None:
    async def run() -> list[Result]:
        async with AsyncClient(client_config(fresh_sandbox)) as client:
            calls: list[Coroutine[Any, Any, Result]] = [
                client.c2b_payment(
                    amount="5", msisdn=f"2588400001{i % 10}1", transaction_reference="T1", third_party_reference=ref()
                )
                for i in range(100)
            ]
            return await asyncio.gather(*calls)

    results = asyncio.run(run())
    assert all(r.outcome is Outcome.SUCCESS for r in results)
    assert len({r.transaction_id for r in results}) == 100
