from decimal import Decimal

import pytest
from django.contrib.sessions.backends.db import SessionStore

from kulipa.cart.services import Cart, CartError
from kulipa.catalog.tests.factories import make_product

pytestmark = pytest.mark.django_db


def test_cart_api_for_checkout():
    cart = Cart(session=SessionStore())
    caju = make_product(price=Decimal("350.00"))
    sumo = make_product(price=Decimal("120.00"))

    cart.add(caju.id, 2)
    cart.add(sumo.id)
    cart.set(sumo.id, 3)

    assert len(cart) == 5
    assert cart.as_quantities() == {caju.id: 2, sumo.id: 3}
    assert cart.total() == Decimal("1060.00")
    assert [(line.product, line.quantity, line.line_total) for line in cart.lines()] == [
        (caju, 2, Decimal("700.00")),
        (sumo, 3, Decimal("360.00")),
    ]

    cart.clear()
    assert len(cart) == 0
    assert cart.is_empty
    assert cart.total() == Decimal("0.00")


def test_refused_change_leaves_the_cart_as_it_was():
    cart = Cart(session=SessionStore())
    product = make_product(stock_on_hand=3)
    cart.add(product.id, 2)

    with pytest.raises(CartError):
        cart.add(product.id, 2)  # only 3 in stock
    with pytest.raises(CartError):
        cart.set(product.id, 0)
    with pytest.raises(CartError):
        cart.set(product.id, "2")  # type: ignore[arg-type]

    assert cart.as_quantities() == {product.id: 2}


def test_malformed_session_data_is_ignored():
    session = SessionStore()
    product = make_product()
    session["cart"] = {str(product.id): 2, "x": 1, "5": "many", "-1": 3}

    assert Cart(session=session).as_quantities() == {product.id: 2}
