"""Parsing answers the way the gateway really sends them, including the broken ones (reference §7.1)."""

import json

import pytest

from mpesa import Outcome, QueryResult, TransactionStatus
from mpesa._protocol import parse_response
from mpesa.config import Operation


def parse(operation: Operation, status: int, body: object) -> object:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_response(operation, status_code=status, content=content, elapsed=0.1)


def test_a_successful_c2b_carries_the_ids_needed_for_reversal() -> None:
    result = parse(
        Operation.C2B,
        201,
        {
            "output_ResponseCode": "INS-0",
            "output_ResponseDesc": "Request processed successfully",
            "output_TransactionID": "4XDF12345",
            "output_ConversationID": "AG_20180206_00005e7dccc6da08efa8",
            "output_ThirdPartyReference": "11114",
        },
    )
    assert result.outcome is Outcome.SUCCESS  # type: ignore[attr-defined]
    assert result.transaction_id == "4XDF12345"  # type: ignore[attr-defined]
    assert result.conversation_id == "AG_20180206_00005e7dccc6da08efa8"  # type: ignore[attr-defined]


@pytest.mark.parametrize("content", [b"", b"   ", b"<html>502 Bad Gateway</html>", b"[1, 2]", b"\xff\xfe"])
def test_empty_or_garbled_bodies_are_unknown_not_crashes(content: bytes) -> None:
    result = parse(Operation.C2B, 200, content)
    assert result.outcome is Outcome.UNKNOWN  # type: ignore[attr-defined]


def test_output_error_bodies_are_authorisation_problems() -> None:
    result = parse(Operation.C2B, 403, {"output_error": "Origin not allowed"})
    assert result.outcome is Outcome.AUTH_ERROR  # type: ignore[attr-defined]
    assert result.description == "Origin not allowed"  # type: ignore[attr-defined]


def test_a_query_reports_the_transaction_status_separately_from_its_own_outcome() -> None:
    result = parse(
        Operation.QUERY,
        200,
        {"output_ResponseCode": "INS-0", "output_ResponseTransactionStatus": "Completed", "output_Reversed": "True"},
    )
    assert isinstance(result, QueryResult)
    assert result.outcome is Outcome.SUCCESS
    assert result.transaction_status is TransactionStatus.COMPLETED
    assert result.reversed is True


def test_transaction_id_na_means_none() -> None:
    result = parse(Operation.C2B, 409, {"output_ResponseCode": "INS-10", "output_TransactionID": "N/A"})
    assert result.transaction_id is None  # type: ignore[attr-defined]
    assert result.outcome is Outcome.INVALID_REQUEST  # type: ignore[attr-defined]
