"""The six gateway operations, as aiohttp handlers, with the gateway's validation order and answers.

Validation order (first failure wins): bearer token (INS-2, 401) → body is a JSON object (INS-21) → required
fields present (INS-20) → field types (INS-21) → service provider code (INS-13) → MSISDN (INS-2051) → amount
(INS-15) → TransactionReference (INS-17) → ThirdPartyReference (INS-19) → ThirdPartyReference not used before by
a payment or reversal of this service provider (INS-10, 409). A reference is taken by every payment or reversal
that gets that far, whatever its outcome, except a C2B answered "overloaded" (INS-16).

Response faults (``mpesa.sandbox.faults``) wrap every C2B and status query: one that strikes before processing
answers in place of the handler; one that strikes after lets the handler run and spoils its answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from mpesa.codes import lookup
from mpesa.config import ENDPOINTS, Operation
from mpesa.sandbox.faults import ResponseFault
from mpesa.sandbox.scenarios import Scenario, Wait, scenario_for
from mpesa.sandbox.settings import B2B_SANDBOX_RECEIVER
from mpesa.sandbox.state import SandboxState
from mpesa.sandbox.store import Kind, PendingPayment, Status, Transaction, new_conversation_id
from mpesa.validation import mask_msisdn

logger = logging.getLogger("mpesa.sandbox")

_PAYMENT_FIELDS = (
    "input_TransactionReference",
    "input_CustomerMSISDN",
    "input_Amount",
    "input_ThirdPartyReference",
    "input_ServiceProviderCode",
)
_B2B_FIELDS = (
    "input_TransactionReference",
    "input_Amount",
    "input_ThirdPartyReference",
    "input_PrimaryPartyCode",
    "input_ReceiverPartyCode",
)
_REVERSAL_FIELDS = (
    "input_TransactionID",
    "input_SecurityCredential",
    "input_InitiatorIdentifier",
    "input_ThirdPartyReference",
    "input_ServiceProviderCode",
)
_QUERY_FIELDS = ("input_QueryReference", "input_ThirdPartyReference", "input_ServiceProviderCode")
_NAME_FIELDS = ("input_CustomerMSISDN", "input_ThirdPartyReference", "input_ServiceProviderCode")
_AMOUNT_FIELDS = frozenset({"input_Amount", "input_ReversalAmount"})

_MSISDN = re.compile(r"2588[45][0-9]{7}")
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]{1,2})?")
_REFERENCE = re.compile(r"[A-Za-z0-9]{1,20}")
_SHORT_CODE = re.compile(r"[0-9]{5,6}")
_FIRST_NAMES = ("Joao", "Maria", "Ana", "Carlos", "Fatima", "Jose", "Luisa", "Alberto", "Celia", "Armando")
_SECOND_NAMES = ("Machava", "Mondlane", "Sitoe", "Cossa", "Nhantumbo", "Langa", "Mabunda", "Tembe")

Fields = dict[str, Any]
Handler = Callable[[web.Request, Fields], Awaitable[web.StreamResponse]]
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Rejection(Exception):
    """The request is answered with ``code`` (its HTTP status from the INS table)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1)


def _reference_echo(fields: Fields) -> str:
    value = fields.get("input_ThirdPartyReference")
    return value if isinstance(value, str) else ""


def _require(fields: Fields, names: tuple[str, ...]) -> None:
    if any(fields.get(name) is None for name in names):
        raise Rejection("INS-20")


def _texts(fields: Fields, names: tuple[str, ...]) -> list[str]:
    """The named fields as strings; amounts may also be JSON numbers. Anything else is INS-21."""
    values: list[str] = []
    for name in names:
        value = fields[name]
        if name in _AMOUNT_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise Rejection("INS-21")
        values.append(value)
    return values


def _amount(text: str) -> Decimal:
    if not _AMOUNT.fullmatch(text):
        raise Rejection("INS-15")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise Rejection("INS-15") from None
    if amount <= 0:
        raise Rejection("INS-15")
    return amount


def _check_reference(value: str, code: str) -> None:
    if not _REFERENCE.fullmatch(value):
        raise Rejection(code)


class Gateway:
    """Builds the handler of each operation around one :class:`SandboxState`."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._handlers: dict[Operation, Handler] = {
            Operation.C2B: self._c2b,
            Operation.QUERY: self._query,
            Operation.REVERSAL: self._reversal,
            Operation.B2C: self._b2c,
            Operation.B2B: self._b2b,
            Operation.CUSTOMER_NAME: self._customer_name,
        }

    def add_routes(self, app: web.Application, operation: Operation) -> None:
        """Route ``operation`` on ``app``, with and without the trailing slash."""
        method, path = ENDPOINTS[operation]
        handler = self._wrap(operation, self._handlers[operation])
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path.rstrip("/"), handler)

    # envelope ---------------------------------------------------------------------------------------------
    @staticmethod
    def answer(
        operation: Operation,
        code: str,
        *,
        third_party_reference: str,
        conversation_id: str | None = None,
        transaction_id: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> web.Response:
        entry = lookup(code)
        assert entry is not None, code
        status = entry.http_status
        if code == "INS-0" and operation in (Operation.QUERY, Operation.CUSTOMER_NAME):
            status = 200
        body: dict[str, str] = {
            "output_ResponseCode": code,
            "output_ResponseDesc": entry.description,
            "output_ConversationID": conversation_id or new_conversation_id(),
            "output_ThirdPartyReference": third_party_reference,
        }
        if operation not in (Operation.QUERY, Operation.CUSTOMER_NAME):
            body["output_TransactionID"] = transaction_id or "N/A"
        body.update(extra or {})
        return web.json_response(body, status=status)

    def _wrap(self, operation: Operation, handler: Handler) -> RouteHandler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if not await self.state.tokens.is_valid(request.headers.get("Authorization")):
                logger.info("%s refused: invalid API key (INS-2)", operation.value)
                body = {"output_ResponseCode": "INS-2", "output_ResponseDesc": "Invalid API Key"}
                return web.json_response(body, status=401)
            fault = self.state.sender.faults.take(operation)
            if fault is not None and fault.before_processing:
                return await self._fault_before(request, operation, fault)
            fields: Fields = {}
            try:
                fields = await self._fields(request)
                response = await handler(request, fields)
            except Rejection as rejection:
                logger.info(
                    "%s rejected: %s (third party reference %r)",
                    operation.value,
                    rejection.code,
                    _reference_echo(fields),
                )
                response = self.answer(operation, rejection.code, third_party_reference=_reference_echo(fields))
            if fault is None:
                return response
            logger.info("%s %s: answer %s (fault)", operation.value, _reference_echo(fields), fault.value)
            return _spoil(request, response, fault)

        return wrapped

    async def _fault_before(
        self, request: web.Request, operation: Operation, fault: ResponseFault
    ) -> web.StreamResponse:
        """A fault that strikes before the request is processed: nothing recorded, no reference taken."""
        try:
            reference = _reference_echo(await self._fields(request))
        except Rejection:
            reference = ""
        logger.info("%s %s: %s, not processed (fault)", operation.value, reference, fault.value)
        if fault is ResponseFault.DROP_BEFORE:
            return _drop(request)
        return self.answer(operation, "INS-16", third_party_reference=reference)

    @staticmethod
    async def _fields(request: web.Request) -> Fields:
        if request.method == "GET":
            return {key: request.query.getone(key) for key in request.query}
        try:
            data = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise Rejection("INS-21") from None
        if not isinstance(data, dict):
            raise Rejection("INS-21")
        return data

    def _check_provider(self, code: str) -> None:
        if not hmac.compare_digest(code.encode(), self.state.settings.service_provider_code.encode()):
            raise Rejection("INS-13")

    def _reserve(self, service_provider_code: str, reference: str) -> None:
        if not self.state.store.reserve_reference(service_provider_code, reference):
            raise Rejection("INS-10")

    def _payment_fields(self, fields: Fields) -> tuple[str, str, Decimal, str, str]:
        """C2B and B2C: (transaction reference, msisdn, amount, third party reference, service provider code)."""
        _require(fields, _PAYMENT_FIELDS)
        reference, msisdn, amount_text, third_party_reference, provider = _texts(fields, _PAYMENT_FIELDS)
        self._check_provider(provider)
        if not _MSISDN.fullmatch(msisdn):
            raise Rejection("INS-2051")
        amount = _amount(amount_text)
        _check_reference(reference, "INS-17")
        _check_reference(third_party_reference, "INS-19")
        self._reserve(provider, third_party_reference)
        return reference, msisdn, amount, third_party_reference, provider

    # C2B --------------------------------------------------------------------------------------------------
    def _delay(self, scenario: Scenario) -> float:
        config = self.state.config
        return {
            Wait.NONE: 0.0,
            Wait.ANSWER_DELAY: config.answer_delay,
            Wait.PUSH_WINDOW: config.push_window,
            Wait.PERSON: config.push_window,
            Wait.LONG_WAIT: config.long_wait,
        }[scenario.wait]

    async def _c2b(self, request: web.Request, fields: Fields) -> web.StreamResponse:
        reference, msisdn, amount, third_party_reference, provider = self._payment_fields(fields)
        scenario = scenario_for(msisdn)
        masked = mask_msisdn(msisdn)
        if not scenario.recorded:
            self.state.store.release_reference(provider, third_party_reference)
            logger.info("c2b %s for %s: %s at once", third_party_reference, masked, scenario.code)
            return self.answer(Operation.C2B, scenario.code, third_party_reference=third_party_reference)
        tx = Transaction(
            Kind.C2B, provider, third_party_reference, reference, amount, msisdn=msisdn, scenario=scenario.suffix
        )
        self.state.store.add(tx)
        pending = self.state.store.wait(
            tx, delay=self._delay(scenario), default_code=scenario.code, interactive=scenario.wait is Wait.PERSON
        )
        logger.info("c2b %s for %s: pushed (scenario %s)", third_party_reference, masked, scenario.suffix)
        callback_url = self.state.config.callback_url
        if callback_url is not None:
            task = asyncio.create_task(self._deliver_later(pending, scenario, callback_url))
            self.state.spawn(task)
            return self.answer(
                Operation.C2B,
                "INS-0",
                third_party_reference=third_party_reference,
                conversation_id=tx.conversation_id,
            )
        code = await pending.answer
        logger.info("c2b %s for %s: %s", third_party_reference, masked, code)
        if scenario.drop_connection:
            return _drop(request)
        return self.answer(
            Operation.C2B,
            code,
            third_party_reference=third_party_reference,
            conversation_id=tx.conversation_id,
            transaction_id=tx.transaction_id,
        )

    async def _deliver_later(self, pending: PendingPayment, scenario: Scenario, url: str) -> None:
        code = await pending.answer
        tx = pending.transaction
        entry = lookup(code)
        payload = {
            "input_OriginalConversationID": tx.conversation_id,
            "input_TransactionID": tx.transaction_id,
            "input_ThirdPartyReference": tx.third_party_reference,
            "input_ResultCode": code,
            "input_ResultDesc": entry.description if entry else code,
        }
        self.state.sender.submit(url, payload, self.state.config, drop=scenario.drop_connection)

    # B2C, B2B ---------------------------------------------------------------------------------------------
    async def _b2c(self, request: web.Request, fields: Fields) -> web.StreamResponse:
        reference, msisdn, amount, third_party_reference, provider = self._payment_fields(fields)
        tx = Transaction(Kind.B2C, provider, third_party_reference, reference, amount, msisdn=msisdn)
        tx.settle("INS-0")
        self.state.store.add(tx)
        logger.info("b2c %s to %s: INS-0", third_party_reference, mask_msisdn(msisdn))
        return self._paid(Operation.B2C, tx)

    async def _b2b(self, request: web.Request, fields: Fields) -> web.StreamResponse:
        _require(fields, _B2B_FIELDS)
        reference, amount_text, third_party_reference, primary, receiver = _texts(fields, _B2B_FIELDS)
        self._check_provider(primary)
        if not _SHORT_CODE.fullmatch(receiver):
            raise Rejection("INS-2002")
        amount = _amount(amount_text)
        _check_reference(reference, "INS-17")
        _check_reference(third_party_reference, "INS-19")
        self._reserve(primary, third_party_reference)
        tx = Transaction(Kind.B2B, primary, third_party_reference, reference, amount, receiver_party_code=receiver)
        tx.settle("INS-0")
        self.state.store.add(tx)
        sandbox_receiver = " (sandbox receiver)" if receiver == B2B_SANDBOX_RECEIVER else ""
        logger.info("b2b %s to %s%s: INS-0", third_party_reference, receiver, sandbox_receiver)
        return self._paid(Operation.B2B, tx)

    def _paid(self, operation: Operation, tx: Transaction) -> web.Response:
        return self.answer(
            operation,
            "INS-0",
            third_party_reference=tx.third_party_reference,
            conversation_id=tx.conversation_id,
            transaction_id=tx.transaction_id,
        )

    # reversal ---------------------------------------------------------------------------------------------
    async def _reversal(self, request: web.Request, fields: Fields) -> web.StreamResponse:
        _require(fields, _REVERSAL_FIELDS)
        transaction_id, credential, initiator, third_party_reference, provider = _texts(fields, _REVERSAL_FIELDS)
        amount_field = next((n for n in ("input_ReversalAmount", "input_Amount") if fields.get(n) is not None), None)
        amount_text = _texts(fields, (amount_field,))[0] if amount_field else None
        settings = self.state.settings
        self._check_provider(provider)
        if not hmac.compare_digest(initiator.encode(), settings.initiator_identifier.encode()):
            raise Rejection("INS-24")
        if not hmac.compare_digest(credential.encode(), settings.security_credential.encode()):
            raise Rejection("INS-25")
        amount = _amount(amount_text) if amount_text is not None else None
        _check_reference(third_party_reference, "INS-19")
        self._reserve(provider, third_party_reference)
        original = self.state.store.by_transaction_id(transaction_id)
        if (
            original is None
            or original.kind is Kind.REVERSAL
            or original.status is not Status.COMPLETED
            or original.service_provider_code != provider
        ):
            raise Rejection("INS-18")
        amount = original.remaining if amount is None else amount
        if amount <= 0 or amount > original.remaining:
            raise Rejection("INS-15")
        reversal = Transaction(
            Kind.REVERSAL,
            provider,
            third_party_reference,
            original.transaction_reference,
            amount,
            msisdn=original.msisdn,
            original_transaction_id=original.transaction_id,
        )
        reversal.settle("INS-0")
        original.reversed_amount += amount
        original.reversal_ids.append(reversal.transaction_id)
        self.state.store.add(reversal)
        logger.info("reversal %s of %s: %s reversed", third_party_reference, original.third_party_reference, amount)
        return self._paid(Operation.REVERSAL, reversal)

    # queries ----------------------------------------------------------------------------------------------
    async def _query(self, request: web.Request, fields: Fields) -> web.StreamResponse:
        _require(fields, _QUERY_FIELDS)
        query_reference, third_party_reference, provider = _texts(fields, _QUERY_FIELDS)
        self._check_provider(provider)
        _check_reference(third_party_reference, "INS-19")
        tx = self.state.store.find(provider, query_reference)
        extra = {"output_ResponseTransactionStatus": tx.query_status if tx else "N/A"}
        if tx is not None and tx.kind is not Kind.REVERSAL:
            extra["output_Reversed"] = "True" if tx.reversed_amount > 0 else "False"
            if tx.reversed_amount > 0:
                extra["output_ReversedAmount"] = str(tx.reversed_amount)
        return self.answer(Operation.QUERY, "INS-0", third_party_reference=third_party_reference, extra=extra)

    async def _customer_name(self, request: web.Request, fields: Fields) -> web.StreamResponse:
        _require(fields, _NAME_FIELDS)
        msisdn, third_party_reference, provider = _texts(fields, _NAME_FIELDS)
        self._check_provider(provider)
        if not _MSISDN.fullmatch(msisdn):
            raise Rejection("INS-2051")
        _check_reference(third_party_reference, "INS-19")
        number = int(msisdn)
        extra = {
            "output_CustomerMSISDN": msisdn,
            "output_FirstName": _mask_name(_FIRST_NAMES[number % len(_FIRST_NAMES)]),
            "output_SecondName": _mask_name(_SECOND_NAMES[number // 10 % len(_SECOND_NAMES)]),
        }
        return self.answer(Operation.CUSTOMER_NAME, "INS-0", third_party_reference=third_party_reference, extra=extra)


def _spoil(request: web.Request, response: web.StreamResponse, fault: ResponseFault) -> web.StreamResponse:
    """What the client receives instead of ``response`` (already processed) under ``fault``."""
    if fault is ResponseFault.DROP_AFTER or not isinstance(response, web.Response):
        return _drop(request)
    body = response.body if isinstance(response.body, bytes) else b""
    garbled = body[: len(body) // 2] if fault is ResponseFault.MALFORMED else b""
    return web.Response(status=response.status, body=garbled, content_type="application/json")


def _drop(request: web.Request) -> web.StreamResponse:
    """Cut the connection without sending a byte (scenario 08, faults ``drop_before``/``drop_after``), then give
    aiohttp a response it cannot send."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)
