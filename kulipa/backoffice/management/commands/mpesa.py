"""``manage.py mpesa`` — the operators' M-Pesa tool on the server (English output).

    manage.py mpesa status <reference> [--query] [--last N]
    manage.py mpesa reverse <reference> [--amount 50.00] --reason "..." [--restock | --no-restock]
    manage.py mpesa reconcile [--since 2026-11-30]

``<reference>`` is a payment's ThirdPartyReference, an order's short reference (K0000042), an M-Pesa transaction
id, or a reversal's reference. Unlike the web, the command line may wait for M-Pesa: ``status --query`` asks it now
and ``reverse`` sends the reversal now. Whoever acts names the staff member they act as, ``--as EMAIL`` (or
``KULIPA_OPERATOR``): that user's permissions are checked as on the web (``recheck_payment`` for ``status --query``,
``reverse_payment`` for ``reverse``) and the audit log says "EMAIL (cli:<os user>)". Exits non-zero (CommandError)
on an unknown reference or operator, a missing permission, a payment that cannot be reversed, or M-Pesa refusing.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections import Counter
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone, translation

from kulipa.accounts.models import User
from kulipa.backoffice import selectors
from kulipa.backoffice import services as backoffice
from kulipa.backoffice.selectors import MAPUTO, Found
from kulipa.orders.models import Order
from kulipa.payments import services as payments
from kulipa.payments import tasks
from kulipa.payments.decisions import TAILED
from kulipa.payments.models import PaymentAttempt, Reversal
from mpesa import mask_msisdn

State = PaymentAttempt.State
R = Reversal.State


def acting(user: User) -> str:
    """Who acts, for the audit log: ``EMAIL (cli:<os user>)``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        name = os.environ.get("USER", "") or "unknown"
    return f"{user.email} (cli:{name})"


def staff_member(email: str | None) -> User:
    """The active staff user the operator acts as (``--as`` or ``KULIPA_OPERATOR``); CommandError otherwise."""
    email = (email or os.environ.get("KULIPA_OPERATOR", "")).strip()
    if not email:
        raise CommandError("name the staff member you act as: --as EMAIL (or KULIPA_OPERATOR=EMAIL)")
    user = User.objects.filter(email__iexact=email, is_active=True, is_staff=True).first()
    if user is None:
        raise CommandError(f"no active staff member {email!r}")
    return user


def _when(at: datetime | None) -> str:
    return timezone.localtime(at, MAPUTO).strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"


class Command(BaseCommand):
    help = "Look up, query, reverse and reconcile M-Pesa payments from the server (see the module docstring)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{status,reverse,reconcile}")
        status = sub.add_parser("status", help="show an order's payments and their latest history")
        status.add_argument("reference", help="ThirdPartyReference, order reference (K0000042) or transaction id")
        status.add_argument("--query", action="store_true", help="ask M-Pesa now (forced status query)")
        status.add_argument("--last", type=int, default=10, help="how many history entries to show (default 10)")
        status.add_argument("--as", dest="operator", default=None, help="staff e-mail to act as (with --query)")
        reverse = sub.add_parser("reverse", help="give a payment back through the M-Pesa API, now")
        reverse.add_argument("reference", help="the payment's ThirdPartyReference or transaction id, or its order")
        reverse.add_argument("--amount", default=None, help="meticais, e.g. 50.00 (default: all that is left)")
        reverse.add_argument("--reason", required=True, help="why (kept in the audit log)")
        reverse.add_argument(
            "--as", dest="operator", default=None, help="staff e-mail to act as (needs the permission)"
        )
        reverse.add_argument(
            "--restock",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="return the sold units to stock (default: yes for the whole payment, no for a part)",
        )
        reconcile = sub.add_parser("reconcile", help="run the repair sweep once and ask M-Pesa about open payments")
        reconcile.add_argument("--since", default=None, help="YYYY-MM-DD, Maputo (default: two days ago)")

    def handle(self, *args: Any, **options: Any) -> None:
        command = options["subcommand"]
        if command == "status":
            self.status(
                options["reference"], query=options["query"], last=options["last"], operator=options["operator"]
            )
        elif command == "reverse":
            self.reverse(
                options["reference"],
                amount=options["amount"],
                reason=options["reason"],
                restock=options["restock"],
                operator=options["operator"],
            )
        else:
            self.reconcile(since=options["since"])

    # --- helpers ------------------------------------------------------------------------------------------------
    def out(self, line: str = "") -> None:
        self.stdout.write(line)

    def find(self, reference: str) -> Found:
        found = selectors.find_reference(reference=reference)
        if found is None:
            raise CommandError(f"unknown reference {reference!r}: no payment, order or reversal has it")
        return found

    def show_order(self, order: Order, *, last: int) -> None:
        order.refresh_from_db()
        with translation.override("en"):
            self.out(
                f"Order {order.short_reference}  status={order.status}  payment={order.payment_status} "
                f"({selectors.payment_status_label(order)})  total={order.total} MZN  created={_when(order.created_at)}"
                f"  paid={_when(order.paid_at)}"
            )
            self.out("Payments:")
            for attempt in order.payment_attempts.order_by("id"):
                self.out(
                    f"  {attempt.third_party_reference}  {attempt.state:<18} {attempt.result_code or '-':<8} "
                    f"amount={attempt.amount}  tx={attempt.transaction_id or '-'}  "
                    f"number={mask_msisdn(attempt.msisdn)}  created={_when(attempt.created_at)}"
                    + ("  (pays the order)" if attempt.pays_order else "")
                    + (
                        f"  reversible={selectors.reversible_amount(attempt=attempt)}"
                        + ("" if selectors.can_reverse_by_api(attempt=attempt) else " (portal only: no transaction id)")
                        if attempt.state == State.SUCCEEDED
                        else ""
                    )
                )
            reversals = Reversal.objects.filter(attempt__order_id=order.pk).order_by("id")
            if reversals:
                self.out("Reversals:")
                for reversal in reversals:
                    self.out(
                        f"  {reversal.reference}  {reversal.state:<10} amount={reversal.amount}  "
                        f"{'portal' if reversal.external else 'api'}  by={reversal.requested_by or '-'}  "
                        f"reason={reversal.reason or '-'}"
                    )
            timeline = selectors.order_timeline(order=order)
            if last > 0 and timeline:
                self.out(f"Last {min(last, len(timeline))} of {len(timeline)} history entries:")
                for entry in timeline[-last:]:
                    summary = next(iter(entry.detail.values()), "") if entry.kind == "event" else ""
                    self.out(f"  {_when(entry.at)}  [{entry.kind}] {entry.title}" + (f": {summary}" if summary else ""))

    # --- status -------------------------------------------------------------------------------------------------
    def status(self, reference: str, *, query: bool, last: int, operator: str | None) -> None:
        found = self.find(reference)
        if query:
            user = staff_member(operator)
            attempt_id = found.attempt.pk if found.attempt is not None else None
            if attempt_id is None:
                attempt_id = payments.order_payment_recheck(order=found.order)
            if attempt_id is None:
                raise CommandError(f"order {found.order.short_reference} has no payment sent to M-Pesa to ask about")
            try:
                outcome = backoffice.staff_recheck_now(user=user, attempt_id=attempt_id, actor_name=acting(user))
            except PermissionDenied:
                raise CommandError(f"{user.email} may not ask M-Pesa about payments (recheck_payment)") from None
            except payments.PaymentError as exc:
                raise CommandError(f"status query failed: {exc}") from exc
            attempt = PaymentAttempt.objects.get(pk=attempt_id)
            self.out(f"Queried M-Pesa about {attempt.third_party_reference}: {outcome.value}; now {attempt.state}")
            answer = (
                attempt.events.filter(kind="status_query").order_by("-id").values_list("summary", flat=True).first()
            )
            if answer and outcome is not payments.ReconcileOutcome.ALREADY_FINAL:
                self.out(f"  M-Pesa said: {answer}")
            self.out()
        self.show_order(found.order, last=last)

    # --- reverse ------------------------------------------------------------------------------------------------
    def reverse(
        self, reference: str, *, amount: str | None, reason: str, restock: bool | None, operator: str | None
    ) -> None:
        user = staff_member(operator)
        found = self.find(reference)
        attempt = found.attempt or self.paying_attempt(found.order)
        value: Decimal | None = None
        if amount is not None:
            try:
                value = Decimal(amount)
            except InvalidOperation:
                raise CommandError(f"--amount {amount!r} is not an amount in meticais (e.g. 50.00)") from None
        try:
            reversal = backoffice.staff_reverse(
                user=user,
                attempt_id=attempt.pk,
                amount=value,
                reason=reason,
                restock=restock,
                actor_name=acting(user),
                queue=False,  # sent below, now
            )
        except PermissionDenied:
            raise CommandError(f"{user.email} may not reverse payments (reverse_payment)") from None
        except (payments.PaymentError, ValueError) as exc:
            raise CommandError(f"not reversible: {attempt.third_party_reference}: {exc}") from exc
        if reversal.state == R.REQUESTED:
            payments.payment_reversal_send(reversal_id=reversal.pk)
        else:
            self.out(f"A reversal of this payment was already open: {reversal.reference} ({reversal.state})")
        reversal.refresh_from_db()
        self.out(
            f"Reversal {reversal.reference} of {attempt.third_party_reference} (tx {attempt.transaction_id}): "
            f"{reversal.amount} MZN, restock={'yes' if reversal.restock else 'no'} -> {reversal.state}"
            + (f" {reversal.result_code}" if reversal.result_code else "")
            + (f" {reversal.result_description}" if reversal.result_description else "")
        )
        if reversal.state == R.FAILED:
            raise CommandError(
                f"M-Pesa refused reversal {reversal.reference}: {reversal.result_code} {reversal.result_description}"
            )
        if reversal.state != R.SUCCEEDED:
            raise CommandError(
                f"reversal {reversal.reference} is {reversal.state}: M-Pesa's answer is not known yet. The sweep asks "
                f"M-Pesa by its reference (never resends); check with: manage.py mpesa status {reversal.reference}"
            )
        self.out()
        self.show_order(found.order, last=3)

    def paying_attempt(self, order: Order) -> PaymentAttempt:
        """The order's one confirmed payment; with several (a duplicate), the operator must name one."""
        paid = list(order.payment_attempts.filter(state=State.SUCCEEDED).order_by("id"))
        if len(paid) == 1:
            return paid[0]
        if not paid:
            raise CommandError(f"not reversible: order {order.short_reference} has no confirmed payment")
        names = ", ".join(f"{a.third_party_reference}{' (pays the order)' if a.pays_order else ''}" for a in paid)
        raise CommandError(
            f"order {order.short_reference} has {len(paid)} confirmed payments ({names}): name one by its reference"
        )

    # --- reconcile ----------------------------------------------------------------------------------------------
    def reconcile(self, *, since: str | None) -> None:
        try:
            day = date.fromisoformat(since) if since else timezone.localtime(timezone.now(), MAPUTO).date()
        except ValueError:
            raise CommandError(f"--since {since!r} is not a date (YYYY-MM-DD)") from None
        if not since:
            day -= timedelta(days=2)
        counts = tasks.sweep()
        self.out("Sweep: " + ", ".join(f"{name}={count}" for name, count in counts.items()))
        start = datetime.combine(day, time.min, tzinfo=MAPUTO)
        askable = [s for s in (*PaymentAttempt.IN_FLIGHT, *TAILED) if s != State.QUEUED]
        attempts = list(
            PaymentAttempt.objects.filter(created_at__gte=start, state__in=askable)
            .order_by("id")
            .values_list("id", "third_party_reference", "state")
        )
        self.out(f"Asking M-Pesa about {len(attempts)} open payment(s) created since {day.isoformat()} (Maputo):")
        outcomes: Counter[str] = Counter()
        for attempt_id, tpr, before in attempts:
            try:
                outcome = payments.attempt_reconcile(attempt_id=attempt_id, force=True, source="cli_reconcile").value
            except Exception as exc:  # one payment's trouble must not stop the others; reported below
                outcome = "error"
                self.stderr.write(f"  {tpr}: {exc!r}")
            after = PaymentAttempt.objects.values_list("state", flat=True).get(pk=attempt_id)
            outcomes[outcome] += 1
            self.out(f"  {tpr}  {before} -> {after}  ({outcome})")
        self.out("Queried: " + (", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())) or "none"))
        if outcomes["error"]:
            raise CommandError(f"{outcomes['error']} status quer(ies) failed; see above")
