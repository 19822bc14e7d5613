"""Response faults (``/sandbox/faults``: ``c2b_fault``, ``query_fault``) over real sockets, through both clients.

What each fault does at the simulator (processed or not: is there a transaction?) and how the client sorts the
answer: every fault that strikes after the request left is ``UNKNOWN`` and *sent* — the money may have moved, the
caller asks with a status query — never a final "no"."""

from __future__ import annotations

import httpx
import pytest

from mpesa import Outcome, QueryResult, TransactionStatus
from mpesa.sandbox import ThreadedSandbox
from mpesa.tests.conftest import sandbox_transactions
from mpesa.tests.test_client_integration import Both, mpesa, ref

pytestmark = pytest.mark.faults

__all__ = ["mpesa"]  # the fixture: each test runs through the sync and the async client

PAYS = "258840000001"  # scenario 01: pays at once


def set_faults(sandbox: ThreadedSandbox, **faults: object) -> dict[str, object]:
    response = httpx.put(f"{sandbox.control_url}/faults", json=faults)
    response.raise_for_status()
    current: dict[str, object] = response.json()
    return current


# kind → whether the simulator processed the request (created and completed the transaction)
C2B_FAULTS = {"drop_before": False, "drop_after": True, "status_503": False, "malformed": True, "empty": True}


@pytest.mark.parametrize("kind", C2B_FAULTS)
def test_a_faulted_c2b_answer_is_unknown_and_the_query_tells_the_truth(
    kind: str, mpesa: Both, fresh_sandbox: ThreadedSandbox
) -> None:
    set_faults(fresh_sandbox, c2b_fault=kind, c2b_fault_count=1)
    reference = ref()
    result = mpesa.pay(PAYS, third_party_reference=reference)

    assert result.outcome is Outcome.UNKNOWN, result
    assert result.sent  # the request left: the client must not conclude that nothing was charged
    if kind == "status_503":
        assert (result.http_status, result.code) == (503, "INS-16")
    processed = C2B_FAULTS[kind]
    assert [t["status"] for t in sandbox_transactions(fresh_sandbox)] == (["Completed"] if processed else [])

    query = mpesa.call("query_transaction_status", query_reference=reference, third_party_reference=ref())
    assert query.outcome is Outcome.SUCCESS
    assert query.transaction_status is (TransactionStatus.COMPLETED if processed else TransactionStatus.NOT_FOUND)

    # The fault was counted down: the next payment is answered normally.
    assert set_faults(fresh_sandbox)["c2b_fault_count"] == 0
    assert mpesa.pay(PAYS).outcome is Outcome.SUCCESS


def test_a_faulted_status_query_is_retried_only_after_transport_errors(
    mpesa: Both, fresh_sandbox: ThreadedSandbox
) -> None:
    reference = ref()
    assert mpesa.pay(PAYS, third_party_reference=reference).outcome is Outcome.SUCCESS

    def ask() -> QueryResult:
        answer: QueryResult = mpesa.call(
            "query_transaction_status", query_reference=reference, third_party_reference=ref()
        )
        return answer

    # A dropped connection is a transport error: the client asks again (queries move no money) and gets the answer.
    set_faults(fresh_sandbox, query_fault="drop_before", query_fault_count=1)
    answered = ask()
    assert answered.outcome is Outcome.SUCCESS and answered.transaction_status is TransactionStatus.COMPLETED
    # Garbled or overloaded answers are answers: UNKNOWN, for the caller to ask again later.
    for kind in ("malformed", "empty", "status_503"):
        set_faults(fresh_sandbox, query_fault=kind, query_fault_count=1)
        garbled = ask()
        assert garbled.outcome is Outcome.UNKNOWN, (kind, garbled)
        assert garbled.transaction_status is None
    assert ask().transaction_status is TransactionStatus.COMPLETED


def test_a_c2b_fault_lasts_for_its_count_and_reset_clears_it(mpesa: Both, fresh_sandbox: ThreadedSandbox) -> None:
    set_faults(fresh_sandbox, c2b_fault="empty", c2b_fault_count=2)
    outcomes = [mpesa.pay(PAYS).outcome for _ in range(3)]
    assert outcomes == [Outcome.UNKNOWN, Outcome.UNKNOWN, Outcome.SUCCESS]
    assert len(sandbox_transactions(fresh_sandbox)) == 3  # "empty" strikes after processing

    set_faults(fresh_sandbox, c2b_fault="status_503", c2b_fault_count=5)
    httpx.post(f"{fresh_sandbox.control_url}/reset").raise_for_status()
    faults = httpx.get(f"{fresh_sandbox.control_url}/faults").json()
    assert (faults["c2b_fault"], faults["c2b_fault_count"]) == (None, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"c2b_fault": "explode", "c2b_fault_count": 1},
        {"query_fault": 3},
        {"c2b_fault_count": -1},
        {"query_fault_count": True},
        {"c2b_fault_count": 10_001},
    ],
)
def test_bad_response_faults_are_refused_and_change_nothing(
    change: dict[str, object], fresh_sandbox: ThreadedSandbox
) -> None:
    before = httpx.get(f"{fresh_sandbox.control_url}/faults").json()
    response = httpx.put(f"{fresh_sandbox.control_url}/faults", json=change)
    assert response.status_code == 400
    assert next(iter(change)) in response.json()["error"]
    assert httpx.get(f"{fresh_sandbox.control_url}/faults").json() == before
