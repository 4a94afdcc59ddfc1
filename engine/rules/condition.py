"""The condition language: parse expression text into a small typed tree, never run it.

Text goes through `ast.parse(text, mode="eval")`; only the node types handled below are accepted,
so a rule file can express comparisons, membership, `is known`, boolean logic and `+ - *` on numbers
and nothing else. The resulting tree is what both evaluators compile.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from engine.dictionary import FieldSpec, FieldType
from engine.errors import RuleFileError

Scalar = bool | int | float | str

# --- arithmetic expressions -------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    """A case field read by a condition."""

    name: str


@dataclass(frozen=True)
class Const:
    """A literal value."""

    value: Scalar


@dataclass(frozen=True)
class Arith:
    """`left op right` with op one of + - * (numbers only)."""

    op: str
    left: Expr
    right: Expr


Expr = FieldRef | Const | Arith

# --- conditions -------------------------------------------------------------------------------


class Node:
    """Base of the condition nodes: their compiled forms (engine.rules.logic) are kept in the
    node's own __dict__ under names starting with "_"; a pickled node leaves them out."""

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Compare(Node):
    """`field op rhs`; arithmetic comparisons are normalised so one field stands on the left."""

    op: str
    field: str
    rhs: Expr


@dataclass(frozen=True)
class Member(Node):
    """`field in [values]` (or `not in` when negated)."""

    field: str
    values: tuple[Scalar, ...]
    negated: bool = False


@dataclass(frozen=True)
class Known(Node):
    """`field is known` (or `is unknown` when negated). Never unknown itself."""

    field: str
    negated: bool = False


@dataclass(frozen=True)
class And(Node):
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Or(Node):
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Not(Node):
    item: Cond


@dataclass(frozen=True)
class Truth(Node):
    """The constant `true` or `false` used as a whole condition."""

    value: bool


Cond = Compare | Member | Known | And | Or | Not | Truth

NEGATED_OP = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
FLIPPED_OP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_COMPARE_OPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_ARITH_OPS: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_CONSTANT_NAMES: dict[str, bool] = {"true": True, "false": False, "True": True, "False": False}
MAX_CONDITION_LENGTH = 4000
# limits checked on the syntax tree before anything walks it recursively: the bundled rules
# reach depth 7, 14 terms and lists of 4 values
MAX_DEPTH = 32  # nested operators (not, and/or, + - *, comparisons)
MAX_TERMS = 256  # field names and constants
MAX_LIST_VALUES = 128  # values after `in`; a longer list is a range (x >= a and x <= b)


class _Invalid(Exception):
    """Raised inside the parser; turned into a RuleFileError with the file location."""


def parse_condition(
    text: str,
    fields: Mapping[str, FieldSpec],
    *,
    path: str | None = None,
    line: int | None = None,
    key: str | None = None,
) -> Cond:
    """Parse and type-check condition text against the given fields.

    Raises RuleFileError (never any other exception) for anything outside the whitelist.
    """
    try:
        if not isinstance(text, str) or not text.strip():
            raise _Invalid("expected a condition (a non-empty string)")
        if len(text) > MAX_CONDITION_LENGTH:
            raise _Invalid(f"condition is longer than {MAX_CONDITION_LENGTH} characters")
        try:
            tree = ast.parse(" ".join(text.split()), mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
            raise _Invalid(f"cannot parse condition {_quoted(text)}: {detail}") from None
        _check_size(tree, "condition")
        try:
            return _Parser(fields).condition(tree.body)
        except RecursionError:
            raise _Invalid("condition is nested too deeply") from None
    except _Invalid as exc:
        raise RuleFileError(str(exc), path=path, line=line, key=key) from None


def parse_expression(
    text: str,
    fields: Mapping[str, FieldSpec],
    *,
    path: str | None = None,
    line: int | None = None,
    key: str | None = None,
) -> Expr:
    """Parse numeric arithmetic text (a derived attribute's expression) with the same whitelist."""
    try:
        if not isinstance(text, str) or not text.strip():
            raise _Invalid("expected an expression (a non-empty string)")
        if len(text) > MAX_CONDITION_LENGTH:
            raise _Invalid(f"expression is longer than {MAX_CONDITION_LENGTH} characters")
        try:
            tree = ast.parse(" ".join(text.split()), mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
            raise _Invalid(f"cannot parse expression {_quoted(text)}: {detail}") from None
        _check_size(tree, "expression")
        parser = _Parser(fields)
        try:
            expr = parser.expr(tree.body)
        except RecursionError:
            raise _Invalid("expression is nested too deeply") from None
        parser.check_numeric(expr)
        return expr
    except _Invalid as exc:
        raise RuleFileError(str(exc), path=path, line=line, key=key) from None


def _quoted(text: str) -> str:
    """Condition text for a message: one line, at most 80 characters."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= 80 else flat[:77] + "...")


_TERM_NODES = (ast.Name, ast.Constant)
_LIST_NODES = (ast.List, ast.Tuple, ast.Set)
_LEVELLESS_NODES = (ast.Expression, ast.expr_context)


def _check_size(tree: ast.AST, what: str) -> None:
    """Refuse trees deeper, wider or with longer lists than the limits, before any recursion.

    Walked with an explicit stack: a recursive walk is what these limits protect. The children
    are those of ast.iter_child_nodes, pushed in its order, read inline: every rule's condition
    passes here at each start, and the generator was half the cost of parsing one.
    """
    terms = 0
    pending: list[tuple[ast.AST, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise _Invalid(f"{what} is nested more than {MAX_DEPTH} levels deep; simplify it")
        if isinstance(node, _TERM_NODES):
            terms += 1
            if terms > MAX_TERMS:
                raise _Invalid(f"{what} has more than {MAX_TERMS} terms; split it")
        elif isinstance(node, _LIST_NODES) and len(node.elts) > MAX_LIST_VALUES:
            raise _Invalid(
                f"a list of {len(node.elts)} values; at most {MAX_LIST_VALUES} "
                "(for numbers, use a range: x >= a and x <= b)"
            )
        # operators count as levels; their context objects (Load, Add...) are not nodes to walk
        below = depth if isinstance(node, _LEVELLESS_NODES) else depth + 1
        for name in node._fields:
            child = getattr(node, name, None)
            if isinstance(child, ast.AST):
                pending.append((child, below))
            elif isinstance(child, list):
                pending.extend((item, below) for item in child if isinstance(item, ast.AST))


class _Parser:
    def __init__(self, fields: Mapping[str, FieldSpec]) -> None:
        self.fields = fields

    # conditions ------------------------------------------------------------------------------

    def condition(self, node: ast.expr) -> Cond:
        if isinstance(node, ast.BoolOp):
            items = tuple(self.condition(v) for v in node.values)
            return And(items) if isinstance(node.op, ast.And) else Or(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.condition(node.operand))
        if isinstance(node, ast.Compare):
            return self.comparison(node)
        if isinstance(node, ast.Call):
            return self.known_call(node)
        if isinstance(node, ast.Name):
            if node.id in _CONSTANT_NAMES:
                return Truth(_CONSTANT_NAMES[node.id])
            spec = self.field(node.id)
            if spec.type is not FieldType.boolean:
                raise _Invalid(
                    f"'{node.id}' is a {spec.type} field, not a condition; compare it to a value"
                )
            return Compare("==", node.id, Const(True))
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return Truth(node.value)
        raise _Invalid(f"{_describe(node)} is not a condition")

    def known_call(self, node: ast.Call) -> Known:
        if not (isinstance(node.func, ast.Name) and node.func.id in ("known", "unknown")):
            name = node.func.id if isinstance(node.func, ast.Name) else "..."
            raise _Invalid(f"function calls are not allowed ({name}(...)); only known(FIELD)")
        if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
            raise _Invalid(f"{node.func.id}() takes exactly one field name")
        self.field(node.args[0].id)
        return Known(node.args[0].id, negated=node.func.id == "unknown")

    def comparison(self, node: ast.Compare) -> Cond:
        parts: list[Cond] = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(self.single_comparison(left, op, right))
            left = right
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def single_comparison(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> Cond:
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(left, ast.Name) and isinstance(right, ast.Name)):
                raise _Invalid("'is' is only allowed as 'FIELD is known' or 'FIELD is unknown'")
            if right.id not in ("known", "unknown"):
                raise _Invalid(f"expected 'is known' or 'is unknown', got 'is {right.id}'")
            self.field(left.id)
            negated = (right.id == "unknown") != isinstance(op, ast.IsNot)
            return Known(left.id, negated=negated)
        if isinstance(op, ast.In | ast.NotIn):
            return self.membership(left, right, negated=isinstance(op, ast.NotIn))
        op_text = _COMPARE_OPS.get(type(op))
        if op_text is None:
            raise _Invalid(f"operator {type(op).__name__} is not allowed")
        lhs, rhs = self.expr(left), self.expr(right)
        return self.typed_comparison(op_text, lhs, rhs)

    def membership(self, left: ast.expr, right: ast.expr, *, negated: bool) -> Member:
        if not isinstance(left, ast.Name):
            raise _Invalid("the left side of 'in' must be a field name")
        spec = self.field(left.id)
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            raise _Invalid('the right side of \'in\' must be a list of values, e.g. ["a", "b"]')
        if not right.elts:
            raise _Invalid("the list after 'in' is empty")
        values = tuple(self.constant(e).value for e in right.elts)
        for value in values:
            self.check_value(spec, value)
        if spec.type is FieldType.boolean:
            raise _Invalid(f"use == or a bare field for the boolean field '{spec.name}', not 'in'")
        return Member(spec.name, tuple(dict.fromkeys(values)), negated)

    def typed_comparison(self, op: str, lhs: Expr, rhs: Expr) -> Compare:
        if isinstance(lhs, Const) and isinstance(rhs, FieldRef):
            lhs, rhs, op = rhs, lhs, FLIPPED_OP[op]
        if isinstance(lhs, FieldRef):
            spec = self.fields[lhs.name]
            if spec.type in (FieldType.enum, FieldType.boolean, FieldType.string):
                if not isinstance(rhs, Const):
                    raise _Invalid(
                        f"the {spec.type} field '{spec.name}' can only be compared with a value"
                    )
                if op not in ("==", "!="):
                    raise _Invalid(
                        f"'{op}' cannot order the {spec.type} field '{spec.name}'; use == or in"
                    )
                self.check_value(spec, rhs.value)
                return Compare(op, spec.name, rhs)
        self.check_numeric(lhs)
        self.check_numeric(rhs)
        return _normalise(op, lhs, rhs)

    # expressions -----------------------------------------------------------------------------

    def expr(self, node: ast.expr) -> Expr:
        if isinstance(node, ast.Name):
            if node.id in _CONSTANT_NAMES:
                return Const(_CONSTANT_NAMES[node.id])
            return FieldRef(self.field(node.id).name)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.expr(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(operand, Const) and _is_number(operand.value):
                return Const(-operand.value)  # type: ignore[operator]  # checked numeric above
            return arith("-", Const(0), operand)
        if isinstance(node, ast.BinOp):
            op = _ARITH_OPS.get(type(node.op))
            if op is None:
                hint = " (division is not allowed)" if isinstance(node.op, ast.Div) else ""
                raise _Invalid(f"operator {type(node.op).__name__} is not allowed{hint}")
            return arith(op, self.expr(node.left), self.expr(node.right))
        raise _Invalid(f"{_describe(node)} is not allowed in a condition")

    def constant(self, node: ast.expr) -> Const:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.constant(node.operand)
            if not _is_number(inner.value):
                raise _Invalid("'-' applies to numbers only")
            return Const(-inner.value)  # type: ignore[operator]  # checked numeric above
        if isinstance(node, ast.Name) and node.id in _CONSTANT_NAMES:
            return Const(_CONSTANT_NAMES[node.id])
        if isinstance(node, ast.Constant) and isinstance(node.value, bool | int | float | str):
            if isinstance(node.value, float) and node.value != node.value * 1:  # NaN
                raise _Invalid("NaN is not a value")
            if isinstance(node.value, float) and abs(node.value) == float("inf"):
                raise _Invalid("infinity is not a value")
            return Const(node.value)
        raise _Invalid(f"{_describe(node)} is not a constant value")

    # checks ----------------------------------------------------------------------------------

    def field(self, name: str) -> FieldSpec:
        if name == "case_id":  # it says which case, never what the case is
            raise _Invalid("case_id only names a case; a condition cannot read it")
        spec = self.fields.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(self.fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise _Invalid(f"unknown field '{name}'{hint}")
        return spec

    def check_value(self, spec: FieldSpec, value: Scalar) -> None:
        if spec.type is FieldType.enum:
            if not isinstance(value, str):
                raise _Invalid(f"'{spec.name}' is an enum; {value!r} is not one of its values")
            if value not in spec.values:
                close = difflib.get_close_matches(value, list(spec.values), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise _Invalid(f"'{value}' is not a value of '{spec.name}'{hint}")
        elif spec.type is FieldType.boolean:
            if not isinstance(value, bool):
                raise _Invalid(f"'{spec.name}' is boolean; compare it with true or false")
        elif spec.type is FieldType.string:
            if not isinstance(value, str):
                raise _Invalid(f"'{spec.name}' is a string; {value!r} is not a string")
        elif not _is_number(value):
            raise _Invalid(f"'{spec.name}' is a number; it cannot be compared with {value!r}")

    def check_numeric(self, expr: Expr) -> None:
        if isinstance(expr, Const):
            if not _is_number(expr.value):
                raise _Invalid(f"{expr.value!r} is not a number")
        elif isinstance(expr, FieldRef):
            spec = self.fields[expr.name]
            if not spec.is_numeric:
                raise _Invalid(f"'{expr.name}' is a {spec.type} field; arithmetic needs numbers")
        else:
            self.check_numeric(expr.left)
            self.check_numeric(expr.right)


def arith(op: str, left: Expr, right: Expr) -> Expr:
    """`left op right`, folded to a constant when both sides are numbers.

    durable-rules treats an expression that reads no field as a join and never matches it, so
    `sva_mm > 50 + 45` must reach it as `sva_mm > 95` (found in review).
    """
    numbers = isinstance(left, Const) and isinstance(right, Const)
    if numbers and _is_number(left.value) and _is_number(right.value):  # type: ignore[union-attr]
        value = ARITH[op](left.value, right.value)  # type: ignore[arg-type, union-attr]
        if value != value or abs(value) == float("inf"):
            raise _Invalid("the arithmetic on constants overflows")
        return Const(value)
    return Arith(op, left, right)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return f"a call to {node.func.id}()"
    return {
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripting",
        ast.Lambda: "lambda",
        ast.Call: "a function call",
    }.get(type(node), f"'{type(node).__name__}'")


def _normalise(op: str, lhs: Expr, rhs: Expr) -> Compare:
    """Rewrite `lhs op rhs` as `field op expression` (durable-rules needs a field on the left)."""
    if isinstance(lhs, FieldRef):
        return Compare(op, lhs.name, rhs)
    if isinstance(rhs, FieldRef):
        return Compare(FLIPPED_OP[op], rhs.name, lhs)
    terms = [(sign, term) for sign, term in _terms(lhs, 1)] + [
        (-sign, term) for sign, term in _terms(rhs, 1)
    ]
    for index, (sign, term) in enumerate(terms):
        if isinstance(term, FieldRef):
            rest = terms[:index] + terms[index + 1 :]
            # sign*field + rest op 0 => field op -rest (sign +1), field flip(op) rest (sign -1)
            moved = [(-s if sign == 1 else s, t) for s, t in rest]
            new_op = op if sign == 1 else FLIPPED_OP[op]
            return Compare(new_op, term.name, _sum(moved))
    raise _Invalid(
        "cannot compile this comparison: put one field alone on one side "
        "(e.g. 'pelvic_incidence_deg > lumbar_lordosis_deg + 20')"
    )


def _terms(expr: Expr, sign: int) -> Iterator[tuple[int, Expr]]:
    if isinstance(expr, Arith) and expr.op in ("+", "-"):
        yield from _terms(expr.left, sign)
        yield from _terms(expr.right, sign if expr.op == "+" else -sign)
    else:
        yield sign, expr


def _sum(terms: list[tuple[int, Expr]]) -> Expr:
    if not terms:
        return Const(0)
    positive = [t for s, t in terms if s == 1]
    negative = [t for s, t in terms if s == -1]
    acc: Expr = positive[0] if positive else Const(0)
    for term in positive[1:]:
        acc = arith("+", acc, term)
    for term in negative:
        acc = arith("-", acc, term)
    return acc


# --- helpers used by every backend ------------------------------------------------------------


def fields_of(node: Cond | Expr) -> set[str]:
    """Every field a condition or expression reads."""
    if isinstance(node, FieldRef):
        return {node.name}
    if isinstance(node, Const | Truth):
        return set()
    if isinstance(node, Arith):
        return fields_of(node.left) | fields_of(node.right)
    if isinstance(node, Compare):
        return {node.field} | fields_of(node.rhs)
    if isinstance(node, Member | Known):
        return {node.field}
    if isinstance(node, Not):
        return fields_of(node.item)
    return set().union(*(fields_of(i) for i in node.items))


def evaluate_expr(expr: Expr, values: Mapping[str, Scalar]) -> Scalar | None:
    """Value of an arithmetic expression, or None if a field it reads is unknown."""
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, FieldRef):
        return values.get(expr.name)
    left, right = evaluate_expr(expr.left, values), evaluate_expr(expr.right, values)
    if left is None or right is None:
        return None
    return ARITH[expr.op](left, right)  # type: ignore[arg-type]  # numbers, checked at load


ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
COMPARE: dict[str, Callable[[Scalar, Scalar], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,  # type: ignore[operator]  # numbers only, checked at load
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
}


def to_text(node: Cond | Expr) -> str:
    """Canonical text of a condition; parsing it gives the same tree back."""
    if isinstance(node, FieldRef):
        return node.name
    if isinstance(node, Const):
        if isinstance(node.value, bool):
            return "true" if node.value else "false"
        if isinstance(node.value, str):
            return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(node.value)
    if isinstance(node, Arith):
        right = to_text(node.right)
        if isinstance(node.right, Arith) or (
            isinstance(node.right, Const) and _is_number(node.right.value) and node.right.value < 0  # type: ignore[operator]
        ):
            right = f"({right})"
        left = to_text(node.left)
        if node.op == "*" and isinstance(node.left, Arith):
            left = f"({left})"
        return f"{left} {node.op} {right}"
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {to_text(node.rhs)}"
    if isinstance(node, Member):
        values = ", ".join(to_text(Const(v)) for v in node.values)
        return f"{node.field} {'not in' if node.negated else 'in'} [{values}]"
    if isinstance(node, Known):
        return f"{node.field} is {'unknown' if node.negated else 'known'}"
    if isinstance(node, Truth):
        return "true" if node.value else "false"
    if isinstance(node, Not):
        return f"not ({to_text(node.item)})"
    joiner = " and " if isinstance(node, And) else " or "
    return joiner.join(f"({to_text(i)})" for i in node.items)
