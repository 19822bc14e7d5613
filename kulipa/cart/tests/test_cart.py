from decimal import Decimal

import pytest
from django.urls import reverse

from kulipa.accounts.models import User
from kulipa.cart.services import SESSION_KEY
from kulipa.catalog.tests.factories import make_product

pytestmark = pytest.mark.django_db

ADD = reverse("cart:add")
UPDATE = reverse("cart:update")
REMOVE = reverse("cart:remove")
DETAIL = reverse("cart:detail")


def add(client, product, quantity=1, **extra):
    return client.post(ADD, {"product_id": product.id, "quantity": quantity, **extra}, follow=True)


def cart_page(client):
    return client.get(DETAIL).content.decode()


def session_cart(client):
    return client.session.get(SESSION_KEY, {})


def test_add_to_cart_shows_line_total_and_header_count(client):
    product = make_product(name="Caju torrado", price=Decimal("350.00"))

    response = add(client, product, 2)

    assert "«Caju torrado» no carrinho (2)." in response.content.decode()
    html = cart_page(client)
    assert "Caju torrado" in html
    assert "700,00 MT" in html
    assert '<span id="cart-count" class="badge">2</span>' in html


def test_adding_again_adds_to_the_same_line(client):
    product = make_product(price=Decimal("100.00"))
    add(client, product, 2)
    add(client, product, 3)

    assert session_cart(client) == {str(product.id): 5}
    assert "500,00 MT" in cart_page(client)


def test_add_redirects_back_to_the_page_it_came_from(client):
    product = make_product()
    response = client.post(ADD, {"product_id": product.id, "quantity": 1, "next": product.get_absolute_url()})
    assert response.status_code == 302
    assert response["Location"] == product.get_absolute_url()
    response = client.post(ADD, {"product_id": product.id, "quantity": 1, "next": "https://evil.example/"})
    assert response["Location"] == DETAIL


BAD_NEXT = [
    "foo",
    "cart detail",
    "cart:detail",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "http://evil.example/",
    "https://testserver/carrinho/",
    "javascript:alert(1)",
    "/\t/evil.example",
    "/carrinho/\n",
    " /carrinho/",
]


@pytest.mark.parametrize("next_url", BAD_NEXT)
def test_add_with_a_bad_next_redirects_to_the_cart(client, next_url):
    """A ``next`` that is not a local absolute path used to reach ``redirect()``, which tried it as a URL name
    and answered 500 (NoReverseMatch)."""
    product = make_product()
    response = client.post(ADD, {"product_id": product.id, "quantity": 2, "next": next_url})
    assert response.status_code == 302
    assert response["Location"] == DETAIL
    assert session_cart(client) == {str(product.id): 2}  # the add itself happened, nothing else


@pytest.mark.parametrize("next_url", BAD_NEXT)
def test_update_and_remove_with_a_bad_next_redirect_to_the_cart(client, next_url):
    keep, drop = make_product(stock_on_hand=50), make_product()
    add(client, keep)
    add(client, drop)

    update = client.post(UPDATE, {"product_id": keep.id, "quantity": 3, "next": next_url})
    remove = client.post(REMOVE, {"product_id": drop.id, "next": next_url})

    assert (update.status_code, update["Location"]) == (302, DETAIL)
    assert (remove.status_code, remove["Location"]) == (302, DETAIL)
    assert session_cart(client) == {str(keep.id): 3}


def test_refused_change_with_a_bad_next_still_redirects_to_the_cart(client):
    response = client.post(ADD, {"product_id": "abc", "quantity": 1, "next": "foo"})
    assert (response.status_code, response["Location"]) == (302, DETAIL)
    assert session_cart(client) == {}


def test_local_next_with_query_is_kept(client):
    product = make_product()
    target = f"{product.get_absolute_url()}?ver=1"
    response = client.post(ADD, {"product_id": product.id, "quantity": 1, "next": target})
    assert (response.status_code, response["Location"]) == (302, target)


def test_update_and_remove(client):
    keep = make_product(name="Piri-piri", price=Decimal("95.00"))
    drop = make_product(name="Sabão de coco", price=Decimal("60.00"))
    add(client, keep)
    add(client, drop)

    client.post(UPDATE, {"product_id": keep.id, "quantity": 4})
    client.post(REMOVE, {"product_id": drop.id})

    html = cart_page(client)
    assert session_cart(client) == {str(keep.id): 4}
    assert "Sabão de coco" not in html
    assert "380,00 MT" in html


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("0", "A quantidade tem de ser pelo menos 1."),
        ("-2", "A quantidade tem de ser pelo menos 1."),
        ("21", "A quantidade máxima por produto é 20."),
        ("dois", "A quantidade tem de ser um número inteiro."),
        ("", "Indique a quantidade."),
    ],
)
def test_invalid_quantity_changes_nothing_and_says_why(client, quantity, message):
    product = make_product(stock_on_hand=50)
    add(client, product, 2)

    update = client.post(UPDATE, {"product_id": product.id, "quantity": quantity}, follow=True)
    added = client.post(ADD, {"product_id": product.id, "quantity": quantity}, follow=True)

    assert message in update.content.decode()
    assert message in added.content.decode()
    assert session_cart(client) == {str(product.id): 2}


def test_line_cannot_exceed_max_line_quantity_in_total(client, settings):
    settings.MAX_LINE_QUANTITY = 5
    product = make_product(name="Capulana", stock_on_hand=50)
    add(client, product, 4)

    response = add(client, product, 2)

    assert "no máximo 5 unidades de «Capulana»" in response.content.decode()
    assert session_cart(client) == {str(product.id): 4}


@pytest.mark.parametrize("product_id", ["999999", "abc", ""])
def test_unknown_product_is_refused(client, product_id):
    response = client.post(ADD, {"product_id": product_id, "quantity": 1}, follow=True)

    assert "Este produto não existe ou já não está à venda." in response.content.decode()
    assert session_cart(client) == {}


def test_inactive_product_cannot_be_added_and_disappears_from_the_cart(client):
    product = make_product(name="Cesto de palha")
    hidden = make_product(is_active=False)
    add(client, product)

    response = add(client, hidden)
    assert "Este produto não existe ou já não está à venda." in response.content.decode()

    product.is_active = False
    product.save()
    html = cart_page(client)
    assert "Cesto de palha" not in html
    assert "O seu carrinho está vazio." in html


def test_cannot_add_more_than_available_stock(client):
    product = make_product(name="Escultura Makonde", stock_on_hand=2)

    response = add(client, product, 3)
    assert "Só há 2 unidades disponíveis de «Escultura Makonde»." in response.content.decode()
    assert session_cart(client) == {}

    product.stock_on_hand = 0
    product.save()
    assert "«Escultura Makonde» está esgotado." in add(client, product).content.decode()


def test_line_above_current_stock_is_flagged(client):
    product = make_product(stock_on_hand=5)
    add(client, product, 4)
    product.stock_on_hand = 1
    product.save()

    assert "Só resta 1" in cart_page(client)


def test_prices_come_from_the_database(client):
    product = make_product(price=Decimal("100.00"))
    add(client, product, 3)
    assert "300,00 MT" in cart_page(client)

    product.price = Decimal("120.50")
    product.save()

    html = cart_page(client)
    assert "361,50 MT" in html
    assert "300,00 MT" not in html


def test_a_price_sent_by_the_browser_is_ignored(client):
    product = make_product(price=Decimal("2500.00"))

    add(client, product, 1, price="1.00", unit_price="1.00", total="1.00")

    assert session_cart(client) == {str(product.id): 1}
    html = cart_page(client)
    assert "2.500,00 MT" in html
    assert "1,00 MT" not in html


def test_htmx_add_returns_fragment_with_out_of_band_count_and_message(client):
    product = make_product(name="Mel")

    response = client.post(ADD, {"product_id": product.id, "quantity": 3}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert '<span id="cart-count" class="badge" hx-swap-oob="true">3</span>' in html
    assert "«Mel» no carrinho (3)." in html


def test_htmx_update_returns_the_refreshed_cart(client):
    product = make_product(price=Decimal("10.00"))
    add(client, product)

    response = client.post(UPDATE, {"product_id": product.id, "quantity": 7}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert '<section id="cart"' in html
    assert "70,00 MT" in html


def test_cart_page_links_to_checkout(client):
    add(client, make_product())
    assert 'href="/checkout/"' in cart_page(client)


def test_empty_cart_has_no_checkout_button(client):
    html = cart_page(client)
    assert "O seu carrinho está vazio." in html
    assert "/checkout/" not in html


def test_cart_survives_login_and_is_emptied_on_logout(client):
    User.objects.create_user(email="ana@example.com", password="uma-palavra-longa-42")
    product = make_product(name="Chá do Gurué")
    add(client, product, 2)
    key_before = client.session.session_key

    client.post(reverse("accounts:login"), {"username": "ana@example.com", "password": "uma-palavra-longa-42"})

    assert client.session.session_key != key_before  # login cycled the key ...
    assert "_auth_user_id" in client.session
    assert session_cart(client) == {str(product.id): 2}  # ... but kept the cart
    assert "Chá do Gurué" in cart_page(client)

    client.post(reverse("accounts:logout"))
    assert "O seu carrinho está vazio." in cart_page(client)


def test_cart_get_only_page_and_post_only_actions(client):
    assert client.get(ADD).status_code == 405
    assert client.post(DETAIL).status_code == 405
