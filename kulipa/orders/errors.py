"""Errors raised by ``kulipa.orders.services``; ``str(error)`` is a translated message for the customer."""

from __future__ import annotations


class OrderError(ValueError):
    """The order cannot be placed as asked; nothing was created."""


class EmptyOrder(OrderError):
    pass


class InvalidQuantity(OrderError):
    pass


class ProductUnavailable(OrderError):
    """A product does not exist or is no longer for sale."""

    def __init__(self, message: str, *, product_ids: list[int]) -> None:
        super().__init__(message)
        self.product_ids = product_ids


class OrderTooLarge(OrderError):
    pass


class OrderNotCancellable(OrderError):
    pass


class CheckoutChanged(OrderError):
    """The products, prices or quantities are no longer the ones on the checkout page the customer confirmed.

    ``changes`` lists what differs, as translated sentences for the customer (``str(error)`` joins them).
    """

    def __init__(self, changes: list[str]) -> None:
        super().__init__(" ".join(changes))
        self.changes = list(changes)
