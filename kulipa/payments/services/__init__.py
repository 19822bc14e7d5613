"""Payment writes: start an attempt, push it, record what came back, reconcile, make an order paid, reverse.

Import from here (``from kulipa.payments import services`` / ``from kulipa.payments.services import …``); the
submodules are an implementation detail. Where each concern lives:

===================  ====================================================================================
module               what
===================  ====================================================================================
``errors``           :class:`PaymentError`, :class:`PaymentNotAllowed`, :class:`InvalidMsisdn`
``_common``          (private) ``settings.MPESA`` accessors (:func:`payment_mode`, :func:`push_window`,
                     :func:`reconcile_margin`, :func:`reconcile_backoff`, …), constants, :func:`mask_payload`,
                     the event writer, the order → attempt lock, ``order.payment_status`` sync, reconcile
                     scheduling
``attempts``         :func:`payment_attempt_start` (web), :func:`payment_attempt_claim_push`,
                     :func:`payment_attempt_dispatch`, :func:`payment_attempt_record_push_result` (worker),
                     :func:`payment_attempt_abandon_queued`
``paid``             :func:`order_mark_paid`, :class:`PaidOutcome`, :class:`PaidResult`: the ONE place that makes
                     an order paid
``reconcile``        :func:`attempt_reconcile`, :func:`payments_sweep`, :class:`ReconcileOutcome`,
                     :class:`CallbackHint`
``callbacks``        :func:`callback_receive` (web), :func:`callback_process` (worker),
                     :class:`CallbackRejected`, :class:`CallbackReceipt`
``reversals``        :func:`payment_reversal_request`, :func:`payment_reversal_send`,
                     :func:`payment_reversal_reconcile`, :func:`reversals_due`, :func:`order_payment_recheck` (admin)
===================  ====================================================================================

Imports go one way: ``errors``, ``_common`` ← ``paid`` ← ``attempts`` ← ``reconcile`` ← ``callbacks``;
``reversals`` needs only ``errors`` and ``_common``. ``kulipa.payments.tasks`` imports this package, so the services
import ``tasks`` lazily, inside the function that queues work.

The contract, for every module:

* Lock order (docs/concurrency.md): Order (1) → PaymentAttempt (2) → Product, ascending pk (3) →
  StockReservation (4). Order and attempt rows are locked ``select_for_update(no_key=True)``.
* Every function that changes an attempt takes the order row first, then the attempt row, inside one
  ``transaction.atomic()``, re-reads them and returns without writing when the target state is already reached
  (idempotent: running a service twice, or concurrently, changes nothing the second time). Transitions outside
  those locks are conditional UPDATEs (``queued → pushing``, claiming a reconcile or a callback delivery).
* No function holds a lock while talking to M-Pesa: network calls happen between transactions, and the web process
  never calls M-Pesa at all (it writes rows and queues huey tasks with ``transaction.on_commit``).

Attempt states::

    QUEUED ──dispatch (conditional UPDATE, only the winner pushes)──► PUSHING
    PUSHING ──sync answer──► SUCCEEDED | DECLINED | INSUFFICIENT_FUNDS | FAILED | UNKNOWN
    PUSHING ──async accepted──► AWAITING_CALLBACK ──callback + confirming query──► final
    UNKNOWN / AWAITING_CALLBACK / stale PUSHING ──status query (backoff)──► SUCCEEDED | DECLINED | FAILED | TIMED_OUT

Money moves only through :func:`order_mark_paid`. An unsigned callback is a hint: it triggers a status query and
changes nothing by itself. A timeout is unknown, never failed, and never a reason to push again.
"""

from kulipa.payments.services._common import (
    ASYNC,
    FINAL_STATE_FOR_OUTCOME,
    PAYMENT_STATUS_FOR_STATE,
    PUSH_RESULT_SLACK,
    QUEUED_STUCK_AFTER,
    RECONCILE_LEASE,
    SYNC,
    c2b_read_timeout,
    callback_grace,
    callbacks_authenticated,
    mask_payload,
    payment_mode,
    push_window,
    reconcile_backoff,
    reconcile_margin,
)
from kulipa.payments.services.attempts import (
    payment_attempt_abandon_queued,
    payment_attempt_claim_push,
    payment_attempt_dispatch,
    payment_attempt_record_push_result,
    payment_attempt_record_push_result_retrying,
    payment_attempt_start,
)
from kulipa.payments.services.callbacks import (
    MAX_CALLBACK_BYTES,
    CallbackReceipt,
    CallbackRejected,
    callback_process,
    callback_receive,
)
from kulipa.payments.services.errors import InvalidMsisdn, PaymentError, PaymentNotAllowed
from kulipa.payments.services.paid import PaidOutcome, PaidResult, order_mark_paid
from kulipa.payments.services.reconcile import CallbackHint, ReconcileOutcome, attempt_reconcile, payments_sweep
from kulipa.payments.services.reversals import (
    order_payment_recheck,
    payment_reversal_reconcile,
    payment_reversal_request,
    payment_reversal_send,
    reversals_due,
)

__all__ = [
    "ASYNC",
    "FINAL_STATE_FOR_OUTCOME",
    "MAX_CALLBACK_BYTES",
    "PAYMENT_STATUS_FOR_STATE",
    "PUSH_RESULT_SLACK",
    "QUEUED_STUCK_AFTER",
    "RECONCILE_LEASE",
    "SYNC",
    "CallbackHint",
    "CallbackReceipt",
    "CallbackRejected",
    "InvalidMsisdn",
    "PaidOutcome",
    "PaidResult",
    "PaymentError",
    "PaymentNotAllowed",
    "ReconcileOutcome",
    "attempt_reconcile",
    "c2b_read_timeout",
    "callback_grace",
    "callback_process",
    "callback_receive",
    "callbacks_authenticated",
    "mask_payload",
    "order_mark_paid",
    "order_payment_recheck",
    "payment_attempt_abandon_queued",
    "payment_attempt_claim_push",
    "payment_attempt_dispatch",
    "payment_attempt_record_push_result",
    "payment_attempt_record_push_result_retrying",
    "payment_attempt_start",
    "payment_mode",
    "payment_reversal_reconcile",
    "payment_reversal_request",
    "payment_reversal_send",
    "payments_sweep",
    "push_window",
    "reconcile_backoff",
    "reconcile_margin",
    "reversals_due",
]
