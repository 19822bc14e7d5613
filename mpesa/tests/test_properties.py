"""Properties of what the library checks before anything is sent, and of how it reads what comes back.

* Every MSISDN the library accepts is the gateway's 12-digit form ``2588[45]xxxxxxx`` (reference §2.2: only
  Vodacom numbers can pay with M-Pesa), and normalising it again gives itself. Anything else raises
  ``ValidationError`` naming the field, with a message; never another exception.
* Amounts: positive, finite, at most two decimal places, never a float; the wire form reads back to the same
  amount and is one the gateway (and the simulator) accepts.
* References: 1 to 20 ASCII letters or digits, nothing else.
* Answers: whatever bytes come back, ``parse_response`` returns a result, and only a success code makes it a
  success.
"""

from __future__ import annotations

import http.server
import json
import re
import string
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mpesa import (
    Client,
    Config,
    Outcome,
    Ports,
    ValidationError,
    mask_msisdn,
    normalize_msisdn,
    validate_amount,
    validate_reference,
)
from mpesa._protocol import parse_response, prepare_payment, prepare_query
from mpesa.codes import RESPONSE_CODES
from mpesa.config import Operation
from mpesa.results import CustomerNameResult, QueryResult, Result
from mpesa.token import public_key_to_portal_format
from mpesa.validation import format_amount

pytestmark = pytest.mark.fuzz

CANONICAL = re.compile(r"2588[45][0-9]{7}")
WIRE_AMOUNT = re.compile(r"[0-9]+(\.[0-9]{1,2})?")  # what the simulator accepts (mpesa.sandbox.operations)
REFERENCE = re.compile(r"[A-Za-z0-9]{1,20}")
T = TypeVar("T")


def outcome(check: Callable[[Any], T], value: object) -> tuple[T, None] | tuple[None, ValidationError]:
    """``check(value)`` and no error, or no value and the ``ValidationError`` it raised (anything else
    propagates and fails the test)."""
    try:
        return check(value), None
    except ValidationError as exc:
        return None, exc


def scaled(factor: float) -> int:
    """``factor`` times the loaded profile's example budget (``ci`` or ``thorough``, see the root conftest)."""
    return max(10, int(settings().max_examples * factor))


# --- MSISDN ------------------------------------------------------------------------------------------------
vodacom_local = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["84", "85"]),
    st.text(alphabet=string.digits, min_size=7, max_size=7),
)
other_operator_local = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["82", "83", "86", "87"]),  # Tmcel, Movitel: Mozambican, but not M-Pesa
    st.text(alphabet=string.digits, min_size=7, max_size=7),
)
separator = st.sampled_from(["", "", "", " ", "-", ".", "  ", "(", ")", "\t"])
country_prefix = st.sampled_from(["", "258", "+258", "00258", "+258 ", "(+258) ", "00 258 "])


@st.composite
def typed_number(draw: st.DrawFn, local: st.SearchStrategy[str] = vodacom_local) -> tuple[str, str]:
    """(what a customer might type, the 9 local digits): separators anywhere between digits, optional country
    code in its usual written forms, whitespace around."""
    digits = draw(local)
    typed = "".join(ch + draw(separator) for ch in digits)
    space = st.sampled_from(["", " ", "\u00a0", "\n"])
    return draw(space) + draw(country_prefix) + typed + draw(space), digits


@given(typed_number())
@settings(max_examples=scaled(5))
def test_every_way_of_typing_a_vodacom_number_normalises_to_the_canonical_form(case: tuple[str, str]) -> None:
    typed, local = case
    number = normalize_msisdn(typed)
    assert number == "258" + local
    assert CANONICAL.fullmatch(number)
    # round trip: the canonical form, and its local part, normalise to themselves
    assert normalize_msisdn(number) == number
    assert normalize_msisdn(number[3:]) == number
    assert normalize_msisdn("+" + number) == number


@given(typed_number(other_operator_local))
@settings(max_examples=scaled(2))
def test_other_operators_numbers_are_refused_as_not_vodacom(case: tuple[str, str]) -> None:
    typed, _ = case
    with pytest.raises(ValidationError, match="Vodacom") as excinfo:
        normalize_msisdn(typed)
    assert excinfo.value.field == "msisdn"


msisdn_like_text = st.one_of(
    st.text(),
    st.text(alphabet=string.digits + " +-().", max_size=30),
    st.text(alphabet=st.characters(categories=["Nd", "Zs", "Cc", "Pd"]), max_size=20),  # any script's digits
    st.builds(lambda a, b: a + b, typed_number().map(lambda case: case[0]), st.text(max_size=3)),
    st.builds(lambda a, b: a + b, st.text(max_size=3), typed_number().map(lambda case: case[0])),
)


@given(msisdn_like_text)
@settings(max_examples=scaled(5))
def test_any_text_is_either_a_canonical_number_or_a_validation_error(text: str) -> None:
    number, error = outcome(normalize_msisdn, text)
    if error is not None:
        assert error.field == "msisdn"
        assert error.message
        return
    assert number is not None
    assert CANONICAL.fullmatch(number)
    ascii_digits = "".join(ch for ch in text if ch in string.digits)
    assert ascii_digits.endswith(number[3:]), "the number is the one typed, not another"
    assert normalize_msisdn(number) == number


@given(
    st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.integers()), st.decimals(allow_nan=False))
)
@settings(max_examples=scaled(1))
def test_a_number_that_is_not_text_is_a_validation_error(value: object) -> None:
    with pytest.raises(ValidationError):
        normalize_msisdn(value)  # type: ignore[arg-type]


@given(st.text(alphabet=string.digits, min_size=0, max_size=20))
@settings(max_examples=scaled(2))
def test_masking_never_shows_more_than_five_leading_and_three_trailing_digits(digits: str) -> None:
    masked = mask_msisdn(digits)
    assert len(masked) == len(digits)
    shown = [ch for ch in masked if ch != "*"]
    assert len(shown) <= 8
    if len(digits) >= 8:
        assert masked == digits[:5] + "*" * (len(digits) - 8) + digits[-3:]


# --- amounts -----------------------------------------------------------------------------------------------
valid_amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999999.99"), places=2)


@given(valid_amounts, st.sampled_from(["decimal", "str", "padded", "int"]))
@settings(max_examples=scaled(5))
def test_a_positive_amount_with_two_places_is_kept_exactly_and_its_wire_form_reads_back(
    amount: Decimal, form: str
) -> None:
    if form == "int":
        assume(amount == amount.to_integral_value())
    forms: dict[str, Decimal | int | str] = {
        "decimal": amount,
        "str": str(amount),
        "padded": f"  {amount:f}\t",
        "int": int(amount),
    }
    given_as = forms[form]
    value = validate_amount(given_as)
    assert isinstance(value, Decimal)
    assert value == amount
    assert value.as_tuple().exponent == -2
    wire = format_amount(value)
    assert WIRE_AMOUNT.fullmatch(wire), wire
    assert Decimal(wire) == amount
    assert validate_amount(wire) == value


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=scaled(2))
def test_floats_are_always_refused(value: float) -> None:
    with pytest.raises(ValidationError, match="float"):
        validate_amount(value)  # type: ignore[arg-type]


@given(st.booleans())
def test_booleans_are_not_amounts(value: bool) -> None:
    with pytest.raises(ValidationError):
        validate_amount(value)


not_finite = st.sampled_from(["NaN", "-NaN", "sNaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "Inf"])


@given(not_finite, st.booleans())
def test_nan_and_infinity_are_refused(text: str, as_decimal: bool) -> None:
    with pytest.raises(ValidationError, match="finite"):
        validate_amount(Decimal(text) if as_decimal else text)


@given(st.decimals(max_value=Decimal(0), allow_nan=False, allow_infinity=False), st.booleans())
@settings(max_examples=scaled(2))
def test_zero_and_negative_amounts_are_refused(amount: Decimal, as_text: bool) -> None:
    with pytest.raises(ValidationError, match="greater than zero"):
        validate_amount(str(amount) if as_text else amount)


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000000"), places=5))
@settings(max_examples=scaled(2))
def test_fractions_of_a_centavo_are_refused_not_rounded(amount: Decimal) -> None:
    assume(amount != amount.quantize(Decimal("0.01")))
    with pytest.raises(ValidationError, match="two decimal places"):
        validate_amount(amount)


huge_amounts = st.one_of(
    st.integers(min_value=26, max_value=10**6).map(lambda e: Decimal(f"1E+{e}")),
    st.integers(min_value=27, max_value=400).map(lambda n: "9" * n),
    st.integers(min_value=27, max_value=400).map(lambda n: "9" * n + ".99"),
    st.integers(min_value=10**27, max_value=10**60),
    st.just(10**5000),  # more digits than Python converts to text by default
)


@given(huge_amounts)
@settings(max_examples=scaled(1))
def test_amounts_too_large_to_hold_in_centavos_are_refused_cleanly(amount: Decimal | int | str) -> None:
    with pytest.raises(ValidationError, match="too large"):
        validate_amount(amount)


@given(
    st.one_of(
        st.text(),
        st.text(alphabet=string.digits + ".,-+eE _", max_size=40),
        st.none(),
        st.binary(max_size=10),
        st.lists(st.integers(), max_size=2),
        st.decimals(),
        st.integers(),
    )
)
@settings(max_examples=scaled(5))
def test_anything_is_either_a_valid_amount_or_a_validation_error(value: object) -> None:
    amount, error = outcome(validate_amount, value)
    if error is not None:
        assert error.field == "amount"
        assert error.message
        assert len(error.message) < 100, "a message, not an echo of whatever was sent"
        return
    assert isinstance(amount, Decimal)
    assert amount.is_finite() and amount > 0
    assert amount.as_tuple().exponent == -2
    assert WIRE_AMOUNT.fullmatch(format_amount(amount))


# --- references --------------------------------------------------------------------------------------------
@given(st.text(max_size=30) | st.text(alphabet=string.ascii_letters + string.digits, max_size=25))
@settings(max_examples=scaled(3))
def test_a_reference_is_accepted_exactly_when_it_is_1_to_20_ascii_letters_or_digits(value: str) -> None:
    accepted, error = outcome(validate_reference, value)
    if REFERENCE.fullmatch(value):
        assert accepted == value
    else:
        assert error is not None and error.field == "reference"


CONFIG = Config(api_key="k", public_key="unused-here", service_provider_code="171717")


@given(
    typed_number().map(lambda case: case[0]),
    valid_amounts,
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20),
)
@settings(max_examples=scaled(3))
def test_a_payment_request_that_passes_the_checks_carries_only_wire_valid_fields(
    msisdn: str, amount: Decimal, transaction_reference: str, third_party_reference: str
) -> None:
    prepared = prepare_payment(
        CONFIG,
        Operation.C2B,
        amount=amount,
        msisdn=msisdn,
        transaction_reference=transaction_reference,
        third_party_reference=third_party_reference,
    )
    fields = prepared.fields
    assert CANONICAL.fullmatch(fields["input_CustomerMSISDN"])
    assert WIRE_AMOUNT.fullmatch(fields["input_Amount"]) and Decimal(fields["input_Amount"]) == amount
    assert REFERENCE.fullmatch(fields["input_TransactionReference"])
    assert REFERENCE.fullmatch(fields["input_ThirdPartyReference"])
    # what is logged never holds the whole number
    assert fields["input_CustomerMSISDN"] not in json.dumps(prepared.log_context)


@given(st.text(max_size=50), st.text(max_size=30))
@settings(max_examples=scaled(3))
def test_a_query_with_any_references_is_built_or_refused_with_a_validation_error(query: str, own: str) -> None:
    try:
        prepared = prepare_query(CONFIG, query_reference=query, third_party_reference=own)
    except ValidationError:
        return
    assert prepared.fields["input_QueryReference"] == query
    assert REFERENCE.fullmatch(prepared.fields["input_ThirdPartyReference"])


# --- answers -----------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=15,
)
known_codes = st.sampled_from(sorted(RESPONSE_CODES))
answer_fields = st.sampled_from(
    [
        "output_ResponseCode",
        "output_ResponseDesc",
        "output_ConversationID",
        "output_TransactionID",
        "output_ThirdPartyReference",
        "output_ResponseTransactionStatus",
        "output_Reversed",
        "output_ReversedAmount",
        "output_error",
        "output_CustomerMSISDN",
        "output_FirstName",
    ]
)


@st.composite
def answer_bodies(draw: st.DrawFn) -> bytes:
    """Bytes, JSON of any shape, or an answer-shaped object with any values (known codes with odd spacing or
    case, wrong types, huge or non-ASCII text, deep nesting)."""
    kind = draw(st.sampled_from(["bytes", "json", "answer", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":  # past the JSON decoder's recursion limit
        depth = draw(st.integers(min_value=900, max_value=5000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    huge = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", "0", " "]), st.integers(1000, 20_000))
    body = draw(st.dictionaries(answer_fields, json_values | known_codes | huge, max_size=8))
    if draw(st.booleans()):
        code = draw(known_codes)
        body["output_ResponseCode"] = draw(st.sampled_from([code, code.lower(), f" {code} "]))
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@given(st.sampled_from(list(Operation)), st.integers(min_value=100, max_value=599), answer_bodies())
@settings(max_examples=scaled(5))
def test_any_answer_becomes_a_result_and_only_a_success_code_is_a_success(
    operation: Operation, status_code: int, content: bytes
) -> None:
    result = parse_response(operation, status_code=status_code, content=content, elapsed=0.1)
    assert isinstance(result, Result)
    assert isinstance(result.outcome, Outcome)
    if operation is Operation.QUERY:
        assert isinstance(result, QueryResult)
        assert result.reversed_amount is None or result.reversed_amount.is_finite()
    if operation is Operation.CUSTOMER_NAME:
        assert isinstance(result, CustomerNameResult)
    try:
        parsed = json.loads(content)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        assert result.outcome is Outcome.UNKNOWN
        return
    code = parsed.get("output_ResponseCode")
    if result.outcome is Outcome.SUCCESS:
        assert isinstance(code, str) and RESPONSE_CODES[code.strip().upper()].outcome is Outcome.SUCCESS


@pytest.mark.parametrize("content", [b"[" * 100_000, b'{"a":' * 50_000])
def test_a_deeply_nested_answer_is_unknown_not_a_crash(content: bytes) -> None:
    """Regression (found by the property above): ``parse_response`` raised ``RecursionError``."""
    result = parse_response(Operation.C2B, status_code=200, content=content, elapsed=0.0)
    assert result.outcome is Outcome.UNKNOWN


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_reversed_amount_that_is_not_a_finite_number_is_no_amount(amount: str) -> None:
    """Regression (found by the property above): a query answer's ``output_ReversedAmount`` of ``"NaN"`` (or a
    JSON number too large for a float) came back as ``Decimal('NaN')`` / ``Decimal('Infinity')``."""
    content = b'{"output_ResponseCode": "INS-0", "output_ReversedAmount": ' + (
        amount.encode() if amount == "1e400" else json.dumps(amount).encode()
    )
    result = parse_response(Operation.QUERY, status_code=200, content=content + b"}", elapsed=0.0)
    assert isinstance(result, QueryResult)
    assert result.reversed_amount is None


@pytest.mark.parametrize(
    "amount",
    [Decimal("1E+30"), "1E30", "9" * 40, 10**40, 10**5000, Decimal("1E+100000")],
    ids=["decimal", "exponent", "digits", "int", "int-5000-digits", "decimal-huge-exponent"],
)
def test_an_amount_too_large_is_a_validation_error(amount: Decimal | int | str) -> None:
    """Regression (found by the property above): ``validate_amount`` raised ``decimal.InvalidOperation``."""
    with pytest.raises(ValidationError, match="too large"):
        validate_amount(amount)


class _GarbledGateway(http.server.BaseHTTPRequestHandler):
    """Answers every request like a proxy in front of the gateway might: an HTML error page."""

    def do_GET(self) -> None:
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def garbled_gateway() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GarbledGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_status_query_answered_with_a_garbled_body_is_an_unknown_query_result(garbled_gateway: int) -> None:
    """Regression (found by the answer property above): an unparseable answer to a status query came back as a
    plain ``Result``, so ``Client.query_transaction_status`` failed its own ``assert isinstance(result,
    QueryResult)`` and raised ``AssertionError`` instead of returning ``UNKNOWN`` (the shop's reconciler calls it)."""
    key = public_key_to_portal_format(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
    config = Config(
        api_key="k",
        public_key=key,
        service_provider_code="171717",
        base_url="http://127.0.0.1",
        ports=Ports(query=garbled_gateway),
        query_retries=0,
    )
    with Client(config) as client:
        result = client.query_transaction_status(query_reference="KABC123", third_party_reference="Q1")
    assert isinstance(result, QueryResult)
    assert result.outcome is Outcome.UNKNOWN
    assert result.http_status == 502
    assert result.transaction_status is None
