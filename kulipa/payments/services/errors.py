"""Errors of the payment services. ``str(error)`` of a :class:`PaymentError` is shown to the customer or staff."""

from __future__ import annotations


class PaymentError(Exception):
    """A payment cannot be started as asked. ``str(error)`` is a translated message for the customer."""


class PaymentNotAllowed(PaymentError):
    """The order is not awaiting payment (paid, expired, cancelled) or its stock is gone."""


class InvalidMsisdn(PaymentError):
    """The number is not a Vodacom M-Pesa number."""


class ReversalNotAllowed(PaymentError):
    """Nothing (or not that much) can be reversed for this payment."""
