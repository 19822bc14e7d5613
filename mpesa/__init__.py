"""A typed client for the Vodacom M-Pesa OpenAPI (Mozambique), and an offline sandbox that speaks it.

    from mpesa import Client, Config

    with Client(Config(api_key=..., public_key=..., service_provider_code="171717")) as mpesa:
        result = mpesa.c2b_payment(amount="10", msisdn="84 123 4567",
                                   transaction_reference="T12344C", third_party_reference="ABC123")
        if result.outcome is Outcome.UNKNOWN:
            ...  # the money may have moved: query, never push again

No Django, no global state.
"""

from mpesa.client import AsyncClient, Client
from mpesa.codes import RESPONSE_CODES, ResponseCode, outcome_for
from mpesa.config import Config, Environment, Operation, Ports, Timeouts
from mpesa.errors import ConfigurationError, MpesaError, ValidationError
from mpesa.outcomes import Outcome
from mpesa.results import CustomerNameResult, QueryResult, Result, TransactionStatus
from mpesa.validation import mask_msisdn, normalize_msisdn, validate_amount, validate_reference

__all__ = [
    "RESPONSE_CODES",
    "AsyncClient",
    "Client",
    "Config",
    "ConfigurationError",
    "CustomerNameResult",
    "Environment",
    "MpesaError",
    "Operation",
    "Outcome",
    "Ports",
    "QueryResult",
    "ResponseCode",
    "Result",
    "Timeouts",
    "TransactionStatus",
    "ValidationError",
    "mask_msisdn",
    "normalize_msisdn",
    "outcome_for",
    "validate_amount",
    "validate_reference",
]
