"""The `calculate_output` formula language of OpenAI `multi` graders: a tokenizer and a recursive-descent parser.

What: `parse("0.5 * a + 0.5 * max(b, c)")` returns a `Formula` whose `.variables` are the names it uses and
whose `.evaluate({"a": 1, "b": 0, "c": 1})` returns a float. Nothing is ever passed to `eval`.

Grammar (lowest to highest precedence):

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | power
    power   := primary ("^" unary)?          right-associative: 2^3^2 = 2^9; -2^2 = -(2^2); 2^-1 = 0.5
    primary := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Functions: min and max (one or more arguments), abs, floor, ceil, exp, sqrt, log (natural log), each with one
argument. Numbers are decimal (`1`, `0.5`, `.5`, `1e-3`). Variable names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`),
so grader keys used in a formula must be identifiers too.

Simplified: OpenAI does not publish its grammar; operator precedence follows ordinary maths (power binds
tighter than unary minus, as in Python). Evaluation errors (division by zero, sqrt of a negative number, log of
a non-positive one, overflow, a function of inf or NaN) raise `FormulaEvalError`; the multi grader reports them
as unscored. A formula may nest at most `MAX_DEPTH` levels (parentheses, unary signs, powers, and chains of
operators all count), so parsing and evaluating can never exhaust Python's stack. `FormulaError` and
`FormulaEvalError` are `RftError`s: nothing else escapes `parse`, `evaluate` or `tokenize` (fuzzed in
tests/graders/test_fuzz_graders.py).

Why hand-written (looked at in the restructuring of issue 12): no maintained safe-expression library on PyPI
covers this language exactly. simpleeval (maintained; it parses with Python's `ast`) reads `^` as bitwise xor
at Python's precedence, below `+` and `*`, so `a * 2 ^ 3` would parse as `(a * 2) ^ 3`; remapping the operator to
pow cannot fix that precedence or the associativity, and it accepts far more than OpenAI's language
(comparisons, `x if c else y`, strings, `**`) while reporting Python's syntax errors rather than a position in the
formula. py-expression-eval has `^` as power but is unmaintained (last release 0.3.14, 2021) and adds `%`, `||`,
comparisons, `fac`, `random` and trigonometry that `calculate_output` does not have. asteval is a subset of
Python (a much larger surface to restrict); numexpr and cexprtk are array/C++ engines with their own syntax and
function sets. Restricting any of them to exactly + - * / ^ and the eight functions, with positions in parse
errors and a nesting bound, would take more code than this parser.

How to run: `python -c "from rft.graders.formula import parse; print(parse('2^3^2').evaluate({}))"`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from rft.errors import RftError

MAX_DEPTH = 100  # nesting levels; real formulas use fewer than 10


class FormulaError(RftError):
    """A formula that does not parse. `message` is the problem, `position` its 1-based character column."""

    def __init__(self, message: str, position: int, formula: str):
        super().__init__(message)
        self.position, self.formula = position, formula

    def __str__(self) -> str:
        return f"{self.message} at position {self.position}"

    def pointer(self) -> str:
        """The formula with a caret under the problem, for error messages."""
        return f"{self.formula}\n{' ' * (self.position - 1)}^"


class FormulaEvalError(RftError):
    """A formula that parsed but could not be evaluated for these values (e.g. division by zero)."""


def _fn1(f: Callable[[float], float], name: str, domain: Callable[[float], bool] | None = None, why: str = ""):
    def call(args: list[float]) -> float:
        x = args[0]
        if not math.isfinite(x):  # floor(nan) raises ValueError, floor(inf) OverflowError: say what happened
            raise FormulaEvalError(f"{name}({x}): the argument is not a finite number")
        if domain is not None and not domain(x):
            raise FormulaEvalError(f"{name}({x:g}): {why}")
        return float(f(x))

    return call


FUNCTIONS: dict[str, tuple[int, int | None, Callable[[list[float]], float]]] = {
    # name: (min args, max args or None for any, implementation)
    "min": (1, None, lambda a: float(min(a))),
    "max": (1, None, lambda a: float(max(a))),
    "abs": (1, 1, lambda a: float(abs(a[0]))),
    "floor": (1, 1, _fn1(math.floor, "floor")),
    "ceil": (1, 1, _fn1(math.ceil, "ceil")),
    "exp": (1, 1, _fn1(math.exp, "exp")),
    "sqrt": (1, 1, _fn1(math.sqrt, "sqrt", lambda x: x >= 0, "the argument is negative")),
    "log": (1, 1, _fn1(math.log, "log", lambda x: x > 0, "the argument is not positive")),
}

_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/^(),])"
)


@dataclass(frozen=True)
class Token:
    kind: str  # "num" | "name" | "op" | "end"
    text: str
    pos: int  # 1-based column


def tokenize(formula: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(formula):
        m = _TOKEN.match(formula, i)
        if not m:
            raise FormulaError(f"unexpected character {formula[i]!r}", i + 1, formula)
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup, m.group(), i + 1))
        i = m.end()
    tokens.append(Token("end", "", len(formula) + 1))
    return tokens


# The parsed tree: ("num", value) | ("var", name) | ("neg", node) | ("bin", op, left, right) | ("call", name, [args])
Node = tuple


class _Parser:
    def __init__(self, formula: str):
        self.formula = formula
        self.tokens = tokenize(formula)
        self.i = 0
        self.depth = 0  # how many unary() calls are open: bounds the recursion

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, tok: Token | None = None) -> FormulaError:
        tok = tok or self.tok
        return FormulaError(message, tok.pos, self.formula)

    def describe(self, tok: Token) -> str:
        return "end of formula" if tok.kind == "end" else repr(tok.text)

    def take(self, text: str) -> bool:
        if self.tok.kind == "op" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.error("empty formula")
        node = self.expr()
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.describe(self.tok)}")
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.tok.text
            self.i += 1
            node = ("bin", op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.tok.text
            self.i += 1
            node = ("bin", op, node, self.unary())
        return node

    def unary(self) -> Node:
        # Every recursive path (parentheses, call arguments, signs, the right side of ^) goes through here.
        if self.depth >= MAX_DEPTH:
            raise self.error(f"the formula nests more than {MAX_DEPTH} levels deep")
        self.depth += 1
        try:
            if self.take("-"):
                return ("neg", self.unary())
            if self.take("+"):
                return self.unary()
            return self.power()
        finally:
            self.depth -= 1

    def power(self) -> Node:
        base = self.primary()
        if self.take("^"):
            return ("bin", "^", base, self.unary())  # unary -> power -> ... makes ^ right-associative
        return base

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            return ("num", float(tok.text))
        if tok.kind == "name":
            self.i += 1
            if self.take("("):
                if tok.text not in FUNCTIONS:
                    raise self.error(f"unknown function '{tok.text}' (functions: {', '.join(FUNCTIONS)})", tok)
                args = [] if self.tok.kind == "op" and self.tok.text == ")" else [self.expr()]
                while self.take(","):
                    args.append(self.expr())
                if not self.take(")"):
                    raise self.error(f"expected ',' or ')' in the call to {tok.text}(), got {self.describe(self.tok)}")
                lo, hi, _ = FUNCTIONS[tok.text]
                if len(args) < lo or (hi is not None and len(args) > hi):
                    want = f"{lo}" if hi == lo else f"at least {lo}"
                    raise self.error(f"{tok.text}() takes {want} argument{'' if lo == 1 else 's'}, got {len(args)}", tok)
                return ("call", tok.text, args)
            return ("var", tok.text)
        if self.take("("):
            node = self.expr()
            if not self.take(")"):
                raise self.error(f"expected ')' to close the '(' at position {tok.pos}, got {self.describe(self.tok)}")
            return node
        if tok.kind == "end":
            raise self.error("the formula ends where a number, name or '(' was expected")
        raise self.error(f"unexpected {self.describe(tok)}; expected a number, name or '('")


def _children(node: Node) -> list[Node]:
    kind = node[0]
    if kind == "neg":
        return [node[1]]
    if kind == "bin":
        return [node[2], node[3]]
    if kind == "call":
        return list(node[2])
    return []


def _depth(tree: Node) -> int:
    """The tree's depth, computed without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in _children(node))
    return deepest


def _variables(node: Node, out: list[str]) -> None:
    kind = node[0]
    if kind == "var" and node[1] not in out:
        out.append(node[1])
    elif kind == "neg":
        _variables(node[1], out)
    elif kind == "bin":
        _variables(node[2], out)
        _variables(node[3], out)
    elif kind == "call":
        for a in node[2]:
            _variables(a, out)


def _eval(node: Node, values: dict[str, float]) -> float:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "var":
        if node[1] not in values:
            raise FormulaEvalError(f"no value for '{node[1]}'")
        return float(values[node[1]])
    if kind == "neg":
        return -_eval(node[1], values)
    if kind == "call":
        return FUNCTIONS[node[1]][2]([_eval(a, values) for a in node[2]])
    op, a, b = node[1], _eval(node[2], values), _eval(node[3], values)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise FormulaEvalError(f"division by zero ({a:g} / 0)")
        return a / b
    try:  # "^"
        r = a ** b
    except ZeroDivisionError:
        raise FormulaEvalError(f"{a:g} ^ {b:g}: zero to a negative power") from None
    if isinstance(r, complex):
        raise FormulaEvalError(f"{a:g} ^ {b:g}: a negative number to a fractional power")
    return float(r)


@dataclass(frozen=True)
class Formula:
    text: str
    tree: Node
    variables: tuple[str, ...]

    def evaluate(self, values: dict[str, float]) -> float:
        try:
            out = _eval(self.tree, values)
        except OverflowError:
            raise FormulaEvalError("numeric overflow") from None
        except (TypeError, ValueError) as e:  # a value that is not a number (parse() never produces one)
            raise FormulaEvalError(f"could not evaluate: {e}") from None
        if not math.isfinite(out):
            raise FormulaEvalError(f"the result is {out}")
        return out


def parse(formula: str) -> Formula:
    """Parse a formula; raises FormulaError naming the position of the first problem."""
    if not isinstance(formula, str):
        raise FormulaError(f"a formula must be a string, got {type(formula).__name__}", 1, str(formula))
    tree = _Parser(formula).parse()
    if _depth(tree) > MAX_DEPTH:  # "a+a+...+a" parses in a loop but builds a tree as deep as it is long
        raise FormulaError(f"the formula nests more than {MAX_DEPTH} levels deep (split long chains of operators "
                           "with parentheses)", 1, formula)
    names: list[str] = []
    _variables(tree, names)
    return Formula(formula, tree, tuple(names))


def evaluate(formula: str, values: dict[str, float]) -> float:
    return parse(formula).evaluate(values)


__all__ = ["FUNCTIONS", "MAX_DEPTH", "Formula", "FormulaError", "FormulaEvalError", "evaluate", "parse", "tokenize"]
