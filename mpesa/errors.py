"""Exceptions raised by the library. Gateway answers are never raised: they come back as results."""

from __future__ import annotations


class MpesaError(Exception):
    """Base class of every exception this library raises."""


class ConfigurationError(MpesaError, ValueError):
    """The client cannot be built: a missing setting or a public key that does not load."""


class ValidationError(MpesaError, ValueError):
    """A request was refused before anything was sent. ``field`` names the offending argument."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
