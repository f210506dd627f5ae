"""generator: a function of x that steps on at each poll, for testing a pipeline."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

from duct.objects import Event, Source
from duct.options import Option

FUNCTIONS: dict[str, tuple[Callable[..., float], tuple[int, ...]]] = {
    "sin": (math.sin, (1,)),
    "cos": (math.cos, (1,)),
    "tan": (math.tan, (1,)),
    "sinh": (math.sinh, (1,)),
    "cosh": (math.cosh, (1,)),
    "tanh": (math.tanh, (1,)),
    "asin": (math.asin, (1,)),
    "acos": (math.acos, (1,)),
    "atan": (math.atan, (1,)),
    "asinh": (math.asinh, (1,)),
    "acosh": (math.acosh, (1,)),
    "atanh": (math.atanh, (1,)),
    "log": (math.log, (1, 2)),
    "abs": (abs, (1,)),
}
"""The functions an expression may call, and how many arguments each takes."""

CONSTANTS = {"e": math.e, "pi": math.pi}

BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: math.pow,  # floats only: an OverflowError, never a huge integer or a complex
    ast.Mod: lambda a, b: a % b,
}
UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}

MAX_LENGTH = 1000
"""The longest expression taken."""
MAX_DEPTH = 50
"""The deepest nesting taken: a waveform needs far less, and evaluating it must not recurse far."""

Compiled = Callable[[float], float]


class FunctionError(ValueError):
    """An expression that uses something other than numbers, x, e, pi, arithmetic and FUNCTIONS."""


def compileFunction(text: str) -> Compiled:
    """``text`` as a function of x, or `FunctionError` saying what is not allowed.

    It is parsed once, here; calling the result walks the checked tree and
    evaluates nothing else.
    """
    if len(text) > MAX_LENGTH:
        raise FunctionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise FunctionError(f"not an expression: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise FunctionError("too deeply nested") from None
    return _compile(tree.body, 0)


def _compile(node: ast.AST, depth: int) -> Compiled:
    if depth > MAX_DEPTH:
        raise FunctionError(f"nested more than {MAX_DEPTH} deep")
    depth += 1
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FunctionError(f"{value!r} is not allowed: only numbers")
        number = float(value)
        return lambda x: number
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x: x
        if node.id in CONSTANTS:
            constant = CONSTANTS[node.id]
            return lambda x: constant
        raise FunctionError(f"the name {node.id!r} is not allowed: only x, e and pi")
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        binary, left, right = (
            BINARY[type(node.op)],
            _compile(node.left, depth),
            _compile(node.right, depth),
        )
        return lambda x: binary(left(x), right(x))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        unary, operand = UNARY[type(node.op)], _compile(node.operand, depth)
        return lambda x: unary(operand(x))
    if isinstance(node, ast.Call):
        return _compileCall(node, depth)
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        what = type(node.op).__name__
        raise FunctionError(f"the operator {what} is not allowed: only + - * / ** %")
    raise FunctionError(f"{_shown(node)} is not allowed: only numbers, x, e, pi, arithmetic "
                        f"and the functions {', '.join(FUNCTIONS)}")  # fmt: skip


def _compileCall(node: ast.Call, depth: int) -> Compiled:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in FUNCTIONS:
        allowed = ", ".join(FUNCTIONS)
        raise FunctionError(f"calling {_shown(node.func)} is not allowed: only {allowed}")
    if node.keywords:
        raise FunctionError(f"{name}() takes no keyword arguments")
    function, counts = FUNCTIONS[name]
    if len(node.args) not in counts:
        takes = " or ".join(map(str, counts))
        raise FunctionError(f"{name}() takes {takes} argument(s), not {len(node.args)}")
    args = [_compile(arg, depth) for arg in node.args]
    return lambda x: function(*(arg(x) for arg in args))


def _shown(node: ast.AST) -> str:
    try:
        return repr(ast.unparse(node))
    except Exception:  # a tree unparse cannot print
        return type(node).__name__


class Function(Source):
    """A function of x: ``{service}``, its value, with x going up by ``dx`` at each poll.

    ``function`` may use numbers, ``x``, ``e``, ``pi``, ``+ - * / ** %``
    and sin, cos, tan, sinh, cosh, tanh, asin, acos, atan, asinh, acosh,
    atanh, log (of one argument, or with a base) and abs.  It is checked
    when the configuration loads; anything else there is a problem naming
    the key.  The first poll is at x = ``dx``.  Where the function has no
    value (``log(0)``, a division by zero, an overflow), the event is
    ``critical``, with no metric and the reason in its description, and x
    steps on.
    """

    options = (
        Option("function", "string", "sin(x)", "expression in x, e and pi"),
        Option("dx", "number", 0.1, "how much x grows at each poll"),
    )

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        try:
            compileFunction(config["function"])
        except FunctionError as e:
            return [("function", str(e))]
        return []

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.function = compileFunction(self.config["function"])
        self.steps = 0
        self.x = 0.0

    def get(self) -> Event:
        self.steps += 1
        self.x = self.steps * float(self.config["dx"])
        text = self.config["function"]
        try:
            value = self.function(self.x)
            if not math.isfinite(value):
                raise OverflowError("the result is not finite")
        except (ArithmeticError, ValueError) as e:
            why = str(e) or type(e).__name__
            return self.createEvent("critical", f"{text} at x={self.x:g}: {why}", None)
        return self.createEvent("ok", f"{text} at x={self.x:g}", value)
