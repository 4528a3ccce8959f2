"""Arithmetic said in words, turned into an expression the math evaluator accepts.

"what is fifteen percent of two hundred", "the square root of 16 plus 2" and "add 4 and
5" are how people ask for sums; :func:`read_math` rewrites them into the expression
language of :func:`loomk.actions.providers.math_eval.evaluate` ("(15 * 200 / 100)") and says
how strongly the words looked like a calculation when they do not parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from loomk.llm.local._numbers import Items, as_phrase, number_text, read_numbers

__all__ = ["SpokenMath", "read_math"]


@dataclass(frozen=True, slots=True)
class SpokenMath:
    """The arithmetic in a question: the ``expression`` to evaluate (None when the words do
    not parse) with the ``phrase`` it was read from, whether a calculating word ``asked`` for
    math ("calculate", "work out"), and whether the words hold ``arithmetic`` at all (a
    number and an operator)."""

    expression: str | None
    phrase: str
    asked: bool
    arithmetic: bool


def read_math(tokens: Sequence[str]) -> SpokenMath:
    """The arithmetic ``tokens`` ask for, question words ("what is", "calculate") and a
    trailing "equals" left out."""
    words, asked = _strip_question(tokens)
    symbols = _operator_symbols(read_numbers(words))
    has_number = any(isinstance(s, Fraction) for s in symbols)
    has_operator = any(s in _OPERATORS for s in symbols if isinstance(s, str))
    arithmetic = has_number and has_operator
    if arithmetic:
        try:
            expression = _MathParser(symbols).parse()
        except (_NoParse, RecursionError):
            pass
        else:
            return SpokenMath(expression, as_phrase(words), asked, arithmetic)
    return SpokenMath(None, "", asked, arithmetic)


def _strip_question(tokens: Sequence[str]) -> tuple[list[str], bool]:
    """``tokens`` without the leading triggers and trailing "equals", and whether a strong
    trigger was among them."""
    words = list(tokens)
    strong = False
    stripped = True
    while stripped and words:
        stripped = False
        for trigger in _MATH_TRIGGERS:
            if tuple(words[: len(trigger)]) == trigger:
                strong = strong or trigger[0] in _STRONG_TRIGGERS
                words = words[len(trigger) :]
                stripped = True
                break
    while words and words[-1] in ("equal", "equals", "=", "is", "make", "makes"):
        words.pop()
    if words[-2:] == ["equal", "to"]:
        words = words[:-2]
    return words, strong


def _operator_symbols(items: Items) -> Items:
    """``items`` with operator phrases ("divided by", "square root of") as their symbols."""
    symbols: Items = []
    i = 0
    while i < len(items):
        for phrase, replacement in _MATH_PHRASES:
            if tuple(items[i : i + len(phrase)]) == phrase:
                symbols.extend(r for r in replacement if r)
                i += len(phrase)
                break
        else:
            symbols.append(items[i])
            i += 1
    return symbols


# math: trigger words stripped from the front, and phrases read as operators
_MATH_TRIGGERS: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "what is",
        "what are",
        "how much is",
        "how much are",
        "calculate",
        "compute",
        "evaluate",
        "solve",
        "work out",
        "figure out",
        "what do you get if you",
        "what do you get when you",
        "what does",
        "do the math",
        "math",
    )
]
_STRONG_TRIGGERS = {"calculate", "compute", "evaluate", "solve", "work", "figure", "do", "math"}
_MATH_PHRASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (tuple(words.split()), tuple(symbols.split()))
    for words, symbols in (
        ("multiplied by", "*"),
        ("times", "*"),
        ("x", "*"),
        ("divided by", "/"),
        ("over", "/"),
        ("plus", "+"),
        ("minus", "-"),
        ("negative", "-"),
        ("take away", "-"),
        ("to the power of", "**"),
        ("to the power", "**"),
        ("raised to the power of", "**"),
        ("raised to the", "**"),
        ("raised to", "**"),
        ("^", "**"),
        ("square root of", "sqrt"),
        ("square root", "sqrt"),
        ("sqrt of", "sqrt"),
        ("root of", "sqrt"),
        ("cube root of", "cbrt"),
        ("cube root", "cbrt"),
        ("percent of", "%of"),
        ("per cent of", "%of"),
        ("% of", "%of"),
        ("percent", "%"),
        ("per cent", "%"),
        ("modulo", "mod"),
        ("modulus", "mod"),
        ("the", ""),
        ("sum of", "sum"),
        ("product of", "product"),
        ("average of", "average"),
        ("mean of", "average"),
        ("half of", "half"),
        ("difference between", "difference"),
        ("difference of", "difference"),
    )
]
_FUNCTION_WORDS = {
    "sqrt",
    "cbrt",
    "sum",
    "product",
    "average",
    "difference",
    "half",
    "double",
    "twice",
    "add",
    "subtract",
    "multiply",
    "divide",
}
_OPERATORS = {"+", "-", "*", "/", "**", "%", "%of", "mod", "squared", "cubed"} | _FUNCTION_WORDS


class _NoParse(Exception):
    """The words are not an arithmetic expression."""


def _balanced_group(text: str) -> bool:
    """Whether ``text`` is one parenthesised group: "(...)" or "name(...)"."""
    start = text.find("(")
    if start < 0 or not text.endswith(")") or (not text[:start].isalpha() and start != 0):
        return False
    depth = 0
    for position, char in enumerate(text[start:], start):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return position == len(text) - 1
    return False


def _wrap(expression: str) -> str:
    """``expression`` in parentheses unless it is already a single operand."""
    if re.fullmatch(r"[0-9.]+|pi", expression) or _balanced_group(expression):
        return expression
    return f"({expression})"


class _MathParser:
    """Recursive descent over tokens whose numbers are read, with Python's precedence, into
    an expression :func:`evaluate` accepts; :class:`_NoParse` when the words are not one."""

    MAX_DEPTH = 40

    def __init__(self, items: Items) -> None:
        self.items = items
        self.position = 0
        self.depth = 0

    def parse(self) -> str:
        expression = self.expression()
        if self.position != len(self.items):
            raise _NoParse
        return expression

    def peek(self, ahead: int = 0) -> str | Fraction | None:
        index = self.position + ahead
        return self.items[index] if index < len(self.items) else None

    def take(self, *words: str) -> bool:
        if self.peek() in words:
            self.position += 1
            return True
        return False

    def starts_operand(self, item: str | Fraction | None) -> bool:
        return isinstance(item, Fraction) or item in ("(", "-", "pi") or item in _FUNCTION_WORDS

    def expression(self) -> str:
        self.depth += 1
        if self.depth > self.MAX_DEPTH:
            raise _NoParse
        left = self.term()
        while self.peek() in ("+", "-"):
            operator = str(self.peek())
            self.position += 1
            left = f"{left} {operator} {self.term()}"
        self.depth -= 1
        return left

    def term(self) -> str:
        left = self.unary()
        while True:
            item = self.peek()
            if item in ("*", "/", "mod") or (item == "%" and self.starts_operand(self.peek(1))):
                self.position += 1
                operator = "%" if item == "mod" else str(item)
                left = f"{left} {operator} {self.unary()}"
            else:
                return left

    def unary(self) -> str:
        if self.take("-"):
            self.depth += 1
            if self.depth > self.MAX_DEPTH:
                raise _NoParse
            operand = self.unary()
            self.depth -= 1
            return f"-{operand}"
        self.take("+")
        base = self.postfix()
        if self.take("**"):
            return f"{_wrap(base)} ** {self.unary()}"
        return base

    def postfix(self) -> str:
        value = self.primary()
        while True:
            if self.take("squared"):
                value = f"{_wrap(value)} ** 2"
            elif self.take("cubed"):
                value = f"{_wrap(value)} ** 3"
            elif self.take("%of"):
                value = f"({_wrap(value)} * {_wrap(self.unary())} / 100)"
            elif self.peek() == "%" and not self.starts_operand(self.peek(1)):
                self.position += 1
                value = f"({_wrap(value)} / 100)"
            else:
                return value

    def operands(self, minimum: int) -> list[str]:
        self.take("of", "between")
        found = [self.expression()]
        while self.take("and", "by", "with") or self.starts_operand(self.peek()):
            found.append(self.expression())  # "2, 4 and 9": commas are not tokens
        if len(found) < minimum:
            raise _NoParse
        return found

    def primary(self) -> str:
        item = self.peek()
        self.position += 1
        if isinstance(item, Fraction):
            return number_text(item)
        if item == "(":
            inner = self.expression()
            if not self.take(")"):
                raise _NoParse
            return f"({inner})"
        if item == "pi":
            return "pi"
        if item == "sqrt":
            self.take("of")
            return f"sqrt({self.unary()})"
        if item == "cbrt":
            self.take("of")
            return f"({_wrap(self.unary())} ** (1 / 3))"
        if item in ("half", "double", "twice"):
            operand = _wrap(self.unary())
            return f"({operand} / 2)" if item == "half" else f"(2 * {operand})"
        if item in ("sum", "add"):
            if item == "add":
                first = self.expression()
                if not self.take("and", "to"):
                    raise _NoParse
                return f"({first} + {self.expression()})"
            return f"({' + '.join(self.operands(2))})"
        if item == "product":
            return f"({' * '.join(self.operands(2))})"
        if item == "average":
            values = self.operands(2)
            return f"(({' + '.join(values)}) / {len(values)})"
        if item == "difference":
            first, second = self.operands(2)[:2]
            return f"({first} - {second})"
        if item in ("subtract", "multiply", "divide"):
            first = self.expression()
            separators = {
                "subtract": ("from",),
                "multiply": ("by", "and", "with"),
                "divide": ("by",),
            }
            if not self.take(*separators[str(item)]):
                raise _NoParse
            second = self.expression()
            if item == "subtract":
                return f"({second} - {first})"
            return f"({first} {'*' if item == 'multiply' else '/'} {second})"
        raise _NoParse
