"""The in-memory transaction store: every payment and reversal the simulator took, and the prompts still waiting.

All methods must be called from the simulator's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import string
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

_TID_ALPHABET = string.ascii_lowercase + string.digits


class Kind(StrEnum):
    C2B = "c2b"
    B2C = "b2c"
    B2B = "b2b"
    REVERSAL = "reversal"


class Status(StrEnum):
    PENDING = "Pending"
    COMPLETED = "Completed"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"


def status_for_code(code: str) -> Status:
    """The final status a payment gets from its result code."""
    if code == "INS-0":
        return Status.COMPLETED
    if code == "INS-9":
        return Status.EXPIRED
    return Status.CANCELLED


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def new_transaction_id() -> str:
    return "".join(secrets.choice(_TID_ALPHABET) for _ in range(12))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(slots=True, eq=False)
class Transaction:
    kind: Kind
    service_provider_code: str
    third_party_reference: str
    transaction_reference: str
    amount: Decimal
    msisdn: str | None = None
    receiver_party_code: str | None = None
    original_transaction_id: str | None = None
    scenario: str | None = None
    status: Status = Status.PENDING
    result_code: str | None = None
    transaction_id: str = field(default_factory=new_transaction_id)
    conversation_id: str = field(default_factory=new_conversation_id)
    created_at: datetime.datetime = field(default_factory=_now)
    settled_at: datetime.datetime | None = None
    reversed_amount: Decimal = Decimal(0)
    reversal_ids: list[str] = field(default_factory=list)

    @property
    def query_status(self) -> str:
        """``output_ResponseTransactionStatus``: a payment still waiting for the customer is ``N/A``."""
        return "N/A" if self.status is Status.PENDING else self.status.value

    @property
    def remaining(self) -> Decimal:
        """What can still be reversed."""
        return self.amount - self.reversed_amount

    def settle(self, code: str) -> None:
        self.result_code = code
        self.status = status_for_code(code)
        self.settled_at = _now()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "transaction_id": self.transaction_id,
            "conversation_id": self.conversation_id,
            "third_party_reference": self.third_party_reference,
            "transaction_reference": self.transaction_reference,
            "service_provider_code": self.service_provider_code,
            "msisdn": self.msisdn,
            "receiver_party_code": self.receiver_party_code,
            "original_transaction_id": self.original_transaction_id,
            "amount": str(self.amount),
            "scenario": self.scenario,
            "status": self.status.value,
            "query_status": self.query_status,
            "result_code": self.result_code,
            "created_at": self.created_at.isoformat(),
            "settled_at": self.settled_at.isoformat() if self.settled_at else None,
            "reversed": self.reversed_amount > 0,
            "reversed_amount": str(self.reversed_amount),
            "reversals": list(self.reversal_ids),
        }


@dataclass(slots=True, eq=False)
class PendingPayment:
    """A C2B request waiting for the simulated customer. ``answer`` resolves to the result code."""

    transaction: Transaction
    answer: asyncio.Future[str]
    expires_at: float
    """Loop time at which the wait ends by itself."""
    interactive: bool
    timer: asyncio.TimerHandle | None = None


class Store:
    def __init__(self) -> None:
        self._by_id: dict[str, Transaction] = {}
        self._by_conversation: dict[str, Transaction] = {}
        self._by_reference: dict[tuple[str, str], Transaction] = {}
        self._used_references: set[tuple[str, str]] = set()
        self._pending: dict[str, PendingPayment] = {}

    # references -------------------------------------------------------------------------------------------
    def reserve_reference(self, service_provider_code: str, reference: str) -> bool:
        """Take ``reference`` for a payment or reversal; ``False`` when it was taken before (INS-10)."""
        key = (service_provider_code, reference)
        if key in self._used_references:
            return False
        self._used_references.add(key)
        return True

    def release_reference(self, service_provider_code: str, reference: str) -> None:
        self._used_references.discard((service_provider_code, reference))

    # transactions -----------------------------------------------------------------------------------------
    def add(self, tx: Transaction) -> None:
        self._by_id[tx.transaction_id] = tx
        self._by_conversation[tx.conversation_id] = tx
        self._by_reference[(tx.service_provider_code, tx.third_party_reference)] = tx

    def by_transaction_id(self, transaction_id: str) -> Transaction | None:
        return self._by_id.get(transaction_id)

    def find(self, service_provider_code: str, query_reference: str) -> Transaction | None:
        """A transaction by TransactionID, ConversationID or (this provider's) ThirdPartyReference."""
        return (
            self._by_id.get(query_reference)
            or self._by_conversation.get(query_reference)
            or self._by_reference.get((service_provider_code, query_reference))
        )

    def transactions(self) -> list[Transaction]:
        return list(self._by_id.values())

    # pending payments -------------------------------------------------------------------------------------
    def wait(self, tx: Transaction, *, delay: float, default_code: str, interactive: bool) -> PendingPayment:
        """Start waiting for the customer: ``default_code`` is the answer when ``delay`` seconds pass."""
        loop = asyncio.get_running_loop()
        pending = PendingPayment(tx, loop.create_future(), loop.time() + delay, interactive)
        pending.timer = loop.call_later(delay, self.settle, tx.conversation_id, default_code)
        self._pending[tx.conversation_id] = pending
        return pending

    def settle(self, conversation_id: str, code: str) -> bool:
        """Give a pending payment its answer. ``False`` when nothing is waiting under that ConversationID."""
        pending = self._pending.pop(conversation_id, None)
        if pending is None:
            return False
        if pending.timer is not None:
            pending.timer.cancel()
        pending.transaction.settle(code)
        if not pending.answer.done():
            pending.answer.set_result(code)
        return True

    def pending(self, conversation_id: str) -> PendingPayment | None:
        return self._pending.get(conversation_id)

    def prompts_for(self, msisdn: str) -> list[PendingPayment]:
        """The prompts a person can answer on this number's phone page, oldest first."""
        return [p for p in self._pending.values() if p.interactive and p.transaction.msisdn == msisdn]

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def clear(self, *, expire_code: str = "INS-9") -> None:
        """Forget everything. Requests still held open are answered with ``expire_code`` first."""
        for conversation_id in list(self._pending):
            self.settle(conversation_id, expire_code)
        self._by_id.clear()
        self._by_conversation.clear()
        self._by_reference.clear()
        self._used_references.clear()
