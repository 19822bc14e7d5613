"""Payment writes: place a checkout with its first attempt, push it, record what came back, reconcile, make an
order paid, reverse, repair. Import from here; the submodules are an implementation detail.

===================  ==========================================================================================
module               what
===================  ==========================================================================================
``checkout``         :func:`checkout_place`: order + lines + reservations + attempt + event, one transaction
``attempts``         :func:`payment_attempt_start` ("try again"), claim a push, record its answer, close stale
``paid``             :func:`order_mark_paid`: the ONE place that makes an order paid
``reconcile``        :func:`attempt_reconcile`: status query and its answer
``callbacks``        :func:`callback_receive` / :func:`callback_refuse` (web), :func:`callback_process` (worker)
``reversals``        request / send once / reconcile a reversal, record one done in the M-Pesa portal; the order
                     and stock after it
``sweep``            the repair of every intermediate state, and raising what is stuck
``apply``            carrying out a decision of :mod:`kulipa.payments.decisions` on a locked attempt
``status``           the customer's payment status and the stock hold around pushes
``attention``        raising items for a person, and resolving them (staff)
``staff``            staff decisions carried out here: :func:`order_force_confirm`
===================  ==========================================================================================

The contract, for every module:

* Locks only through :mod:`kulipa.core.locks`, in its order: Order → PaymentAttempt → Reversal → Product
  (ascending pk) → StockReservation. Every function that changes an attempt holds the order and the attempt,
  re-reads them and returns without writing when the target state is already reached (idempotent).
* States change only through the tables of :mod:`kulipa.payments.transitions` (orders' through
  ``kulipa.orders.services.order_transition``); decisions come from the pure :mod:`kulipa.payments.decisions`.
* No network inside a transaction (``gateway`` refuses), and the web process never calls M-Pesa. These functions
  never queue work: :mod:`kulipa.payments.tasks` does, after commit.
"""

from kulipa.payments.services.attempts import (
    attempt_create,
    payment_attempt_claim_push,
    payment_attempt_record_push_answer,
    payment_attempt_start,
    payment_attempts_close_stale_queued,
    payment_retry_number,
)
from kulipa.payments.services.attention import attention_raise, attention_resolve
from kulipa.payments.services.callbacks import (
    MAX_CALLBACK_BYTES,
    CallbackReceipt,
    CallbackRejected,
    callback_fields,
    callback_process,
    callback_receive,
    callback_refuse,
)
from kulipa.payments.services.checkout import checkout_place
from kulipa.payments.services.errors import InvalidMsisdn, PaymentError, PaymentNotAllowed, ReversalNotAllowed
from kulipa.payments.services.paid import PaidOutcome, PaidResult, order_mark_paid
from kulipa.payments.services.reconcile import CallbackHint, ReconcileOutcome, attempt_apply_query, attempt_reconcile
from kulipa.payments.services.reversals import (
    order_payment_recheck,
    payment_reversal_reconcile,
    payment_reversal_record_external,
    payment_reversal_request,
    payment_reversal_send,
    reversed_total,
)
from kulipa.payments.services.staff import order_force_confirm
from kulipa.payments.services.status import PAYMENT_STATUS_FOR_STATE
from kulipa.payments.services.sweep import (
    attempts_due,
    attempts_queued,
    deliveries_to_process,
    order_cancel_unpaid,
    orders_expire_due,
    redispatch_pass_times,
    rejected_deliveries_prune,
    reversals_to_query,
    reversals_to_send,
    stuck_raise,
)

__all__ = [
    "MAX_CALLBACK_BYTES",
    "PAYMENT_STATUS_FOR_STATE",
    "CallbackHint",
    "CallbackReceipt",
    "CallbackRejected",
    "InvalidMsisdn",
    "PaidOutcome",
    "PaidResult",
    "PaymentError",
    "PaymentNotAllowed",
    "ReconcileOutcome",
    "ReversalNotAllowed",
    "attempt_apply_query",
    "attempt_create",
    "attempt_reconcile",
    "attempts_due",
    "attempts_queued",
    "attention_raise",
    "attention_resolve",
    "callback_fields",
    "callback_process",
    "callback_receive",
    "callback_refuse",
    "checkout_place",
    "deliveries_to_process",
    "order_cancel_unpaid",
    "order_force_confirm",
    "order_mark_paid",
    "order_payment_recheck",
    "orders_expire_due",
    "payment_attempt_claim_push",
    "payment_attempt_record_push_answer",
    "payment_attempt_start",
    "payment_attempts_close_stale_queued",
    "payment_retry_number",
    "payment_reversal_reconcile",
    "payment_reversal_record_external",
    "payment_reversal_request",
    "payment_reversal_send",
    "redispatch_pass_times",
    "rejected_deliveries_prune",
    "reversals_to_query",
    "reversals_to_send",
    "reversed_total",
    "stuck_raise",
]
