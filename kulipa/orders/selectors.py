"""Who may see which order. Everyone else gets a 404, never a 403: an order's existence is not disclosed."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from kulipa.orders.models import Order

SESSION_ORDERS_KEY = "kulipa_orders"


def order_get_for_viewer(*, request: HttpRequest, public_id: str) -> Order:
    """The order behind an unguessable link.

    A logged-in customer sees their own orders; a guest sees orders made from this session or opened via the
    link (the public id is 128 random bits, so holding the link is the credential). An order that belongs to
    another account is hidden from everyone else, even with the link.

    Being staff opens nothing here: staff see customers' orders in the back office (the admin), which checks
    their permissions and records what they do. A staff member who is the order's own customer sees it as any
    customer does.
    """
    if "\x00" in public_id:  # from the URL; PostgreSQL refuses NUL in a query (500), and no id holds one
        raise Http404
    try:
        order = Order.objects.get(public_id=public_id)
    except Order.DoesNotExist:
        raise Http404 from None
    viewer = request.user
    is_owner = viewer.is_authenticated and viewer.pk == order.user_id
    if order.user_id is not None and not is_owner:
        raise Http404
    return order


def remember_order_in_session(*, request: HttpRequest, order: Order) -> None:
    ids = list(request.session.get(SESSION_ORDERS_KEY, []))
    if order.public_id not in ids:
        ids.append(order.public_id)
        request.session[SESSION_ORDERS_KEY] = ids[-50:]


def order_get_by_checkout_token(*, request: HttpRequest, checkout_token: str) -> Order | None:
    """The order an earlier submit of this checkout form created, if this viewer may see it (double submit)."""
    if not checkout_token or "\x00" in checkout_token:  # raw POST data; PostgreSQL refuses NUL in a query
        return None
    public_id = Order.objects.filter(checkout_token=checkout_token).values_list("public_id", flat=True).first()
    if public_id is None:
        return None
    try:
        return order_get_for_viewer(request=request, public_id=public_id)
    except Http404:
        return None


def order_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Order]:
    """A customer's own orders, newest first."""
    return Order.objects.filter(user_id=user.pk).order_by("-created_at", "-pk")


def order_list_for_session(*, request: HttpRequest) -> QuerySet[Order]:
    """Guest orders placed (or opened) from this browser session, newest first; never another account's."""
    ids = [str(i) for i in request.session.get(SESSION_ORDERS_KEY, []) if isinstance(i, str)]
    return Order.objects.filter(public_id__in=ids, user__isnull=True).order_by("-created_at", "-pk")
