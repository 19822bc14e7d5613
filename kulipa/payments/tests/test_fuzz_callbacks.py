"""Fuzzing the M-Pesa result callback: the parser (``callback_fields``), the service (``callback_receive``) and the
endpoint (``POST /api/mpesa/callback``).

Whatever arrives — arbitrary bytes, JSON of any shape, a real callback with fields missing, of the wrong type,
padded, huge, in another script or sent twice — the answer is an acknowledgement (200) or a clear refusal
(400/404/413, an INS code and a reason), never a 5xx or an unhandled exception. A refusal changes nothing but the
audit trail: one REJECTED delivery (its body capped) counted under its reason. An acknowledgement stores one
QUEUED delivery for the worker and queues nothing else; the worker must read the stored body back to the very
same fields.

Each example runs in a savepoint rolled back afterwards, so every example sees the same order and attempt.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from kulipa.orders.models import Order
from kulipa.payments.models import CallbackDelivery, PaymentAttempt, PaymentEvent
from kulipa.payments.services import callback_receive
from kulipa.payments.services.callbacks import MAX_CALLBACK_BYTES, CallbackRejected, callback_fields
from kulipa.payments.tests.conftest import Simulator, place, product, wait_for
from kulipa.payments.tests.fuzzing import World, scaled, world

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

CALLBACK = "/api/mpesa/callback"
CONVERSATION = "AG_20250101_0000fuzz0000conv"
ID_ALPHABET = string.ascii_letters + string.digits + "_-"
REFUSALS = {400, 404, 413}
CLIENT = Client()
"""One client for every example: a new one loads the middleware again (WhiteNoise scans every static file)."""
Delivery = CallbackDelivery.State


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Abuse limits count in the cache: start (and end) every test with none counted. Examples also clear it."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def attempt(db: None, settings: Any) -> PaymentAttempt:
    """An order awaiting payment with its attempt (not pushed), which knows its ConversationID; callbacks accepted
    from anywhere (no path token, no allow-list)."""
    settings.MPESA = {**settings.MPESA, "CALLBACK_PATH_TOKEN": "", "CALLBACK_ALLOWED_IPS": []}
    _, queued = place({product(stock=5).pk: 1}, push=False)
    PaymentAttempt.objects.filter(pk=queued.pk).update(conversation_id=CONVERSATION)  # as the push answer sets it
    queued.refresh_from_db()
    return queued


def genuine(attempt: PaymentAttempt) -> list[tuple[str, Any]]:
    """A result delivery as the gateway sends it (reference §5.2), as (key, value) pairs in order."""
    return [
        ("input_OriginalConversationID", attempt.conversation_id),
        ("input_ThirdPartyReference", attempt.third_party_reference),
        ("input_ThirdPartyConversationID", attempt.third_party_reference),
        ("input_TransactionID", "5C1400CVRO"),
        ("input_ResultCode", "INS-0"),
        ("input_ResultDesc", "Request processed successfully"),
    ]


def encode_pairs(pairs: list[tuple[str, Any]], *, ensure_ascii: bool = True, indent: bool = False) -> bytes:
    """A JSON object from pairs: keys may repeat (``json.dumps`` of a dict cannot write that)."""
    glue = ",\n  " if indent else ","
    items = glue.join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=ensure_ascii)}" for k, v in pairs)
    return ("{" + items + "}").encode("utf-8", "surrogatepass")


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
not_a_string: st.SearchStrategy[Any] = (
    st.integers() | st.floats() | st.booleans() | st.lists(json_scalars, max_size=2) | st.just({})
)
bad_ids = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and not all(ch in ID_ALPHABET for ch in s.strip())),
    st.text(alphabet=ID_ALPHABET, min_size=65, max_size=300),
    st.sampled_from(["K' OR 1=1", "K\x00ABC", "KÁBC", "K ABC", "../../etc", "K\u202eABC", "K\nABC"]),
)
unknown_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64).filter(lambda s: s[0] not in "KA")
huge_text = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["x", "é", "🙂", "\\", '"', "\u0000"]), st.integers(1, 70_000)
)
free_text = st.text(max_size=200) | huge_text


HARMLESS = range(0, 8)
FATAL = range(8, 17)


@st.composite
def near_genuine(draw: st.DrawFn, attempt: PaymentAttempt) -> tuple[bytes, bool]:
    """A genuine delivery for ``attempt`` with up to four changes, and whether it must still be acknowledged.

    Harmless: extra fields, spaces around values, any ResultCode token, any description (unicode, NULs, huge),
    a null optional field, the reference only in ThirdPartyConversationID or only the ConversationID, a duplicate
    key whose last value is the right one, pretty-printing, a UTF-8 BOM. Fatal: a missing or malformed ResultCode,
    a field that is not a string, an identifier with other characters, no reference at all, a reference nobody
    issued, a ConversationID of another payment, a duplicate key whose last value is not a string, not UTF-8,
    over 64 KiB. Harmless changes are made first, so a later one never repairs a fatal one.
    """
    fields: dict[str, Any] = dict(genuine(attempt))
    changes = sorted(draw(st.lists(st.integers(min_value=HARMLESS.start, max_value=FATAL.stop - 1), max_size=4)))
    ok = not any(change in FATAL for change in changes)
    extra: list[tuple[str, Any]] = []
    before: list[tuple[str, Any]] = []
    after: list[tuple[str, Any]] = []
    for change in changes:
        name = draw(st.sampled_from(sorted(fields))) if fields else "input_ResultCode"
        if change == 0:  # fields the shop does not read
            keys = st.text(max_size=20).filter(lambda k: not k.startswith("input_"))
            extra += draw(st.lists(st.tuples(keys, json_values), max_size=3))
        elif change == 1 and isinstance(fields.get(name), str):
            fields[name] = draw(st.sampled_from([" ", "\t", "\n", " \r\n"])) + fields[name] + " "
        elif change == 2:
            fields["input_ResultCode"] = draw(st.text(alphabet=ID_ALPHABET, min_size=1, max_size=16))
        elif change == 3:
            fields["input_ResultDesc"] = draw(free_text)
        elif change == 4:
            fields[draw(st.sampled_from(["input_TransactionID", "input_ResultDesc"]))] = None
        elif change == 5:
            fields.pop("input_ThirdPartyReference", None)
        elif change == 6:
            fields.pop("input_ThirdPartyReference", None)
            fields.pop("input_ThirdPartyConversationID", None)
        elif change == 7:  # a duplicate written before the real value: the last one wins
            before.append((name, draw(json_values)))
        elif change == 8:
            fields["input_ResultCode"] = draw(
                st.none()
                | st.sampled_from(["", "   ", "INS 0", "İNS-0", "INS-0;", "ＩＮＳ-0"])
                | st.text(alphabet=ID_ALPHABET, min_size=17, max_size=40)
            )
        elif change == 9:
            fields[name] = draw(not_a_string)
        elif change == 10:
            key = draw(
                st.sampled_from(["input_ThirdPartyReference", "input_OriginalConversationID", "input_TransactionID"])
            )
            fields[key] = draw(bad_ids)
        elif change == 11:
            for key in ("input_ThirdPartyReference", "input_ThirdPartyConversationID", "input_OriginalConversationID"):
                fields.pop(key, None)
        elif change == 12:
            fields.pop("input_OriginalConversationID", None)
            fields.pop("input_ThirdPartyConversationID", None)
            fields["input_ThirdPartyReference"] = draw(unknown_ids)
        elif change == 13:
            fields["input_OriginalConversationID"] = draw(unknown_ids)
            fields.setdefault("input_ThirdPartyReference", attempt.third_party_reference)
        elif change == 14:  # a duplicate written after the real value
            after.append((draw(st.sampled_from([k for k, _ in genuine(attempt)])), draw(not_a_string)))
        elif change == 15:
            fields.pop("input_ResultCode", None)
        elif change == 16:
            fields[name] = draw(st.sampled_from([["INS-0"], {"value": "INS-0"}, 0, True]))
    pairs = [(k, v) for k, v in before if k in fields] + list(fields.items()) + extra + after
    body = encode_pairs(pairs, ensure_ascii=draw(st.booleans()), indent=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "bom", "utf-16", "latin-1"]))
    if encoding == "bom":
        body = b"\xef\xbb\xbf" + body
    elif encoding == "utf-16":
        body = body.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
        ok = False
    elif encoding == "latin-1" and b"\xc3\xa9" in body:  # "é" written as one Latin-1 byte: not UTF-8
        body = body.replace(b"\xc3\xa9", b"\xe9")
        ok = False
    if len(body) > MAX_CALLBACK_BYTES:
        ok = False
    return body, ok


def any_body(attempt: PaymentAttempt) -> st.SearchStrategy[tuple[bytes, bool | None]]:
    """Near-genuine deliveries (with the verdict they must get), arbitrary bytes, JSON of any shape."""
    return st.one_of(
        near_genuine(attempt),
        near_genuine(attempt),
        st.binary(max_size=400).map(lambda b: (b, None)),
        json_values.map(lambda v: (json.dumps(v).encode(), None)),
        st.dictionaries(
            st.sampled_from([k for k, _ in genuine(attempt)]), json_values | st.text(alphabet=ID_ALPHABET), max_size=6
        ).map(lambda d: (json.dumps(d).encode(), None)),
    )


def check_receipt(
    *, status: int, payload: dict[str, Any], delivery: CallbackDelivery, body: bytes, expected: bool | None
) -> None:
    """What every answer must look like, and what the stored delivery holds."""
    if status == 200:
        assert expected is not False, f"acknowledged a delivery that must be refused: {body[:300]!r}"
        assert payload["output_ResponseCode"] == "0"
        assert delivery.state == Delivery.QUEUED and delivery.attempt_id is not None
        # The worker re-reads the stored text: it must give the same fields (and no NUL, which PostgreSQL refuses).
        fields = callback_fields(body)
        assert callback_fields(delivery.body.encode("utf-8")) == fields
        assert not any("\x00" in value for value in fields.values())
    else:
        assert expected is not True, f"refused a delivery that must be acknowledged ({status}): {body[:300]!r}"
        assert status in REFUSALS, status
        assert payload["output_ResponseCode"] in ("INS-21", "INS-19")
        assert payload["output_ResponseDesc"]
        assert delivery.state == Delivery.REJECTED and delivery.attempt_id is None
        assert delivery.outcome and delivery.error
        assert len(delivery.body.encode("utf-8")) <= 3 * 2048  # capped (replacement characters take 3 bytes)


def check_only_one_delivery_added(before: World, after: World, *, accepted: bool) -> None:
    changed = after.diff(before)
    assert set(changed) <= {"deliveries"}, f"an inbound callback changed {changed}"
    assert after.accepted_deliveries == before.accepted_deliveries + (1 if accepted else 0)
    assert after.rejected_deliveries == before.rejected_deliveries + (0 if accepted else 1)


def rolled_back(example: Callable[[], None]) -> None:
    """Run one example in a savepoint that is rolled back: the next example sees the same database."""
    with transaction.atomic():
        example()
        transaction.set_rollback(True)


# --- the parser --------------------------------------------------------------------------------------------
@given(st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=scaled(5))
def test_the_parser_answers_any_bytes_with_fields_or_a_refusal(body: bytes) -> None:
    try:
        fields, refusal = callback_fields(body), None
    except CallbackRejected as rejected:
        fields, refusal = {}, rejected
    if refusal is not None:
        assert refusal.status in (400, 413) and refusal.reason and refusal.tally
        return
    assert fields["input_ResultCode"]
    assert fields.get("input_ThirdPartyReference") or fields.get("input_OriginalConversationID")


# --- the service -------------------------------------------------------------------------------------------
@given(data=st.data())
@settings(max_examples=scaled(4))
def test_any_delivery_is_acknowledged_or_refused_and_changes_nothing_else(
    attempt: PaymentAttempt, data: st.DataObject
) -> None:
    body, expected = data.draw(any_body(attempt), label="body")
    headers = data.draw(
        st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=100), max_size=5), label="headers"
    )

    def example() -> None:
        before = world()
        receipt = callback_receive(headers=headers, body=body, remote_ip="127.0.0.1")
        delivery = CallbackDelivery.objects.get(pk=receipt.delivery_id)
        check_receipt(status=receipt.status, payload=receipt.body, delivery=delivery, body=body, expected=expected)
        check_only_one_delivery_added(before, world(), accepted=receipt.status == 200)

    rolled_back(example)


# --- the endpoint ------------------------------------------------------------------------------------------
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "",
    ]
)
forwarded_for = st.one_of(
    st.text(max_size=60),
    st.lists(st.ip_addresses().map(str), min_size=1, max_size=4).map(", ".join),
    st.sampled_from(["unknown", "::1, 10.0.0.1", "999.1.1.1", "1.2.3.4:80", "[::1]:80"]),
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@given(data=st.data())
@settings(max_examples=scaled(4))
def test_the_endpoint_never_fails_and_refusals_change_nothing(
    attempt: PaymentAttempt, data: st.DataObject, django_capture_on_commit_callbacks: Any
) -> None:
    body, expected = data.draw(any_body(attempt), label="body")
    content_type = data.draw(content_types, label="content_type")
    headers = {
        "X-Forwarded-For": data.draw(forwarded_for, label="x_forwarded_for"),
        "X-Real-IP": data.draw(forwarded_for, label="x_real_ip"),
        "User-Agent": data.draw(header_values, label="user_agent"),
        "Cookie": data.draw(header_values, label="cookie"),
    }
    remote = data.draw(st.ip_addresses().map(str), label="remote_addr")

    def example() -> None:
        cache.clear()
        before = world()
        with django_capture_on_commit_callbacks() as queued:
            response = CLIENT.post(CALLBACK, data=body, content_type=content_type, headers=headers, REMOTE_ADDR=remote)
        assert response.status_code < 500
        assert response["Content-Type"] == "application/json"
        delivery = CallbackDelivery.objects.order_by("-pk").first()
        assert delivery is not None
        check_receipt(
            status=response.status_code, payload=response.json(), delivery=delivery, body=body, expected=expected
        )
        assert not {k.lower() for k in delivery.headers} & {"cookie", "authorization"}
        assert len(queued) == (1 if response.status_code == 200 else 0), "only an acknowledged delivery is queued"
        check_only_one_delivery_added(before, world(), accepted=response.status_code == 200)

    rolled_back(example)


tokens = st.one_of(
    st.text(min_size=1, max_size=40).map(lambda t: quote(t, safe="")),
    st.text(alphabet=ID_ALPHABET, min_size=1, max_size=40),
    st.sampled_from(["s3cr3tT0ke", "s3cr3tT0ken0", "S3CR3TT0KEN", "s3cr3tT0ken%00", "%2e%2e"]),
)


@given(
    token=st.none() | tokens,
    remote=st.ip_addresses().map(str) | st.sampled_from(["10.9.8.7", "10.9.8.70", "::ffff:10.9.8.7"]),
)
@settings(max_examples=scaled(2))
def test_a_wrong_path_token_or_an_address_outside_the_allow_list_stores_nothing(
    attempt: PaymentAttempt, settings: Any, token: str | None, remote: str
) -> None:
    settings.MPESA = {**settings.MPESA, "CALLBACK_PATH_TOKEN": "s3cr3tT0ken", "CALLBACK_ALLOWED_IPS": ["10.9.8.7"]}
    body = encode_pairs(genuine(attempt))
    path = CALLBACK if token is None else f"{CALLBACK}/{token}"

    def example() -> None:
        cache.clear()
        before = world()
        response = CLIENT.post(path, data=body, content_type="application/json", REMOTE_ADDR=remote)
        if token == "s3cr3tT0ken" and remote == "10.9.8.7":
            assert response.status_code == 200
            return
        assert response.status_code == (404 if token != "s3cr3tT0ken" else 403)
        assert world() == before, "nothing is stored for a sender that is not let in"

    rolled_back(example)


def test_the_callback_needs_no_csrf_token_and_only_accepts_post(attempt: PaymentAttempt) -> None:
    """The gateway has no CSRF token: an enforcing client is acknowledged; any other method is 405."""
    strict = Client(enforce_csrf_checks=True)
    assert (
        strict.post(CALLBACK, data=encode_pairs(genuine(attempt)), content_type="application/json").status_code == 200
    )
    for method in (strict.get, strict.put, strict.delete, strict.patch):
        assert method(CALLBACK).status_code == 405


# --- regressions found by the fuzzers above ----------------------------------------------------------------
def test_a_utf16_body_is_refused_not_acknowledged_and_left_for_the_worker_to_choke_on(attempt: PaymentAttempt) -> None:
    """``json.loads`` reads UTF-16 bytes too, so the delivery was acknowledged; but it is stored as UTF-8 text, which
    the worker then could not parse (retries, then an attention item). On PostgreSQL storing it failed (500): the
    text holds NUL characters."""
    body = encode_pairs(genuine(attempt)).decode().encode("utf-16")
    response = CLIENT.post(CALLBACK, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["output_ResponseDesc"] == "malformed: body is not JSON"
    assert CallbackDelivery.objects.get().state == Delivery.REJECTED


def test_nul_characters_in_a_body_or_a_header_are_stored_without_failing(attempt: PaymentAttempt) -> None:
    """PostgreSQL refuses NUL in text and JSON columns: a garbage body or header holding one answered 500 there."""
    response = CLIENT.post(CALLBACK, data=b"\x00garbage", content_type="application/json", HTTP_X_TRACE="a\x00b")
    assert response.status_code == 400
    delivery = CallbackDelivery.objects.get()
    assert delivery.body == "\ufffdgarbage"
    assert delivery.headers["X-Trace"] == "a\ufffdb"


def test_a_nul_in_the_result_description_does_not_stop_the_worker(sim: Simulator) -> None:
    """An acknowledged callback whose ResultDesc held ``\\u0000`` could not be logged as a PaymentEvent on
    PostgreSQL (jsonb refuses it): the worker retried it until it gave up. Now it is processed like any other."""
    order, attempt = place({product(stock=1).pk: 1}, msisdn="258840000001")
    wait_for(lambda: Order.objects.get(pk=order.pk).status == Order.Status.PAID, what="paid")
    attempt.refresh_from_db()
    fields = dict(genuine(attempt))
    fields["input_ResultDesc"] = "Request processed\u0000 successfully"
    response = Client().post(CALLBACK, data=encode_pairs(list(fields.items())), content_type="application/json")
    assert response.status_code == 200
    delivery = wait_for(
        lambda: CallbackDelivery.objects.filter(state__in=[Delivery.DONE, Delivery.RETRY, Delivery.GAVE_UP]).first(),
        what="delivery processed",
    )
    assert delivery.state == Delivery.DONE, delivery.error
    event = order.payment_events.get(kind=PaymentEvent.Kind.CALLBACK)
    assert event.payload["fields"]["input_ResultDesc"] == "Request processed\ufffd successfully"
