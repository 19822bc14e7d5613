"""The references the shop sends to M-Pesa and the ids it puts in links.

* ThirdPartyReference of a push (``K…``), a status query (``Q…``) and a reversal (``R…``): 16 characters, 1 to 20
  ASCII letters or digits as the gateway requires (reference §2.2, INS-19), usable as a QueryReference, never the
  same twice, every symbol of the alphabet equally likely (nothing derived from the order or the clock).
* TransactionReference (``Order.short_reference``): ``K`` and the order number, within 20 characters for every
  possible order number, one per order.
* Order link ids and checkout tokens: fit their columns and form fields, URL-safe, never the same twice.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest
from django.db import models
from hypothesis import given, settings
from hypothesis import strategies as st

from kulipa.orders.forms import CheckoutForm, new_checkout_token
from kulipa.orders.models import Order, new_public_id
from kulipa.payments import gateway
from kulipa.payments.models import PaymentAttempt, Reversal
from kulipa.payments.tests.fuzzing import scaled
from mpesa import validate_reference

pytestmark = pytest.mark.fuzz

QUERY_REFERENCE = re.compile(r"[A-Za-z0-9_\-]{1,40}")  # what prepare_query accepts as the thing asked about
URL_SAFE = re.compile(r"[A-Za-z0-9_\-]+")
DRAWS = 30_000


def max_length(model: type[models.Model], name: str) -> int:
    field = model._meta.get_field(name)
    assert isinstance(field, models.CharField) and field.max_length is not None
    return field.max_length


def test_references_are_unique_over_many_draws_and_use_the_whole_alphabet_evenly() -> None:
    prefixes = ("K", "Q", "R")
    references = [gateway.new_reference(prefixes[i % 3]) for i in range(DRAWS)]
    assert len(set(references)) == DRAWS
    for i, reference in enumerate(references[:3000]):
        assert validate_reference(reference) == reference
        assert QUERY_REFERENCE.fullmatch(reference)
        assert len(reference) == 16 and reference[0] == prefixes[i % 3]
    counts = Counter("".join(r[1:] for r in references))
    assert set(counts) == set(gateway._REFERENCE_ALPHABET)
    assert set(counts) <= set(string.ascii_uppercase + string.digits)
    expected = DRAWS * 15 / len(gateway._REFERENCE_ALPHABET)
    # Six standard deviations: a fair draw does not fail this, a biased or clock-derived one does.
    assert all(abs(n - expected) < 0.05 * expected for n in counts.values()), counts.most_common(3)


def test_references_fit_their_columns() -> None:
    assert len(gateway.new_reference("K")) <= max_length(PaymentAttempt, "third_party_reference")
    assert len(gateway.new_reference("R")) <= max_length(Reversal, "reference")


@given(st.integers(min_value=1, max_value=2**63 - 1))  # every BigAutoField value
@settings(max_examples=scaled(3))
def test_every_order_number_gives_a_valid_transaction_reference(pk: int) -> None:
    reference = Order(pk=pk).short_reference
    assert validate_reference(reference, field="transaction_reference") == reference
    assert int(reference[1:]) == pk  # one order, one reference, and back


@given(st.integers(min_value=1, max_value=2**63 - 1), st.integers(min_value=1, max_value=2**63 - 1))
@settings(max_examples=scaled(3))
def test_two_orders_never_share_a_transaction_reference(a: int, b: int) -> None:
    assert (Order(pk=a).short_reference == Order(pk=b).short_reference) == (a == b)


def test_order_link_ids_and_checkout_tokens_are_unique_url_safe_and_fit() -> None:
    public_ids = [new_public_id() for _ in range(DRAWS)]
    assert len(set(public_ids)) == DRAWS
    assert all(URL_SAFE.fullmatch(p) and len(p) <= max_length(Order, "public_id") for p in public_ids[:2000])

    tokens = [new_checkout_token() for _ in range(DRAWS)]
    assert len(set(tokens)) == DRAWS
    field = CheckoutForm.base_fields["checkout_token"]
    for token in tokens[:200]:
        assert URL_SAFE.fullmatch(token)
        assert field.clean(token) == token  # the form accepts the tokens it renders
        assert len(token) <= max_length(Order, "checkout_token")
