"""``math.eval``: arithmetic on numbers, computed exactly the way Python would.

Models get arithmetic wrong; this capability does it for them. The expression is parsed
with :mod:`ast` and only a whitelist of nodes is evaluated (never ``eval``/``exec``), and it
is bounded in length, nesting and integer size, so no payload can hang the kernel or eat
its memory: ``9**9**9`` is refused before anything is computed.

Refused input fails with ``INVALID_PARAMS`` saying what was refused; arithmetic that has no
answer (division by zero, a domain error, an overflow to infinity) fails with
``MATH_ERROR``.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from loomk.actions.provider import ActionFailure, FunctionProvider, capability
from loomk.actions.types import ErrorCode

__all__ = [
    "MATH_ERROR",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_LENGTH",
    "evaluate",
    "math_eval_provider",
]

MATH_ERROR = "MATH_ERROR"
MAX_LENGTH = 500  # characters of expression
MAX_DEPTH = 200  # nested operations; bounds the evaluator's recursion
MAX_INT_BITS = 4096  # about 1233 decimal digits: any bigger integer result is refused
_MAX_ROUND_DIGITS = 400  # round(x, n) with a huge n would build a huge power of ten

Number = int | float

_OPERATORS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SYMBOLS: dict[type[ast.AST], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.Not: "not",
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _round(value: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(value)
    if not isinstance(digits, int) or abs(digits) > _MAX_ROUND_DIGITS:
        raise _refused(f"round's second argument must be an integer within ±{_MAX_ROUND_DIGITS}")
    return round(value, digits)


def _smallest(*values: Number) -> Number:
    return min(values)


def _largest(*values: Number) -> Number:
    return max(values)


# name -> (function, fewest arguments, most arguments or None for any number)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (_smallest, 1, None),
    "max": (_largest, 1, None),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
}

_DESCRIPTIONS: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Slice: "slices",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions",
    ast.JoinedStr: "strings",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.NamedExpr: "assignments",
    ast.Starred: "unpacking",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "expression": {
            "type": "string",
            "description": (
                "Arithmetic expression: numbers, + - * / // % **, parentheses, the constants "
                "pi and e and the functions sqrt abs round min max floor ceil log log10 exp "
                "sin cos tan, e.g. 'sqrt(2) * (3 + 4) ** 2'"
            ),
            "maxLength": MAX_LENGTH,
        }
    },
    "required": ["expression"],
}


def math_eval_provider() -> FunctionProvider:
    """The ``math.eval`` provider: payload ``{expression}``, output ``{expression, value}``.

    An integer result stays an integer (exact, up to :data:`MAX_INT_BITS` bits); anything
    else is a float.
    """

    @capability(
        "math.eval",
        version="0.1.0",
        description="Evaluate an arithmetic expression exactly (e.g. '2 ** 10 / 3')",
        schema=_SCHEMA,
    )
    async def math_eval(args: dict[str, Any]) -> dict[str, Any]:
        expression: str = args["expression"]
        return {"expression": expression, "value": evaluate(expression)}

    return math_eval


def evaluate(expression: str) -> Number:
    """The value of ``expression``; raises :class:`ActionFailure` (``INVALID_PARAMS`` or
    ``MATH_ERROR``) when it is refused or has no finite value."""
    if len(expression) > MAX_LENGTH:
        raise _refused(f"the expression is longer than {MAX_LENGTH} characters")
    text = expression.strip()
    if not text:
        raise _refused("the expression is empty")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise _refused(f"not a valid expression: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:
        raise _refused(f"not a valid expression: {error}") from None
    return _evaluate(tree.body, 1)


def _evaluate(node: ast.expr, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise _refused(f"the expression is nested more than {MAX_DEPTH} operations deep")
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.BinOp):
        function = _OPERATORS.get(type(node.op))
        if function is None:
            raise _refused(f"the operator {_SYMBOLS.get(type(node.op), '?')} is not allowed")
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        return _apply_binary(node.op, function, left, right)
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.UAdd | ast.USub):
            raise _refused(f"the operator {_SYMBOLS.get(type(node.op), '?')} is not allowed")
        value = _evaluate(node.operand, depth + 1)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in _FUNCTIONS:
            raise _refused(f"{node.id} is a function: call it, as in {node.id}(x)")
        raise _refused(f"unknown name {node.id!r} (the constants are pi and e)")
    if isinstance(node, ast.Call):
        return _call(node, depth)
    what = _DESCRIPTIONS.get(type(node), f"{type(node).__name__} expressions")
    raise _refused(f"{what}: not allowed, only arithmetic on numbers is")


def _constant(value: object) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str | bytes):
            raise _refused("strings are not allowed")
        if isinstance(value, complex):
            raise _refused("complex numbers are not allowed")
        raise _refused(f"the constant {value!r} is not allowed")
    return _checked(value)


def _call(node: ast.Call, depth: int) -> Number:
    if not isinstance(node.func, ast.Name):
        what = _DESCRIPTIONS.get(type(node.func), "calling the result of an expression")
        raise _refused(f"{what}: not allowed, only arithmetic on numbers is")
    if node.func.id not in _FUNCTIONS:
        allowed = ", ".join(sorted(_FUNCTIONS))
        raise _refused(f"calling {node.func.id} is not allowed (the functions are {allowed})")
    name = node.func.id
    function, fewest, most = _FUNCTIONS[name]
    if node.keywords:
        raise _refused(f"{name} takes no keyword arguments")
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise _refused("unpacking is not allowed")
    count = len(node.args)
    if count < fewest or (most is not None and count > most):
        wanted = f"{fewest}" if fewest == most else f"{fewest} to {most or 'any number of'}"
        raise _refused(f"{name} takes {wanted} argument(s), got {count}")
    args = [_evaluate(arg, depth + 1) for arg in node.args]
    try:
        return _checked(function(*args))
    except (ArithmeticError, ValueError) as error:  # domain errors, overflow, log base 1
        raise _math_error(f"{name}: {error}") from None


def _apply_binary(
    op: ast.operator, function: Callable[[Any, Any], Any], left: Number, right: Number
) -> Number:
    if isinstance(left, int) and isinstance(right, int) and _too_big(op, left, right):
        raise _too_large()
    try:
        return _checked(function(left, right))
    except ZeroDivisionError:
        raise _math_error("division by zero") from None
    except OverflowError:
        raise _math_error("overflow: the result is too large for a float") from None
    except (ArithmeticError, ValueError) as error:
        raise _math_error(str(error)) from None


def _too_big(op: ast.operator, left: int, right: int) -> bool:
    """Whether an integer power or product would pass :data:`MAX_INT_BITS`: decided before
    computing it, since computing ``9**9**9`` is what must not happen."""
    if isinstance(op, ast.Pow):
        if right <= 0 or abs(left) <= 1:
            return False  # a float, or 0, 1 or -1: small whatever the exponent
        return right > MAX_INT_BITS or right * math.log2(abs(left)) > MAX_INT_BITS
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length() > MAX_INT_BITS + 1
    return False


def _checked(value: object) -> Number:
    """``value`` if it is a finite real number of bounded size."""
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise _too_large()
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _math_error("the result is not finite (overflow)")
        return value
    raise _math_error("the result is not a real number")


def _too_large() -> ActionFailure:
    return _refused(f"the result would be larger than {MAX_INT_BITS} bits")


def _refused(message: str) -> ActionFailure:
    return ActionFailure(ErrorCode.INVALID_PARAMS, message)


def _math_error(message: str) -> ActionFailure:
    return ActionFailure(MATH_ERROR, message)
