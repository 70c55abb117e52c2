"""Audiences: named rules over each person's traits, lifetime value, RFM segment and recent events, with
membership kept current as persons change, and every join and leave recorded.

A rule is a small expression (Python's syntax for the expression only, parsed and checked here, never
evaluated as Python) compiled to SQL over one row per person:

    clv > 200 and p_alive >= 0.5
    rfm_segment in ("champions", "loyal") and "store" in channels
    events("Product Viewed", 7) >= 3 and orders_in(30) == 0
    spent(90) > 100 or membership == "gold"

Traits: the profile's columns (``TRAITS``), ``rfm_segment``, and three functions of the recent log, counted
up to the newest event in the log (which, for a live log, is now): ``events(name, days)``,
``orders_in(days)`` and ``spent(days)``. Comparisons ``== != < <= > >=``, ``in`` / ``not in`` a list, a value
``in`` a list trait (``channels``, ``favourite_categories``), ``and``, ``or``, ``not``, parentheses. Values
reach SQL as parameters, never as text. A rule or description that may hold an email address or a phone
number is refused unrepeated (the door's personal-data screen). A rule that does not parse, names an
unknown trait or compares wrongly is refused with the rule, the position and what was expected.

A person who refused the ``analytics`` purpose belongs to no audience. Membership is recomputed whenever
profiles are rebuilt (``refresh_audiences``, called by the flows after every resolution, so as events
arrive on a running server); each change is a row of ``audience_changes`` (joined or left, when), which is
what destinations send.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from omnithread.analytics import ORDER_VALUE_SQL
from omnithread.analytics.cohorts import segment_sql
from omnithread.engine.base import Engine
from omnithread.errors import ConflictError, InvalidRequestError, NotFoundError
from omnithread.privacy.detect import screen_hits
from omnithread.profile import profile_columns

__all__ = [
    "TRAITS",
    "compile_rule",
    "create_audience",
    "delete_audience",
    "list_audiences",
    "audience_members",
    "refresh_audiences",
    "preview",
    "forget_members",
]

# trait -> kind: number, text, list (of text), bool
TRAITS: dict[str, str] = {
    "orders": "number",
    "items": "number",
    "revenue": "number",
    "recency_days": "number",
    "r_score": "number",
    "f_score": "number",
    "m_score": "number",
    "identifiers": "number",
    "membership": "text",
    "channels": "list",
    "favourite_categories": "list",
    "p_alive": "number",
    "expected_orders": "number",
    "expected_order_value": "number",
    "clv": "number",
    "clv_online": "number",
    "clv_store": "number",
    "rfm_segment": "text",
    "consent_personalisation": "bool",
}
_FUNCTIONS = {"events": ("text", "number"), "orders_in": ("number",), "spent": ("number",)}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MAX_RULE = 2000


@dataclass
class Compiled:
    """A rule as SQL: the WHERE condition over ``traits`` (alias t), its parameters, and the windows of the
    recent log it needs (each a join)."""

    where: str
    params: list[Any]
    windows: list[tuple[str, str | None, int]] = field(default_factory=list)  # (kind, event name, days)


class _Compiler:
    def __init__(self, rule: str, available: set[str]):
        self.rule, self.available = rule, available
        self.params: list[Any] = []
        self.windows: list[tuple[str, str | None, int]] = []

    def fail(self, node: ast.AST | None, expected: str) -> InvalidRequestError:
        where = f" at column {node.col_offset + 1}" if node is not None and hasattr(node, "col_offset") else ""
        return InvalidRequestError("rule", self.rule, f"{expected}{where}")

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def constant(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            value = node.operand.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
        raise self.fail(node, "a number, a quoted text or true/false")

    def value(self, node: ast.AST) -> tuple[str, str]:
        """SQL for a trait, a function of the recent log or a constant; with its kind."""
        if isinstance(node, ast.Name):
            if node.id in ("true", "false", "True", "False"):
                return self.param(node.id.lower() == "true"), "bool"
            if node.id not in TRAITS:
                raise self.fail(node, f"a known trait, not {node.id!r} (traits: {', '.join(sorted(TRAITS))})")
            if node.id not in self.available:
                raise self.fail(node, f"{node.id!r} to have been computed (run omnithread clv for lifetime value)")
            return f"t.{node.id}", TRAITS[node.id]
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
                raise self.fail(node, "a function among " + ", ".join(f"{f}()" for f in _FUNCTIONS))
            kinds = _FUNCTIONS[node.func.id]
            if node.keywords or len(node.args) != len(kinds):
                raise self.fail(node, f"{node.func.id}() with {len(kinds)} argument(s): {', '.join(kinds)}")
            args = [self.constant(a) for a in node.args]
            for arg, kind, raw in zip(args, kinds, node.args):
                if (kind == "text") != isinstance(arg, str) or (kind == "number" and isinstance(arg, bool)):
                    raise self.fail(raw, f"{node.func.id}(): a {kind} here")
            days = args[-1]
            if not isinstance(days, int) or not 1 <= days <= 3650:
                raise self.fail(node.args[-1], "a whole number of days from 1 to 3650")
            name = args[0] if node.func.id == "events" else None
            key = (node.func.id, name, days)
            if key not in self.windows:
                self.windows.append(key)
            return f"coalesce(w{self.windows.index(key)}.value, 0)", "number"
        return self.param(self.constant(node)), _kind_of(self.constant(node))

    def condition(self, node: ast.AST) -> str:
        if isinstance(node, ast.BoolOp):
            joiner = " AND " if isinstance(node.op, ast.And) else " OR "
            return "(" + joiner.join(self.condition(v) for v in node.values) + ")"
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return f"(NOT coalesce({self.condition(node.operand)}, false))"
        if isinstance(node, ast.Compare):
            parts = []
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                parts.append(self.compare(left, op, right))
                left = right
            return "(" + " AND ".join(parts) + ")"
        if isinstance(node, ast.Name) and TRAITS.get(node.id) == "bool":
            return f"coalesce({self.value(node)[0]}, false)"
        raise self.fail(node, "a comparison (==, !=, <, <=, >, >=, in, not in) joined by and, or, not")

    def compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> str:
        if isinstance(op, (ast.In, ast.NotIn)):
            negate = "NOT " if isinstance(op, ast.NotIn) else ""
            if isinstance(right, (ast.List, ast.Tuple)):
                sql, kind = self.value(left)
                if not right.elts:
                    raise self.fail(right, "a list with at least one value")
                values = [self.constant(e) for e in right.elts]
                if any(_kind_of(v) != kind for v in values):
                    raise self.fail(right, f"values of the kind of {ast.unparse(left)} ({kind})")
                return f"coalesce({negate}({sql} IN ({', '.join(self.param(v) for v in values)})), false)"
            sql, kind = self.value(right)
            if kind != "list":
                raise self.fail(right, "a list after 'in': (..., ...) or a list trait such as channels")
            item = self.constant(left)
            if not isinstance(item, str):
                raise self.fail(left, "a quoted text before 'in' a list trait")
            return f"coalesce({negate}list_contains({sql}, {self.param(item)}), false)"
        symbols = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
        symbol = symbols.get(type(op))
        if symbol is None:
            raise self.fail(right, "one of ==, !=, <, <=, >, >=, in, not in")
        a, a_kind = self.value(left)
        b, b_kind = self.value(right)
        if a_kind == "list" or b_kind == "list":
            raise self.fail(left, "a list trait tested with 'in' (\"store\" in channels)")
        if a_kind != b_kind:
            raise self.fail(right, f"the same kind on both sides ({a_kind} and {b_kind})")
        if a_kind in ("text", "bool") and symbol not in ("=", "<>"):
            raise self.fail(right, f"== or != for a {a_kind}")
        return f"coalesce({a} {symbol} {b}, false)"


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "text" if isinstance(value, str) else "number"


def _available(engine: Engine) -> set[str]:
    if not engine.has_table("profiles"):
        return set()
    return (set(profile_columns(engine)) | {"rfm_segment"}) & set(TRAITS)


def _no_contact_details(field: str, text: str) -> None:
    """Rules and descriptions are stored and echoed in errors: one that may hold an email address or a phone
    number (the door's own screen) is refused without repeating it."""
    if isinstance(text, str) and screen_hits(text):
        raise InvalidRequestError(
            field, "…", "no email address or phone number: audiences select by traits, not by contact details"
        )


def compile_rule(rule: str, engine: Engine | None = None) -> Compiled:
    """The rule checked and compiled (with ``engine``, against the traits its profiles hold)."""
    if not isinstance(rule, str) or not rule.strip():
        raise InvalidRequestError("rule", rule, 'an expression such as: clv > 200 and "store" in channels')
    _no_contact_details("rule", rule)
    if len(rule) > _MAX_RULE:
        raise InvalidRequestError("rule", rule[:60] + "…", f"at most {_MAX_RULE} characters")
    text = " ".join(rule.split())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        column = f" at column {error.offset}" if error.offset else ""
        raise InvalidRequestError("rule", rule, f"an expression that parses ({error.msg}{column})") from None
    compiler = _Compiler(rule, _available(engine) if engine is not None else set(TRAITS))
    where = compiler.condition(tree.body)
    return Compiled(where, compiler.params, compiler.windows)


def _members_sql(compiled: Compiled) -> tuple[str, list]:
    """The persons a compiled rule selects (refused analytics consent excluded)."""
    joins, params = [], []
    for i, (kind, name, days) in enumerate(compiled.windows):
        since = f"(SELECT max(event_at) FROM events) - INTERVAL {int(days)} DAY"
        if kind == "events":
            measure, condition = "count(*)", "event = ?"
            params.append(name)
        elif kind == "orders_in":
            measure, condition = "count(*)", "event = 'Order Completed'"
        else:
            measure = f"sum({ORDER_VALUE_SQL})"
            condition = "event = 'Order Completed'"
        joins.append(
            f"LEFT JOIN (SELECT person_id, {measure} AS value FROM event_persons WHERE {condition} "
            f"AND person_id IS NOT NULL AND event_at > {since} GROUP BY person_id) w{i} ON w{i}.person_id = t.person_id"
        )
    sql = (
        f"SELECT t.person_id FROM (SELECT *, {segment_sql()} AS rfm_segment FROM profiles) t {' '.join(joins)} "
        f"WHERE coalesce(t.consent_analytics, true) AND {compiled.where} ORDER BY t.person_id"
    )
    return sql, params + compiled.params


def preview(engine: Engine, rule: str, limit: int = 20) -> dict:
    """Who a rule selects now, without saving it: how many, and the first ``limit`` person ids."""
    compiled = compile_rule(rule, engine)
    sql, params = _members_sql(compiled)
    members = [r["person_id"] for r in engine.rows(sql, params)]
    return {"rule": rule, "members": len(members), "sample": members[:limit]}


def _ensure(engine: Engine) -> None:
    engine.execute("""
        CREATE TABLE IF NOT EXISTS audiences (
            name VARCHAR PRIMARY KEY, rule VARCHAR NOT NULL, description VARCHAR,
            created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)""")
    engine.execute(
        "CREATE TABLE IF NOT EXISTS audience_members (audience VARCHAR, person_id VARCHAR, since TIMESTAMPTZ)"
    )
    engine.execute("""
        CREATE TABLE IF NOT EXISTS audience_changes (
            audience VARCHAR, person_id VARCHAR, change VARCHAR, changed_at TIMESTAMPTZ)""")


def create_audience(engine: Engine, name: str, rule: str, description: str = "", replace: bool = False) -> dict:
    """Save an audience (checked first) and compute its members; with ``replace``, change an existing one."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError("name", name, "1 to 63 lower-case letters, digits, - or _")
    _no_contact_details("description", description)
    compile_rule(rule, engine)
    _ensure(engine)
    now = datetime.now(UTC)
    exists = engine.scalar("SELECT count(*) FROM audiences WHERE name = ?", [name])
    if exists and not replace:
        raise ConflictError(f"audience {name!r} exists", "replace it (--replace, or PUT) or choose another name")
    if exists:
        engine.execute("UPDATE audiences SET rule = ?, description = ?, updated_at = ? WHERE name = ?",
                       [rule, description, now, name])  # fmt: skip
    else:
        engine.execute("INSERT INTO audiences VALUES (?, ?, ?, ?, ?)", [name, rule, description, now, now])
    changes = refresh_audiences(engine, only=name)
    return {**describe(engine, name), "changes": changes.get(name, {"joined": 0, "left": 0})}


def delete_audience(engine: Engine, name: str) -> None:
    if not engine.has_table("audiences") or not engine.scalar("SELECT count(*) FROM audiences WHERE name = ?", [name]):
        raise NotFoundError("audience", name)
    engine.execute("DELETE FROM audiences WHERE name = ?", [name])
    engine.execute("DELETE FROM audience_members WHERE audience = ?", [name])
    engine.execute("DELETE FROM audience_changes WHERE audience = ?", [name])


def describe(engine: Engine, name: str) -> dict:
    rows = engine.rows("SELECT * FROM audiences WHERE name = ?", [name]) if engine.has_table("audiences") else []
    if not rows:
        raise NotFoundError("audience", name)
    members = engine.scalar("SELECT count(*) FROM audience_members WHERE audience = ?", [name])
    return {**rows[0], "members": members}


def list_audiences(engine: Engine) -> list[dict]:
    if not engine.has_table("audiences"):
        return []
    return engine.rows("""
        SELECT a.name, a.rule, a.description, a.updated_at, count(m.person_id) AS members
        FROM audiences a LEFT JOIN audience_members m ON m.audience = a.name
        GROUP BY a.name, a.rule, a.description, a.updated_at ORDER BY a.name""")


def audience_members(engine: Engine, name: str, limit: int = 100, offset: int = 0) -> dict:
    """An audience with a page of its members (person id and since when)."""
    found = describe(engine, name)
    found["page"] = engine.rows(
        "SELECT person_id, since FROM audience_members WHERE audience = ? ORDER BY person_id LIMIT ? OFFSET ?",
        [name, int(limit), int(offset)],
    )
    return found


def refresh_audiences(engine: Engine, only: str | None = None) -> dict[str, dict[str, int]]:
    """Recompute every audience's members (or ``only`` one) from the current profiles and the log; record who
    joined and who left. An audience whose rule no longer compiles (a trait gone) keeps its members and is
    reported with the reason."""
    if not engine.has_table("audiences") or not engine.has_table("profiles"):
        return {}
    where, params = ("WHERE name = ?", [only]) if only else ("", [])
    out: dict[str, dict[str, Any]] = {}
    now = datetime.now(UTC)
    for audience in engine.rows(f"SELECT name, rule FROM audiences {where} ORDER BY name", params):
        name = audience["name"]
        try:
            sql, args = _members_sql(compile_rule(audience["rule"], engine))
        except InvalidRequestError as error:
            out[name] = {"joined": 0, "left": 0, "error": str(error)}
            continue
        now_in = {r["person_id"] for r in engine.rows(sql, args)}
        before = {
            r["person_id"] for r in engine.rows("SELECT person_id FROM audience_members WHERE audience = ?", [name])
        }
        joined, left = sorted(now_in - before), sorted(before - now_in)
        with engine.transaction():
            if left:
                engine.register("_left", pa.table({"person_id": pa.array(left, pa.string())}))
                try:
                    engine.execute(
                        "DELETE FROM audience_members "
                        "WHERE audience = ? AND person_id IN (SELECT person_id FROM _left)",
                        [name],
                    )
                finally:
                    engine.unregister("_left")
            rows = [(p, "joined") for p in joined] + [(p, "left") for p in left]
            if joined:
                engine.insert_rows(
                    "audience_members",
                    pa.table(
                        {
                            "audience": pa.array([name] * len(joined), pa.string()),
                            "person_id": pa.array(joined, pa.string()),
                            "since": pa.array([now] * len(joined), pa.timestamp("us", tz="UTC")),
                        }
                    ),
                )
            if rows:
                engine.insert_rows(
                    "audience_changes",
                    pa.table(
                        {
                            "audience": pa.array([name] * len(rows), pa.string()),
                            "person_id": pa.array([p for p, _ in rows], pa.string()),
                            "change": pa.array([c for _, c in rows], pa.string()),
                            "changed_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
                        }
                    ),
                )
        out[name] = {"joined": len(joined), "left": len(left)}
    return out


def forget_members(engine: Engine, person_ids: set[str]) -> int:
    """An erased person leaves every audience and its change history; how many rows went."""
    if not person_ids or not engine.has_table("audience_members"):
        return 0
    marks = ", ".join("?" * len(person_ids))
    ids = sorted(person_ids)
    gone = engine.delete_where("audience_members", f"person_id IN ({marks})", ids)
    return gone + engine.delete_where("audience_changes", f"person_id IN ({marks})", ids)
