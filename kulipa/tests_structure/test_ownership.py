"""Structural rules of the source, checked statically (``ast``), that keep money state correct by construction.

1. One owner per field: only the owning module writes an owned field after the row was created.
2. Row locks are taken in one module (kulipa/core/locks.py), always ``FOR NO KEY UPDATE``.
3. No network inside a transaction: every M-Pesa operation of kulipa/payments/gateway.py refuses to run inside
   ``atomic()`` (and a runtime check of it).
4. The services never queue work: nothing under kulipa/payments/services/ imports kulipa.payments.tasks, and only
   kulipa/payments/tasks.py imports huey.

The source is every ``.py`` under kulipa/ outside tests, migrations, tests_structure and e2e. Each checker is a
plain function over source text, unit-tested below on small snippets, so a rule that silently stopped matching
shows up as a failing snippet test rather than a green rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from django.db import transaction

from kulipa.payments import gateway

ROOT = Path(__file__).resolve().parents[2]
KULIPA = ROOT / "kulipa"
EXCLUDED_DIRS = frozenset({"tests", "migrations", "tests_structure", "e2e"})


def source_paths() -> list[str]:
    """Every checked module, as a path relative to the repository root (``kulipa/orders/services.py``)."""
    paths = []
    for path in sorted(KULIPA.rglob("*.py")):
        if EXCLUDED_DIRS & set(path.relative_to(KULIPA).parts[:-1]):
            continue
        paths.append(path.relative_to(ROOT).as_posix())
    return paths


@cache
def source_of(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def test_the_source_is_found() -> None:
    paths = source_paths()
    for expected in (
        "kulipa/orders/services.py",
        "kulipa/inventory/services.py",
        "kulipa/core/locks.py",
        "kulipa/payments/gateway.py",
        "kulipa/payments/services/attempts.py",
        "kulipa/payments/tasks.py",
        "kulipa/settings.py",
    ):
        assert expected in paths
    assert not [p for p in paths if "/tests/" in p or "/migrations/" in p or "/e2e/" in p or "tests_structure" in p]


# --- 1. one owner per field -------------------------------------------------------------------------------------
ORDERS = "kulipa/orders/services.py"
INVENTORY = "kulipa/inventory/services.py"
PAYMENT_TRANSITIONS = "kulipa/payments/transitions.py"
CORE_TRANSITIONS = "kulipa/core/transitions.py"
CATALOG_SERVICES = "kulipa/catalog/services.py"
ATTENTION = "kulipa/payments/services/attention.py"

OWNERS: dict[str, frozenset[str]] = {
    # Order
    "status": frozenset({ORDERS}),
    "payment_status": frozenset({ORDERS}),
    "paid_at": frozenset({ORDERS}),
    "paid_amount": frozenset({ORDERS}),
    "mpesa_transaction_id": frozenset({ORDERS}),
    "attention_reason": frozenset({ORDERS}),
    # Order.expires_at, and StockReservation.expires_at (a reservation's hold follows the order's)
    "expires_at": frozenset({ORDERS, INVENTORY}),
    # PaymentAttempt / Reversal / CallbackDelivery (payments.transitions), StockReservation (inventory), and the
    # generic conditional UPDATE that both call (core.transitions)
    "state": frozenset({PAYMENT_TRANSITIONS, INVENTORY, CORE_TRANSITIONS}),
    # Product
    "stock_on_hand": frozenset({INVENTORY}),
    # AttentionItem: raised and resolved only by payments.services.attention
    "resolved_at": frozenset({ATTENTION}),
    "resolved_by": frozenset({ATTENTION}),
    "resolution": frozenset({ATTENTION}),
}

TABLE_FIELDS: dict[str, str] = {
    "ORDER": "status",
    "ATTEMPT": "state",
    "REVERSAL": "state",
    "DELIVERY": "state",
    "RESERVATION": "state",
}
"""The field each transition table writes (``TransitionTable.field``), by the name it is imported under."""
UNKNOWN_TABLE = "<transition table not recognised>"

ALLOWED_ELSEWHERE: frozenset[tuple[str, str, str, str]] = frozenset(
    {
        # The demo catalogue loader (manage.py load_demo_catalog → demo_catalog_load → product_upsert) creates the
        # demo products and, when run again, resets them to the demo values, stock included: a development tool that
        # puts the shop back to a known state, not a sale or a return. Pinned to this one function (and
        # test_product_upsert_is_only_the_demo_loader keeps it the demo loader's).
        ("stock_on_hand", CATALOG_SERVICES, "product_upsert", "update_or_create"),
    }
)
"""(field, path, enclosing function, how) writes outside the owner that are allowed, each with its reason."""

_TRANSITION_CONTROL_KEYWORDS = frozenset({"pk", "table", "source", "target"})


@dataclass(frozen=True, order=True)
class Write:
    path: str
    line: int
    field: str
    how: str
    """``attribute`` (x.f = …), ``update`` (.update(f=…)), ``update_or_create`` (defaults), ``bulk_update``,
    ``setattr``, ``transition`` (a keyword, or the state field of its table)."""
    function: str
    """The enclosing function (dotted through classes), or ``<module>``."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field} written by {self.how} in {self.function}"


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _constant_keys(node: ast.expr | None) -> Iterator[str]:
    """String keys of a dict literal (``{"f": …}``), or nothing when it is not one."""
    if isinstance(node, ast.Dict):
        for key in node.keys:
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                yield key.value


def _keyword_fields(keywords: Iterable[ast.keyword], *, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    for keyword in keywords:
        if keyword.arg is None:  # **{"f": …}
            yield from _constant_keys(keyword.value)
        elif keyword.arg not in skip:
            yield keyword.arg


def _constant_strings(node: ast.expr | None) -> Iterator[str]:
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        for element in node.elts:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                yield element.value


def _is_model_base(base: ast.expr, models: set[str]) -> bool:
    name = _call_name(base)
    return name == "Model" or name in models


class _Writes(ast.NodeVisitor):
    """Collects every write of a field name in one module (which field of which model is not known statically: the
    owned names are distinct enough, and ``self.x = …`` inside a class that is not a model is the object's own)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.writes: list[Write] = []
        self._scope: list[str] = []
        self._classes: list[bool] = []  # is each enclosing class a Django model?
        self._models: set[str] = set()

    def _add(self, node: ast.AST, field: str, how: str) -> None:
        function = ".".join(self._scope) or "<module>"
        self.writes.append(Write(self.path, getattr(node, "lineno", 0), field, how, function))

    # scopes
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        is_model = any(_is_model_base(base, self._models) for base in node.bases)
        if is_model:
            self._models.add(node.name)
        self._scope.append(node.name)
        self._classes.append(is_model)
        self.generic_visit(node)
        self._classes.pop()
        self._scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._scope.append(node.name)
        self.generic_visit(node)
        self._scope.pop()

    # x.f = …
    def _store(self, target: ast.expr, node: ast.AST) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._store(element, node)
        elif isinstance(target, ast.Starred):
            self._store(target.value, node)
        elif isinstance(target, ast.Attribute):
            own = isinstance(target.value, ast.Name) and target.value.id == "self"
            if own and self._classes and not self._classes[-1]:
                return  # an ordinary object setting its own attribute (an exception's .status, say)
            self._add(node, target.attr, "attribute")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._store(target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._store(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._store(node.target, node)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        self._store(node.target, node)
        self.generic_visit(node)

    def visit_withitem(self, node: ast.withitem) -> None:
        if node.optional_vars is not None:
            self._store(node.optional_vars, node.context_expr)
        self.generic_visit(node)

    # calls
    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node.func)
        if isinstance(node.func, ast.Attribute) and name == "update":
            for field in _keyword_fields(node.keywords):
                self._add(node, field, "update")
        elif isinstance(node.func, ast.Attribute) and name == "update_or_create":
            for keyword in node.keywords:
                if keyword.arg == "defaults":  # written on update too; the lookups and create_defaults only create
                    for field in _constant_keys(keyword.value):
                        self._add(node, field, "update_or_create")
        elif isinstance(node.func, ast.Attribute) and name == "bulk_update":
            fields = node.args[1] if len(node.args) > 1 else None
            for keyword in node.keywords:
                if keyword.arg == "fields":
                    fields = keyword.value
            for field in _constant_strings(fields):
                self._add(node, field, "bulk_update")
        elif name in ("transition", "transition_many"):
            for field in _keyword_fields(node.keywords, skip=_TRANSITION_CONTROL_KEYWORDS):
                self._add(node, field, "transition")
            table = next((k.value for k in node.keywords if k.arg == "table"), None)
            table_name = _call_name(table) if table is not None else None
            self._add(node, TABLE_FIELDS.get(table_name or "", UNKNOWN_TABLE), "transition")
        elif name == "setattr" and len(node.args) >= 2:
            field_node = node.args[1]
            if isinstance(field_node, ast.Constant) and isinstance(field_node.value, str):
                self._add(node, field_node.value, "setattr")
        self.generic_visit(node)


def writes_in(source: str, path: str = "<snippet>") -> list[Write]:
    """Every write of a field name in ``source`` (see :class:`Write`)."""
    visitor = _Writes(path)
    visitor.visit(ast.parse(source, filename=path))
    return sorted(visitor.writes)


def ownership_violations(field: str, writes: Iterable[Write]) -> list[Write]:
    """Writes of ``field`` outside its owners and outside :data:`ALLOWED_ELSEWHERE`."""
    owners = OWNERS[field]
    return [
        w
        for w in writes
        if w.field == field and w.path not in owners and (w.field, w.path, w.function, w.how) not in ALLOWED_ELSEWHERE
    ]


@cache
def all_writes() -> tuple[Write, ...]:
    return tuple(w for path in source_paths() for w in writes_in(source_of(path), path))


def _report(violations: Iterable[object]) -> str:
    return "\n".join(str(v) for v in violations)


@pytest.mark.parametrize("field", sorted(OWNERS))
def test_one_owner_per_field(field: str) -> None:
    violations = ownership_violations(field, all_writes())
    owners = ", ".join(sorted(OWNERS[field]))
    assert not violations, f"{field} is written outside {owners}:\n{_report(violations)}"


def test_every_transition_call_names_a_known_table() -> None:
    unknown = [w for w in all_writes() if w.field == UNKNOWN_TABLE]
    assert not unknown, f"add the table to TABLE_FIELDS:\n{_report(unknown)}"


def test_each_allowance_is_still_used() -> None:
    """An allowance whose write disappeared is removed, so it cannot cover a different write later."""
    used = {(w.field, w.path, w.function, w.how) for w in all_writes()}
    assert used >= ALLOWED_ELSEWHERE


def _callers(function: str) -> set[tuple[str, str]]:
    """(path, enclosing function) of every call of ``function`` by name in the checked source."""
    found: set[tuple[str, str]] = set()
    for path in source_paths():
        tree = ast.parse(source_of(path), filename=path)
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                continue
            body = scope.body if isinstance(scope, ast.Module) else [scope]
            for node in (n for stmt in body for n in ast.walk(stmt)):
                if isinstance(node, ast.Call) and _call_name(node.func) == function:
                    name = "<module>" if isinstance(scope, ast.Module) else scope.name
                    found.add((path, name))
    return found


def test_product_upsert_is_only_the_demo_loader() -> None:
    callers = {caller for caller in _callers("product_upsert") if caller[1] != "<module>"}
    assert callers == {(CATALOG_SERVICES, "demo_catalog_load")}


# The checker itself, on snippets: each way of writing is seen, and reading, filtering and creating are not.
WRITE_SNIPPETS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("attribute", "order.status = 'paid'", [("status", "attribute")]),
    ("chained attribute", "self.order.paid_at = now", [("paid_at", "attribute")]),
    ("unpacking", "a.state, b.expires_at = x, y", [("expires_at", "attribute"), ("state", "attribute")]),
    ("augmented", "p.stock_on_hand -= 1", [("stock_on_hand", "attribute")]),
    ("annotated", "o.attention_reason: str = 'x'", [("attention_reason", "attribute")]),
    ("loop target", "for o.status in xs: pass", [("status", "attribute")]),
    ("update", "Order.objects.filter(pk=1).update(payment_status='paid')", [("payment_status", "update")]),
    (
        "update of a queryset",
        "qs.update(paid_amount=1, updated_at=now)",
        [("paid_amount", "update"), ("updated_at", "update")],
    ),
    ("update **dict", "qs.update(**{'mpesa_transaction_id': t})", [("mpesa_transaction_id", "update")]),
    (
        "update_or_create defaults",
        "Product.objects.update_or_create(slug=s, defaults={'stock_on_hand': 3}, create_defaults={'name': n})",
        [("stock_on_hand", "update_or_create")],
    ),
    (
        "bulk_update",
        "Order.objects.bulk_update(rows, ['status', 'paid_at'])",
        [("paid_at", "bulk_update"), ("status", "bulk_update")],
    ),
    ("bulk_update fields=", "M.objects.bulk_update(rows, fields=('state',))", [("state", "bulk_update")]),
    ("setattr", "setattr(order, 'expires_at', t)", [("expires_at", "setattr")]),
    (
        "transition",
        "transition(Order.objects, pk=1, table=ORDER, source=a, target=b, paid_at=now)",
        [("paid_at", "transition"), ("status", "transition")],
    ),
    (
        "transition_many",
        "core.transition_many(qs, table=RESERVATION, source=a, target=b)",
        [("state", "transition")],
    ),
    (
        "transition, other table",
        "transition(M.objects, pk=1, table=tables.ATTEMPT, source=a, target=b)",
        [("state", "transition")],
    ),
    (
        "transition, unknown table",
        "transition(M.objects, pk=1, table=T, source=a, target=b)",
        [(UNKNOWN_TABLE, "transition")],
    ),
    (
        "a model's own attribute",
        "class Order(models.Model):\n    def f(self):\n        self.status = 'x'",
        [("status", "attribute")],
    ),
    (
        "a model subclass",
        "class Base(models.Model): pass\nclass Order(Base):\n    def f(self):\n        self.paid_at = 1",
        [("paid_at", "attribute")],
    ),
]
NOT_WRITES: list[tuple[str, str]] = [
    ("read", "x = order.status"),
    ("comparison", "if attempt.state == 'queued': pass"),
    ("filter", "Order.objects.filter(status='paid', expires_at__lte=now)"),
    ("create", "Order.objects.create(status='paid', expires_at=now)"),
    ("get_or_create", "Product.objects.get_or_create(slug=s, defaults={'stock_on_hand': 1})"),
    ("update_or_create lookups", "Product.objects.update_or_create(status='x', defaults={'name': n})"),
    (
        "own attribute of a plain object",
        "class Rejected(Exception):\n    def __init__(self, s):\n        self.status = s",
    ),
    ("dynamic setattr", "setattr(order, name, value)"),
    ("a local variable", "status = 'paid'"),
    ("order_transition (the owner's API)", "order_transition(order=o, to='paid', paid_at=now)"),
]


@pytest.mark.parametrize(("source", "expected"), [pytest.param(s, e, id=i) for i, s, e in WRITE_SNIPPETS])
def test_checker_sees_each_way_of_writing(source: str, expected: list[tuple[str, str]]) -> None:
    assert sorted((w.field, w.how) for w in writes_in(source)) == sorted(expected)


@pytest.mark.parametrize("source", [pytest.param(s, id=i) for i, s in NOT_WRITES])
def test_checker_ignores_what_is_not_a_write(source: str) -> None:
    assert [w for w in writes_in(source) if w.field in OWNERS] == []


def test_checker_reports_file_line_and_function() -> None:
    source = "def pay(order):\n    x = 1\n    order.paid_at = now\n"
    violations = ownership_violations("paid_at", writes_in(source, "kulipa/payments/services/paid.py"))
    assert [str(v) for v in violations] == ["kulipa/payments/services/paid.py:3: paid_at written by attribute in pay"]
    # The same write in the owner, or an allowed one elsewhere, is not a violation.
    assert ownership_violations("paid_at", writes_in(source, ORDERS)) == []
    upsert = "def product_upsert():\n    Product.objects.update_or_create(slug=s, defaults={'stock_on_hand': 1})\n"
    assert ownership_violations("stock_on_hand", writes_in(upsert, CATALOG_SERVICES)) == []
    elsewhere = upsert.replace("product_upsert", "restock")
    assert len(ownership_violations("stock_on_hand", writes_in(elsewhere, CATALOG_SERVICES))) == 1


# --- 2. locks in one module -------------------------------------------------------------------------------------
LOCKS = "kulipa/core/locks.py"


def select_for_update_uses(source: str, path: str = "<snippet>") -> list[tuple[int, bool]]:
    """(line, passes ``no_key=True``) for every use of ``select_for_update`` (a call, or the bare attribute)."""
    uses: list[tuple[int, bool]] = []
    called: set[int] = set()
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "select_for_update"
        ):
            no_key = any(
                k.arg == "no_key" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords
            )
            uses.append((node.lineno, no_key))
            called.add(id(node.func))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "select_for_update" and id(node) not in called:
            uses.append((node.lineno, False))
    return sorted(uses)


def test_select_for_update_only_in_the_locks_module() -> None:
    elsewhere = [
        f"{path}:{line}"
        for path in source_paths()
        if path != LOCKS
        for line, _ in select_for_update_uses(source_of(path), path)
    ]
    assert not elsewhere, "row locks are taken through kulipa.core.locks only:\n" + "\n".join(elsewhere)


def test_every_lock_is_no_key_update() -> None:
    uses = select_for_update_uses(source_of(LOCKS), LOCKS)
    assert len(uses) >= 6  # order, order+attempt, attempts, reversal, products, reservations
    weak = [f"{LOCKS}:{line}" for line, no_key in uses if not no_key]
    assert not weak, "every lock passes no_key=True (docs/concurrency.md):\n" + "\n".join(weak)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("Order.objects.select_for_update(no_key=True).get(pk=1)", [(1, True)], id="no_key"),
        pytest.param("Order.objects.select_for_update().get(pk=1)", [(1, False)], id="plain"),
        pytest.param("qs.select_for_update(no_key=False)", [(1, False)], id="no_key_false"),
        pytest.param("qs.select_for_update(nowait=True)", [(1, False)], id="other_option"),
        pytest.param("lock = qs.select_for_update\nlock()", [(1, False)], id="bare_attribute"),
        pytest.param('"""select_for_update() is a no-op on SQLite"""', [], id="docstring"),
    ],
)
def test_lock_checker(source: str, expected: list[tuple[int, bool]]) -> None:
    assert select_for_update_uses(source) == expected


# --- 3. no network inside a transaction -------------------------------------------------------------------------
GATEWAY = "kulipa/payments/gateway.py"
CLIENT_FACTORIES = frozenset({"client", "async_client"})


def _is_client_call(node: ast.AST) -> bool:
    """``client().x(...)`` / ``async_client().x(...)``: a call to M-Pesa."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and _call_name(node.func.value.func) in CLIENT_FACTORIES
    )


def gateway_operations(source: str) -> dict[str, bool]:
    """Public module-level functions that call M-Pesa → whether they call ``refuse_in_transaction()`` as a
    top-level statement before their first call to M-Pesa."""
    operations: dict[str, bool] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
            continue
        network_lines = [n.lineno for n in ast.walk(node) if isinstance(n, ast.Call) and _is_client_call(n)]
        if not network_lines:
            continue
        refusals = [
            stmt.lineno
            for stmt in node.body
            if isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and _call_name(stmt.value.func) == "refuse_in_transaction"
        ]
        operations[node.name] = bool(refusals) and min(refusals) < min(network_lines)
    return operations


def test_gateway_operations_refuse_to_run_in_a_transaction() -> None:
    operations = gateway_operations(source_of(GATEWAY))
    assert {"query_transaction_status", "reversal"} <= set(operations)
    unguarded = sorted(name for name, guarded in operations.items() if not guarded)
    assert not unguarded, f"{GATEWAY}: call refuse_in_transaction() first in {unguarded}"


def test_nothing_reaches_the_clients_around_the_gateway() -> None:
    """Outside gateway.py the sync client is never used directly (that would skip the check). The async client is
    used only by the push engine, whose calls run on its own event loop thread, which never opens a transaction
    (Django refuses synchronous ORM calls in an event loop)."""
    uses = []
    for path in source_paths():
        if path == GATEWAY:
            continue
        tree = ast.parse(source_of(path), filename=path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node.func) in CLIENT_FACTORIES:
                if isinstance(node.func, ast.Attribute) and not (
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "gateway"
                ):
                    continue  # some other object's .client()
                uses.append((path, _call_name(node.func)))
            if isinstance(node, ast.ImportFrom) and node.module == "kulipa.payments.gateway":
                uses.extend((path, a.name) for a in node.names if a.name in CLIENT_FACTORIES)
    assert sorted(set(uses)) == [("kulipa/payments/push_engine.py", "async_client")]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("def op():\n    refuse_in_transaction()\n    return client().query()", {"op": True}, id="guarded"),
        pytest.param("def op():\n    return client().query()", {"op": False}, id="unguarded"),
        pytest.param("def op():\n    x = client().query()\n    refuse_in_transaction()", {"op": False}, id="too_late"),
        pytest.param(
            "def op(a):\n    if a:\n        refuse_in_transaction()\n    return client().query()",
            {"op": False},
            id="conditional",
        ),
        pytest.param("async def op():\n    return await async_client().push()", {"op": False}, id="async_unguarded"),
        pytest.param("def _private():\n    return client().query()", {}, id="private"),
        pytest.param("def factory():\n    return client()", {}, id="not_a_call_to_mpesa"),
    ],
)
def test_gateway_checker(source: str, expected: dict[str, bool]) -> None:
    assert gateway_operations(source) == expected


@pytest.mark.django_db(transaction=True)
def test_query_inside_a_transaction_is_refused_before_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client() -> None:
        raise AssertionError("the client was reached")

    monkeypatch.setattr(gateway, "client", no_client)
    with transaction.atomic(), pytest.raises(gateway.NetworkInTransaction):
        gateway.query_transaction_status(query_reference="KABCDEFGHJKLMNPQ", third_party_reference="QABCDEFGHJKLMNPQ")
    with transaction.atomic(), pytest.raises(gateway.NetworkInTransaction):
        gateway.reversal(transaction_id="ABC123", third_party_reference="RABCDEFGHJKLMNPQ", amount=None)
    # Outside a transaction the check lets the call through (to the client, here the stub above).
    gateway.refuse_in_transaction()
    with pytest.raises(AssertionError, match="the client was reached"):
        gateway.query_transaction_status(query_reference="KABCDEFGHJKLMNPQ", third_party_reference="QABCDEFGHJKLMNPQ")


# --- 4. the services never queue work; huey lives in tasks.py -------------------------------------------------
SERVICES_DIR = "kulipa/payments/services/"
TASKS = "kulipa.payments.tasks"
TASKS_PATH = "kulipa/payments/tasks.py"
HUEY_ALLOWED = frozenset({TASKS_PATH, "kulipa/settings.py"})


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, path: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of everything ``source`` imports, at any depth (inside functions too): ``import
    a.b``, ``from a import b`` (both ``a`` and ``a.b``), relative imports resolved against ``path``, and
    ``importlib.import_module("…")`` / ``__import__("…")`` with a constant name."""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and _call_name(node.func) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_or_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_services_never_import_the_tasks() -> None:
    found = [
        f"{path}:{line}: imports {module}"
        for path in source_paths()
        if path.startswith(SERVICES_DIR)
        for line, module in imported_modules(source_of(path), path)
        if _is_or_under(module, TASKS)
    ]
    assert [p for p in source_paths() if p.startswith(SERVICES_DIR)], "the services package is found"
    assert not found, "the services write rows; kulipa.payments.tasks queues work after commit:\n" + "\n".join(found)


def test_only_the_tasks_module_imports_huey() -> None:
    found = [
        f"{path}:{line}: imports {module}"
        for path in source_paths()
        if path not in HUEY_ALLOWED
        for line, module in imported_modules(source_of(path), path)
        if _is_or_under(module, "huey")
    ]
    assert not found, "\n".join(found)
    assert any(_is_or_under(m, "huey") for _, m in imported_modules(source_of(TASKS_PATH), TASKS_PATH))


IMPORT_SNIPPETS: list[tuple[str, str, bool]] = [
    ("import kulipa.payments.tasks", "kulipa/payments/services/x.py", True),
    ("from kulipa.payments import tasks", "kulipa/payments/services/x.py", True),
    ("from kulipa.payments.tasks import queue_dispatch", "kulipa/payments/services/x.py", True),
    ("def f():\n    from kulipa.payments import tasks", "kulipa/payments/services/x.py", True),
    ("from .. import tasks", "kulipa/payments/services/x.py", True),
    ("from ..tasks import queue_dispatch", "kulipa/payments/services/x.py", True),
    ("from ... import payments", "kulipa/payments/services/x.py", False),
    ("from .. import tasks", "kulipa/payments/services/__init__.py", True),
    ("from . import tasks", "kulipa/payments/services/__init__.py", False),  # kulipa.payments.services.tasks
    ("importlib.import_module('kulipa.payments.tasks')", "kulipa/payments/services/x.py", True),
    ("from kulipa.payments import gateway, conf", "kulipa/payments/services/x.py", False),
    ("import kulipa.payments.tasks_helpers", "kulipa/payments/services/x.py", False),
    ("from .apply import apply_step", "kulipa/payments/services/x.py", False),
]


@pytest.mark.parametrize(
    ("source", "path", "imports_tasks"), [pytest.param(s, p, t, id=f"{s}@{p}") for s, p, t in IMPORT_SNIPPETS]
)
def test_import_checker(source: str, path: str, imports_tasks: bool) -> None:
    assert any(_is_or_under(m, TASKS) for _, m in imported_modules(source, path)) is imports_tasks


@pytest.mark.parametrize(
    ("source", "imports_huey"),
    [
        ("import huey", True),
        ("from huey.contrib.djhuey import db_task", True),
        ("def f():\n    import huey.api", True),
        ("INSTALLED_APPS = ['huey.contrib.djhuey']", False),
        ("import hueyish", False),
    ],
)
def test_huey_import_checker(source: str, imports_huey: bool) -> None:
    modules = imported_modules(source, "kulipa/x.py")
    assert any(_is_or_under(m, "huey") for _, m in modules) is imports_huey
