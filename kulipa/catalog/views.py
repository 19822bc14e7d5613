from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from kulipa.catalog.cards import product_cards
from kulipa.catalog.selectors import product_list_active, product_stock_list


def product_list(request: HttpRequest) -> HttpResponse:
    """Home page: every active product with price, available stock and an add-to-cart form."""
    items = product_stock_list(products=product_list_active())
    cards = product_cards(request=request, items=items)
    return render(request, "catalog/product_list.html", {"items": items, "cards": cards})


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """One active product; inactive or unknown slugs are 404."""
    product = get_object_or_404(product_list_active(), slug=slug)
    (item,) = product_stock_list(products=[product])
    return render(request, "catalog/product_detail.html", {"item": item, "product": product})
