"""The order placed (and the amount pushed) is what the checkout page showed: anything that changed between
showing the page and pressing "Pagar com M-Pesa" shows the page again with what changed, and creates nothing."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.core import signing
from django.urls import reverse
from django.utils import translation

from kulipa.catalog.models import Product
from kulipa.inventory.models import StockReservation
from kulipa.orders import views
from kulipa.orders.errors import CheckoutChanged
from kulipa.orders.models import Order, OrderLine
from kulipa.orders.snapshot import (
    SALT,
    CheckoutSnapshot,
    SnapshotLine,
    snapshot_changes,
    snapshot_load,
    snapshot_sign,
)
from kulipa.orders.tests.conftest import put_in_cart
from kulipa.orders.tests.factories import order_make, product_make, snapshot_for
from kulipa.payments.models import PaymentAttempt
from kulipa.payments.services import checkout_place

CHECKOUT = "/checkout/"
EXPIRED_NOTE = "A página de pagamento expirou ou foi alterada; confirme de novo."


def page_data(response, **overrides):
    """What the customer submits from a rendered checkout page: typed fields, its token and its snapshot."""
    assert response.status_code == 200
    data = {
        "customer_name": "Ana Cossa",
        "msisdn": "84 123 4567",
        "email": "ana@example.com",
        "delivery_address": "Av. Julius Nyerere 123, Maputo",
        "checkout_token": response.context["form"]["checkout_token"].value(),
        "snapshot": response.context["snapshot"],
    }
    data.update(overrides)
    return data


def assert_nothing_created(payment_calls):
    assert not Order.objects.exists()
    assert not OrderLine.objects.exists()
    assert not StockReservation.objects.exists()
    assert not PaymentAttempt.objects.exists()
    assert payment_calls == []


def assert_reshown(response, *notes):
    """The checkout page again (200, not a redirect), naming what changed, with the typed fields kept."""
    assert response.status_code == 200
    assert response.templates[0].name == "orders/checkout.html"
    html = response.content.decode()
    assert "A encomenda não foi feita e nada foi cobrado." in html
    for note in notes:
        assert note in html, note
        assert note in response.context["changes"]
    return html


# --- over HTTP ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_carries_a_signed_snapshot_of_what_it_shows(client):
    a, b = product_make(price="150.50", name="Caju torrado"), product_make(price="20.00", name="Café")
    put_in_cart(client, {a.pk: 2, b.pk: 1})
    response = client.get(CHECKOUT)
    signed = response.context["snapshot"]
    assert f'name="snapshot" value="{signed}"' in response.content.decode()
    assert snapshot_load(signed) == CheckoutSnapshot(
        lines=(
            SnapshotLine(a.pk, "Caju torrado", Decimal("150.50"), 2),
            SnapshotLine(b.pk, "Café", Decimal("20.00"), 1),
        ),
        total=Decimal("321.00"),
    )


@pytest.mark.django_db
def test_unchanged_cart_places_one_order_at_the_confirmed_total(client, payment_calls):
    a, b = product_make(price="250.00", stock=5), product_make(price="20.00", stock=5)
    put_in_cart(client, {a.pk: 2, b.pk: 1})
    response = client.post(CHECKOUT, page_data(client.get(CHECKOUT)))
    order = Order.objects.get()
    assert (response.status_code, response["Location"]) == (303, order.get_absolute_url())
    assert order.total == Decimal("520.00")
    assert dict(order.lines.values_list("product_id", "quantity")) == {a.pk: 2, b.pk: 1}
    assert [call["order"].pk for call in payment_calls] == [order.pk]
    assert PaymentAttempt.objects.get().amount == Decimal("520.00")


@pytest.mark.django_db
def test_price_changed_between_get_and_post(client, payment_calls):
    caju, cafe = product_make(price="250.00", name="Caju torrado"), product_make(price="20.00", name="Café")
    put_in_cart(client, {caju.pk: 2, cafe.pk: 1})
    data = page_data(client.get(CHECKOUT), customer_name="Bento Mussa", delivery_address="Rua da Sé 4, Beira")
    Product.objects.filter(pk=caju.pk).update(price=Decimal("300.00"))  # staff edit the price meanwhile

    response = client.post(CHECKOUT, data)

    html = assert_reshown(
        response,
        "Preço de «Caju torrado» mudou de 250,00 MT para 300,00 MT.",
        "O total mudou de 520,00 MT para 620,00 MT.",
    )
    assert response.context["total"] == Decimal("620.00")
    assert "620,00 MT" in html
    assert 'value="Bento Mussa"' in html and "Rua da Sé 4, Beira</textarea>" in html
    fresh = snapshot_load(response.context["snapshot"])
    assert fresh is not None and fresh.total == Decimal("620.00")
    assert response.context["snapshot"] != data["snapshot"]
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
def test_product_deactivated_between_get_and_post(client, payment_calls):
    keep, gone = product_make(price="100.00", name="Piri-piri"), product_make(price="50.00", name="Sabão de coco")
    put_in_cart(client, {keep.pk: 1, gone.pk: 2})
    data = page_data(client.get(CHECKOUT))
    Product.objects.filter(pk=gone.pk).update(is_active=False)

    response = client.post(CHECKOUT, data)

    assert_reshown(response, "«Sabão de coco» já não está à venda.", "O total mudou de 200,00 MT para 100,00 MT.")
    assert [line.product.pk for line in response.context["lines"]] == [keep.pk]
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
def test_only_product_deactivated_shows_an_empty_page_without_the_pay_button(client, payment_calls):
    gone = product_make(price="50.00", name="Sabão de coco")
    put_in_cart(client, {gone.pk: 1})
    data = page_data(client.get(CHECKOUT))
    Product.objects.filter(pk=gone.pk).update(is_active=False)

    response = client.post(CHECKOUT, data)

    html = assert_reshown(response, "«Sabão de coco» já não está à venda.")
    assert "O seu carrinho está vazio." in html
    assert "Pagar com M-Pesa" not in html
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
def test_product_deleted_between_get_and_post(client, payment_calls):
    keep, gone = product_make(price="100.00"), product_make(price="50.00", name="Cesto de palha")
    put_in_cart(client, {keep.pk: 1, gone.pk: 1})
    data = page_data(client.get(CHECKOUT))
    gone.delete()

    response = client.post(CHECKOUT, data)

    assert_reshown(response, "«Cesto de palha» já não está à venda.")
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("other_tab", "notes"),
    [
        (
            "quantity",
            ["Quantidade de «Caju torrado» mudou de 2 para 5.", "O total mudou de 520,00 MT para 1.270,00 MT."],
        ),
        ("add", ["Produto adicionado ao carrinho: 3 × «Capulana».", "O total mudou de 520,00 MT para 1.420,00 MT."]),
        ("remove", ["Produto retirado do carrinho: «Café».", "O total mudou de 520,00 MT para 500,00 MT."]),
        ("empty", ["Produto retirado do carrinho: «Caju torrado».", "Produto retirado do carrinho: «Café»."]),
    ],
)
def test_cart_changed_in_another_tab(client, payment_calls, other_tab, notes):
    caju = product_make(price="250.00", name="Caju torrado", stock=10)
    cafe = product_make(price="20.00", name="Café", stock=10)
    capulana = product_make(price="300.00", name="Capulana", stock=10)
    put_in_cart(client, {caju.pk: 2, cafe.pk: 1})
    data = page_data(client.get(CHECKOUT))
    # The other tab, through the cart's own forms.
    if other_tab == "quantity":
        client.post(reverse("cart:update"), {"product_id": caju.pk, "quantity": 5})
    elif other_tab == "add":
        client.post(reverse("cart:add"), {"product_id": capulana.pk, "quantity": 3})
    elif other_tab == "remove":
        client.post(reverse("cart:remove"), {"product_id": cafe.pk})
    else:
        client.post(reverse("cart:remove"), {"product_id": caju.pk})
        client.post(reverse("cart:remove"), {"product_id": cafe.pk})

    response = client.post(CHECKOUT, data)

    assert_reshown(response, *notes)
    assert_nothing_created(payment_calls)


def _signed_expired(signed: str) -> str:
    """The same payload, signed two days ago."""

    class TwoDaysAgo(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - 2 * 24 * 3600)

    payload = signing.loads(signed, salt=SALT)
    return TwoDaysAgo(salt=SALT).sign_object(payload, compress=True)


def _forged_cheaper(signed: str) -> str:
    """The payload with the price lowered, signed with a key the attacker knows (not the shop's)."""
    payload = signing.loads(signed, salt=SALT)
    payload["l"][0][2] = "1.00"
    payload["t"] = "1.00"
    return signing.dumps(payload, key="not-the-secret-key", salt=SALT, compress=True)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: None, id="missing"),
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: "garbage", id="garbage"),
        pytest.param(lambda s: s[:-3] + ("abc" if s[-3:] != "abc" else "xyz"), id="bad-signature"),
        pytest.param(lambda s: s[: len(s) // 2], id="truncated"),
        pytest.param(lambda s: "é" * 40 + ":x:y", id="non-ascii"),
        pytest.param(lambda s: signing.dumps(signing.loads(s, salt=SALT), compress=True), id="other-salt"),
        pytest.param(_forged_cheaper, id="forged"),
        pytest.param(_signed_expired, id="expired"),
    ],
)
def test_missing_forged_or_expired_snapshot_reshows_the_page(client, payment_calls, tamper):
    p = product_make(price="250.00", name="Caju torrado")
    put_in_cart(client, {p.pk: 2})
    data = page_data(client.get(CHECKOUT))
    value = tamper(data["snapshot"])
    if value is None:
        del data["snapshot"]
    else:
        data["snapshot"] = value

    response = client.post(CHECKOUT, data)

    assert_reshown(response, EXPIRED_NOTE)
    assert snapshot_load(response.context["snapshot"]) is not None  # a fresh one to confirm with
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
def test_after_a_change_the_new_page_places_the_order_at_the_new_total(client, payment_calls):
    caju = product_make(price="250.00", name="Caju torrado", stock=5)
    put_in_cart(client, {caju.pk: 2})
    data = page_data(client.get(CHECKOUT))
    Product.objects.filter(pk=caju.pk).update(price=Decimal("300.00"))
    reshown = client.post(CHECKOUT, data)
    assert_reshown(reshown, "Preço de «Caju torrado» mudou de 250,00 MT para 300,00 MT.")

    response = client.post(CHECKOUT, page_data(reshown))

    order = Order.objects.get()
    assert (response.status_code, response["Location"]) == (303, order.get_absolute_url())
    assert order.total == Decimal("600.00")
    assert order.lines.get().unit_price == Decimal("300.00")
    assert [call["order"].pk for call in payment_calls] == [order.pk]


@pytest.mark.django_db
def test_price_changed_after_the_view_checked_is_caught_under_the_lock(client, payment_calls, monkeypatch):
    """The view's comparison passed, then the price changed before order_create locked the rows."""
    caju = product_make(price="250.00", name="Caju torrado")
    put_in_cart(client, {caju.pk: 1})
    data = page_data(client.get(CHECKOUT))

    def checkout_after_a_staff_edit(**kwargs):
        Product.objects.filter(pk=caju.pk).update(price=Decimal("275.00"))  # committed by staff meanwhile
        return checkout_place(**kwargs)

    monkeypatch.setattr(views, "checkout_place", checkout_after_a_staff_edit)

    response = client.post(CHECKOUT, data)

    assert_reshown(response, "Preço de «Caju torrado» mudou de 250,00 MT para 275,00 MT.")
    assert response.context["total"] == Decimal("275.00")  # the page shows the price now, not a cached one
    fresh = snapshot_load(response.context["snapshot"])
    assert fresh is not None and fresh.total == Decimal("275.00")
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
def test_invalid_fields_and_a_change_are_both_shown(client, payment_calls):
    caju = product_make(price="250.00", name="Caju torrado")
    put_in_cart(client, {caju.pk: 1})
    data = page_data(client.get(CHECKOUT), msisdn="12345")
    Product.objects.filter(pk=caju.pk).update(price=Decimal("260.00"))

    response = client.post(CHECKOUT, data)

    assert_reshown(response, "Preço de «Caju torrado» mudou de 250,00 MT para 260,00 MT.")
    assert "msisdn" in response.context["form"].errors
    assert_nothing_created(payment_calls)


@pytest.mark.django_db
def test_double_submit_after_a_price_change_still_gives_the_first_order(client, payment_calls):
    caju = product_make(price="250.00", stock=5)
    put_in_cart(client, {caju.pk: 1})
    data = page_data(client.get(CHECKOUT))
    first = client.post(CHECKOUT, data)
    Product.objects.filter(pk=caju.pk).update(price=Decimal("300.00"))
    second = client.post(CHECKOUT, data)
    order = Order.objects.get()
    assert first.status_code == second.status_code == 303
    assert first["Location"] == second["Location"] == order.get_absolute_url()
    assert order.total == Decimal("250.00")
    assert len(payment_calls) == 1


# --- order_create ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_order_create_refuses_a_snapshot_that_no_longer_matches():
    caju = product_make(price="250.00", name="Caju torrado")
    confirmed = snapshot_for({caju.pk: 2})
    Product.objects.filter(pk=caju.pk).update(price=Decimal("300.00"))
    with pytest.raises(CheckoutChanged) as info:
        order_make({caju.pk: 2}, confirmed=confirmed)
    assert info.value.changes == [
        "Preço de «Caju torrado» mudou de 250,00 MT para 300,00 MT.",
        "O total mudou de 500,00 MT para 600,00 MT.",
    ]
    assert not Order.objects.exists() and not StockReservation.objects.exists()


@pytest.mark.django_db
def test_order_create_refuses_quantities_other_than_the_confirmed_ones():
    caju, cafe = product_make(name="Caju torrado"), product_make(name="Café")
    confirmed = snapshot_for({caju.pk: 2, cafe.pk: 1})
    with pytest.raises(CheckoutChanged) as info:
        order_make({caju.pk: 2}, confirmed=confirmed)
    assert "Produto retirado do carrinho: «Café»." in info.value.changes
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_order_create_refuses_a_product_deactivated_after_confirmation():
    caju = product_make(name="Caju torrado")
    confirmed = snapshot_for({caju.pk: 1})
    Product.objects.filter(pk=caju.pk).update(is_active=False)
    with pytest.raises(CheckoutChanged) as info:
        order_make({caju.pk: 1}, confirmed=confirmed)
    assert info.value.changes[0] == "«Caju torrado» já não está à venda."
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_order_create_same_token_returns_the_order_even_if_prices_changed_since():
    caju = product_make(price="250.00", stock=5)
    confirmed = snapshot_for({caju.pk: 1})
    first = order_make({caju.pk: 1}, confirmed=confirmed, token="same-token-snapshot")
    Product.objects.filter(pk=caju.pk).update(price=Decimal("300.00"))
    assert order_make({caju.pk: 1}, confirmed=confirmed, token="same-token-snapshot").pk == first.pk


# --- the snapshot itself -----------------------------------------------------------------------------------


def line(pid, name, price, qty, for_sale=True):
    return SnapshotLine(product_id=pid, name=name, unit_price=Decimal(price), quantity=qty, for_sale=for_sale)


def snap(*lines):
    total = sum((x.line_total for x in lines if x.for_sale), Decimal("0.00"))
    return CheckoutSnapshot(lines=tuple(lines), total=total)


CAJU = line(1, "Caju", "250.00", 2)
CAFE = line(2, "Café", "20.00", 1)


@pytest.mark.parametrize(
    ("confirmed", "current", "expected"),
    [
        pytest.param(snap(CAJU, CAFE), snap(CAJU, CAFE), [], id="same"),
        pytest.param(snap(CAJU, CAFE), snap(CAFE, CAJU), [], id="other-order"),
        pytest.param(snap(CAJU), snap(line(1, "Caju", "250.0", 2)), [], id="same-amount-other-exponent"),
        pytest.param(snap(CAJU), snap(line(1, "Caju salgado", "250.00", 2)), [], id="renamed-only"),
        pytest.param(snap(), snap(), [], id="both-empty"),
        pytest.param(
            snap(CAJU, CAFE),
            snap(line(1, "Caju", "300.00", 2), CAFE),
            ["Preço de «Caju» mudou de 250,00 MT para 300,00 MT.", "O total mudou de 520,00 MT para 620,00 MT."],
            id="price-up",
        ),
        pytest.param(
            snap(CAJU),
            snap(line(1, "Caju salgado", "200.00", 2)),
            ["Preço de «Caju» mudou de 250,00 MT para 200,00 MT.", "O total mudou de 500,00 MT para 400,00 MT."],
            id="price-down-named-as-seen",
        ),
        pytest.param(
            snap(CAJU),
            snap(line(1, "Caju", "250.00", 3)),
            ["Quantidade de «Caju» mudou de 2 para 3.", "O total mudou de 500,00 MT para 750,00 MT."],
            id="quantity",
        ),
        pytest.param(
            snap(CAJU),
            snap(line(1, "Caju", "500.00", 1)),
            ["Preço de «Caju» mudou de 250,00 MT para 500,00 MT.", "Quantidade de «Caju» mudou de 2 para 1."],
            id="price-and-quantity-same-total",
        ),
        pytest.param(
            snap(CAJU, CAFE),
            snap(CAJU),
            ["Produto retirado do carrinho: «Café».", "O total mudou de 520,00 MT para 500,00 MT."],
            id="removed",
        ),
        pytest.param(
            snap(CAJU),
            snap(CAJU, CAFE),
            ["Produto adicionado ao carrinho: 1 × «Café».", "O total mudou de 500,00 MT para 520,00 MT."],
            id="added",
        ),
        pytest.param(
            snap(CAJU, CAFE),
            snap(CAJU, line(2, "Café", "20.00", 1, for_sale=False)),
            ["«Café» já não está à venda.", "O total mudou de 520,00 MT para 500,00 MT."],
            id="deactivated",
        ),
        pytest.param(
            snap(CAJU, CAFE),
            snap(CAJU, line(2, "", "0.00", 1, for_sale=False)),
            ["«Café» já não está à venda.", "O total mudou de 520,00 MT para 500,00 MT."],
            id="deleted-named-as-seen",
        ),
        pytest.param(
            snap(CAJU),
            snap(CAJU, line(9, "", "0.00", 1, for_sale=False)),
            ["Um produto do carrinho já não está à venda."],
            id="unseen-deleted-product-in-cart",
        ),
        pytest.param(
            snap(CAJU, line(2, "Café", "20.00", 1, for_sale=False)),
            snap(CAJU, line(2, "Café", "20.00", 1, for_sale=False)),
            [],
            id="unavailable-on-both-sides",
        ),
        pytest.param(
            snap(CAJU),
            CheckoutSnapshot(lines=(CAJU,), total=Decimal("499.00")),
            ["O total mudou de 500,00 MT para 499,00 MT."],
            id="total-only",
        ),
        pytest.param(
            snap(CAJU),
            snap(),
            ["Produto retirado do carrinho: «Caju».", "O total mudou de 500,00 MT para 0,00 MT."],
            id="emptied",
        ),
    ],
)
def test_snapshot_changes(confirmed, current, expected):
    with translation.override("pt"):
        assert snapshot_changes(confirmed=confirmed, current=current) == expected


def test_snapshot_changes_are_translated():
    confirmed, current = snap(CAJU), snap(line(1, "Caju", "300.00", 2), CAFE)
    with translation.override("en"):
        assert snapshot_changes(confirmed=confirmed, current=current) == [
            "The price of “Caju” changed from MT 250.00 to MT 300.00.",
            "Added to the cart: 1 × “Café”.",
            "The total changed from MT 500.00 to MT 620.00.",
        ]


def test_sign_and_load_round_trip_with_decimal_money():
    snapshot = snap(CAJU, line(2, "Café «especial»", "1234567.89", 20))
    signed = snapshot_sign(snapshot)
    assert ":" in signed and "Caf" not in signed  # compressed, not readable JSON
    loaded = snapshot_load(signed)
    assert loaded == snapshot
    assert loaded is not None
    assert all(isinstance(x.unit_price, Decimal) for x in loaded.lines) and isinstance(loaded.total, Decimal)


def test_sign_refuses_a_line_not_for_sale():
    with pytest.raises(ValueError, match="for sale"):
        snapshot_sign(snap(line(1, "Caju", "1.00", 1, for_sale=False)))


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"v": 2, "l": [], "t": "0.00"},
        {"v": 1, "l": [], "t": 0.0},
        {"v": 1, "l": [], "t": "NaN"},
        {"v": 1, "l": [], "t": "abc"},
        {"v": 1, "l": {}, "t": "0.00"},
        {"v": 1, "l": [[1, "Caju", 250.0, 2]], "t": "500.00"},
        {"v": 1, "l": [[1, "Caju", "250.00"]], "t": "500.00"},
        {"v": 1, "l": [[1, "Caju", "250.00", True]], "t": "250.00"},
        {"v": 1, "l": [["1", "Caju", "250.00", 2]], "t": "500.00"},
        {"v": 1, "l": [[1, None, "250.00", 2]], "t": "500.00"},
        {"v": 1, "l": [[1, "Caju", "Infinity", 2]], "t": "500.00"},
        {"v": 1, "l": [[1, "Caju", "250.00", 1], [1, "Caju", "250.00", 1]], "t": "500.00"},
    ],
)
def test_load_refuses_a_well_signed_payload_that_is_not_a_snapshot(payload):
    assert snapshot_load(signing.dumps(payload, salt=SALT, compress=True)) is None
