"""``time.now`` and ``math.eval`` through a real broker: exact outputs on an injected clock,
time zones, and safe arithmetic (what is computed, what is refused and how fast), with
property tests against Python's own arithmetic.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loomk.actions import ActionBroker, ActionCall, ActionResult, ActionStatus, ErrorCode
from loomk.actions.providers import math_eval_provider, time_now_provider

NOVEMBER_14_2023 = 1_700_000_000.123  # 2023-11-14T22:13:20.123Z, a Tuesday
_ids = itertools.count()


def broker_with_clock(now: float | None = None) -> ActionBroker:
    broker = ActionBroker()
    broker.register(time_now_provider() if now is None else time_now_provider(now=lambda: now))
    broker.register(math_eval_provider())
    return broker


async def call(broker: ActionBroker, capability: str, args: Any) -> ActionResult:
    return await broker.invoke(ActionCall.with_args(f"c{next(_ids)}", capability, args))


async def calculate(expression: str) -> ActionResult:
    return await call(broker_with_clock(), "math.eval", {"expression": expression})


def assert_failed(result: ActionResult, code: str, fragment: str = "") -> None:
    assert result.status is ActionStatus.ACTION_ERROR, result
    assert result.code == code, result
    assert result.error is not None
    assert fragment in result.error.message, result.error.message


# --- time.now ----------------------------------------------------------------------------


async def test_time_now_defaults_to_utc() -> None:
    result = await call(broker_with_clock(NOVEMBER_14_2023), "time.now", {})
    assert result.ok, result
    assert result.json() == {
        "iso": "2023-11-14T22:13:20.123+00:00",
        "epoch_ms": 1_700_000_000_123,
        "timezone": "UTC",
        "weekday": "Tuesday",
        "date": "2023-11-14",
        "time": "22:13:20",
    }


@pytest.mark.parametrize(
    ("zone", "now", "iso", "weekday"),
    [
        ("Asia/Tokyo", NOVEMBER_14_2023, "2023-11-15T07:13:20.123+09:00", "Wednesday"),
        ("America/New_York", NOVEMBER_14_2023, "2023-11-14T17:13:20.123-05:00", "Tuesday"),
        ("America/New_York", 1_690_000_000.0, "2023-07-22T00:26:40.000-04:00", "Saturday"),
        ("Asia/Kolkata", 0.0, "1970-01-01T05:30:00.000+05:30", "Thursday"),
        ("Etc/GMT+12", 0.9999, "1969-12-31T12:00:00.999-12:00", "Wednesday"),
    ],
)
async def test_time_now_in_a_zone(zone: str, now: float, iso: str, weekday: str) -> None:
    result = await call(broker_with_clock(now), "time.now", {"timezone": zone})
    assert result.ok, result
    output = result.json()
    assert output["iso"] == iso
    assert output["timezone"] == zone
    assert output["weekday"] == weekday
    assert output["epoch_ms"] == math.floor(now * 1000)
    assert (output["date"], output["time"]) == (iso[:10], iso[11:19])


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "", "utc", "Europe/", "../etc/passwd", "/etc/localtime", "x" * 65]
)
async def test_an_unknown_time_zone_is_invalid_params(zone: str) -> None:
    result = await call(broker_with_clock(NOVEMBER_14_2023), "time.now", {"timezone": zone})
    assert_failed(result, ErrorCode.INVALID_PARAMS, "unknown time zone")


@pytest.mark.parametrize("payload", [b'{"timezone": 5}', b'{"timezone": null}', b"[]", b"{"])
async def test_a_mistyped_payload_is_invalid_params(payload: bytes) -> None:
    result = await call(broker_with_clock(NOVEMBER_14_2023), "time.now", payload)
    assert_failed(result, ErrorCode.INVALID_PARAMS)


async def test_time_now_reads_the_wall_clock_by_default() -> None:
    before = time.time()
    result = await call(broker_with_clock(), "time.now", {})
    after = time.time()
    assert math.floor(before * 1000) <= result.json()["epoch_ms"] <= math.floor(after * 1000)


def test_descriptors() -> None:
    time_now, math_eval = time_now_provider().descriptor, math_eval_provider().descriptor
    assert (time_now.key, math_eval.key) == ("time.now:0.1.0", "math.eval:0.1.0")
    assert time_now.schema() is not None
    math_schema = math_eval.schema()
    assert math_schema is not None
    assert math_schema["required"] == ["expression"]
    assert "sqrt" in math_schema["properties"]["expression"]["description"]


# --- math.eval: values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("-2 ** 2", -4),
        ("(-2) ** 2", 4),
        ("2 ** 3 ** 2", 512),
        ("7 / 2", 3.5),
        ("8 / 2", 4.0),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("-7 % 3", 2),
        ("7.5 % 2", 1.5),
        ("+-+3", -3),
        ("0.1 + 0.2", 0.30000000000000004),
        ("1e3", 1000.0),
        ("1_000 * 3", 3000),
        ("0x10 + 0b11", 19),
        ("sqrt(16)", 4.0),
        ("abs(-3)", 3),
        ("abs(-2.5)", 2.5),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("round(1234, -2)", 1200),
        ("min(3, 1.5, 2)", 1.5),
        ("max(3, 1, 2)", 3),
        ("min(4)", 4),
        ("floor(-2.5)", -3),
        ("ceil(2.1)", 3),
        ("log(e)", 1.0),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("exp(0)", 1.0),
        ("sin(0) + cos(0)", 1.0),
        ("tan(0)", 0.0),
        ("pi", math.pi),
        ("2 * pi * 3", 2 * math.pi * 3),
        ("  42  ", 42),
        ("2 ** 4095 // 2 ** 4094", 2),
        ("9" * 400, int("9" * 400)),
    ],
)
async def test_math_eval_computes_as_python_does(expression: str, value: float) -> None:
    result = await calculate(expression)
    assert result.ok, result
    output = result.json()
    assert output == {"expression": expression, "value": value}
    assert type(output["value"]) is type(value)  # ints stay ints, floats stay floats


# --- math.eval: refusals and errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os').system('true')", "attribute access: not allowed"),
        ("__import__('os')", "calling __import__ is not allowed (the functions are abs, "),
        ("open('/etc/passwd')", "calling open is not allowed"),
        ("pow(2, 3)", "calling pow is not allowed"),
        ("(1).__class__", "attribute access"),
        ("math.sqrt(4)", "attribute access"),
        ("(lambda: 1)()", "lambdas"),
        ("sqrt(4)(2)", "calling the result of an expression"),
        ("x + 1", "unknown name 'x'"),
        ("sqrt", "sqrt is a function"),
        ("'a' * 3", "strings are not allowed"),
        ("f'{1}'", "strings"),
        ("b'x'", "strings are not allowed"),
        ("lambda: 1", "lambdas"),
        ("[x for x in range(3)]", "comprehensions"),
        ("(x for x in ())", "comprehensions"),
        ("[1, 2]", "lists"),
        ("(1, 2)", "tuples"),
        ("{1: 2}", "dicts"),
        ("1 < 2", "comparisons"),
        ("1 and 2", "boolean operators"),
        ("1 if 1 else 2", "conditional expressions"),
        ("(y := 2)", "assignments"),
        ("x[0]", "indexing"),
        ("True + 1", "the constant True"),
        ("None", "the constant None"),
        ("...", "the constant Ellipsis"),
        ("1j", "complex numbers"),
        ("1 << 2", "operator <<"),
        ("3 & 1", "operator &"),
        ("~1", "operator ~"),
        ("not 1", "operator not"),
        ("sqrt(x=4)", "no keyword arguments"),
        ("max(*[1])", "unpacking"),
        ("sqrt(1, 2)", "sqrt takes 1 argument(s), got 2"),
        ("min()", "min takes 1 to any number of argument(s), got 0"),
        ("round(1.5, 1.0)", "round's second argument must be an integer"),
        ("round(1, -10 ** 6)", "round's second argument"),
        ("1 +", "not a valid expression"),
        ("1\n+ 2", "not a valid expression"),
        ("1; 2", "not a valid expression"),
        ("import os", "not a valid expression"),
        ("1\x00", "not a valid expression"),
        ("   ", "the expression is empty"),
        ("9 ** 9 ** 9", "larger than 4096 bits"),
        ("2 ** 4096", "larger than 4096 bits"),
        ("(2 ** 4000) * (2 ** 4000)", "larger than 4096 bits"),
        ("2 ** 4095 + 2 ** 4095", "larger than 4096 bits"),
        ("(-3) ** 100000", "larger than 4096 bits"),
        ("-" * 250 + "1", "nested more than 200"),
        ("(" * 210 + "1" + ")" * 210, "not a valid expression"),
    ],
)
async def test_math_eval_refuses_what_is_not_arithmetic(expression: str, fragment: str) -> None:
    result = await calculate(expression)
    assert_failed(result, ErrorCode.INVALID_PARAMS, fragment)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("1.5 / 0.0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("log(0)", "log: math domain error"),
        ("log(2, 1)", "log:"),
        ("exp(1000)", "exp: math range error"),
        ("10.0 ** 400", "overflow"),
        ("1e308 * 10", "not finite"),
        ("1e999", "not finite"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("2 ** 4000 / 3", "overflow"),
        ("2 ** 4000 * 1.5", "overflow"),
        ("2.0 ** (10 ** 100)", "overflow"),
        ("round(1e308 * 10)", "not finite"),
    ],
)
async def test_math_eval_reports_math_errors(expression: str, fragment: str) -> None:
    result = await calculate(expression)
    assert_failed(result, "MATH_ERROR", fragment)


async def test_huge_powers_are_refused_before_being_computed() -> None:
    started = time.perf_counter()
    for expression in ["9**9**9", "10**10**10**10", "(2**4095)**(2**4095)", "99**99999999"]:
        assert_failed(await calculate(expression), ErrorCode.INVALID_PARAMS, "4096 bits")
    assert time.perf_counter() - started < 1.0


async def test_powers_of_zero_and_one_are_fine_with_huge_exponents() -> None:
    assert (await calculate("1 ** (10 ** 300)")).json()["value"] == 1
    assert (await calculate("(-1) ** (10 ** 300 + 1)")).json()["value"] == -1
    assert (await calculate("0 ** (10 ** 300)")).json()["value"] == 0


async def test_an_expression_over_500_characters_is_refused() -> None:
    assert (await calculate("1+" * 99 + "1" + " " * 301)).ok  # 500 characters
    result = await calculate("1+" * 99 + "1" + " " * 302)
    assert_failed(result, ErrorCode.INVALID_PARAMS, "500")


@pytest.mark.parametrize("payload", [b"{}", b'{"expression": 12}', b'{"expr": "1"}', b"1"])
async def test_a_missing_or_mistyped_expression_is_invalid_params(payload: bytes) -> None:
    result = await call(broker_with_clock(), "math.eval", payload)
    assert_failed(result, ErrorCode.INVALID_PARAMS)


# --- math.eval: properties ---------------------------------------------------------------


def _tree(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    ops = st.sampled_from(["+", "-", "*", "//", "%"])
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(ops, inner, inner),
            st.tuples(st.just("neg"), inner),
            st.tuples(st.just("**"), inner, st.integers(0, 3)),
        ),
        max_leaves=12,
    )


def _render(node: Any) -> str:
    if isinstance(node, int):
        return str(node)
    if node[0] == "neg":
        return f"-({_render(node[1])})"
    if node[0] == "**":
        return f"({_render(node[1])}) ** {node[2]}"
    return f"({_render(node[1])} {node[0]} {_render(node[2])})"


class _TooBig(Exception):
    """Some intermediate result passes 4096 bits, which math.eval refuses."""


def _compute(node: Any) -> int:
    """The test's own arithmetic (no eval), in math.eval's order: ZeroDivisionError when
    Python raises it, _TooBig when a step passes 4096 bits."""
    if isinstance(node, int):
        return node
    if node[0] == "neg":
        return -_compute(node[1])
    if node[0] == "**":
        base = _compute(node[1])
        if abs(base) > 1 and node[2] * math.log2(abs(base)) > 5000:
            raise _TooBig  # and computing it could take the test a long time
        return _checked(base ** node[2])
    left, right = _compute(node[1]), _compute(node[2])
    if node[0] in ("//", "%") and right == 0:
        raise ZeroDivisionError
    operations = {
        "+": left.__add__,
        "-": left.__sub__,
        "*": left.__mul__,
        "//": left.__floordiv__,
        "%": left.__mod__,
    }
    return _checked(int(operations[node[0]](right)))


def _checked(value: int) -> int:
    if value.bit_length() > 4096:
        raise _TooBig
    return value


def _depth(node: Any) -> int:
    if isinstance(node, int):
        return 1
    return 1 + max(_depth(child) for child in node[1:])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tree(st.integers(0, 50)))
async def test_integer_expressions_match_python(tree: Any) -> None:
    assume(_depth(tree) < 60)
    expression = _render(tree)
    result = await calculate(expression)
    if len(expression) > 500:
        assert_failed(result, ErrorCode.INVALID_PARAMS, "500")
        return
    try:
        expected = _compute(tree)
    except ZeroDivisionError:
        assert_failed(result, "MATH_ERROR", "division by zero")
        return
    except _TooBig:
        assert_failed(result, ErrorCode.INVALID_PARAMS, "4096 bits")
        return
    assert result.ok, (expression, result)
    assert result.json() == {"expression": expression, "value": expected}
    assert type(result.json()["value"]) is int


_TOKENS = [*"0123456789.e+-*/%() ,", "**", "//", "sqrt", "pi", "log", "round", "9**9", "_"]
_ARITHMETIC_JUNK = st.lists(st.sampled_from(_TOKENS), max_size=60).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=600), _ARITHMETIC_JUNK))
async def test_junk_never_escapes_and_finishes_fast(expression: str) -> None:
    started = time.perf_counter()
    result = await calculate(expression)
    assert time.perf_counter() - started < 1.0
    assert result.id  # a result, not an exception
    if result.ok:
        value = result.json()["value"]
        assert isinstance(value, int | float)
        assert not isinstance(value, float) or math.isfinite(value)
    else:
        assert result.code in (ErrorCode.INVALID_PARAMS, "MATH_ERROR"), result
