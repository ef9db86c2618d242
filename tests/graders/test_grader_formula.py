"""calculate_output formulas: precedence, associativity, functions, errors with positions."""

import math

import pytest

from rft.graders.formula import FormulaError, FormulaEvalError, evaluate, parse

VALUES = {"a": 0.5, "b": 2.0, "c": 0.0, "compliant": 1.0, "explanation": 0.25}


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left-associative
        ("12 / 3 / 2", 2.0),  # left-associative
        ("2 ^ 3 ^ 2", 512.0),  # right-associative power: 2^(3^2)
        ("(2 ^ 3) ^ 2", 64.0),
        ("-2 ^ 2", -4.0),  # power binds tighter than unary minus
        ("2 ^ -1", 0.5),
        ("--3", 3.0),
        ("+3 - -3", 6.0),
        ("2 * 3 ^ 2", 18.0),
        ("0.5 * compliant + 0.5 * explanation", 0.625),
        ("a * b + c", 1.0),
        ("min(a, b)", 0.5),
        ("max(a, b, 3)", 3.0),
        ("min(7)", 7.0),
        ("abs(-2.5)", 2.5),
        ("floor(1.7) + ceil(1.2)", 3.0),
        ("floor(-1.5)", -2.0),
        ("exp(0)", 1.0),
        ("sqrt(16)", 4.0),
        ("log(exp(2))", 2.0),
        ("max(min(a, b), c) * 2", 1.0),
        (".5 + 1e1 + 2.5E-1", 10.75),
        ("  1+2  ", 3.0),
    ],
)
def test_evaluates(formula, expected):
    assert evaluate(formula, VALUES) == pytest.approx(expected)


def test_variables_are_listed_in_order_without_duplicates():
    assert parse("a + b * a + max(c, a)").variables == ("a", "b", "c")


@pytest.mark.parametrize(
    "formula, position, fragment",
    [
        ("", 1, "empty"),
        ("1 +", 4, "ends"),
        ("(1 + 2", 7, "')'"),
        ("1 + 2)", 6, "unexpected ')'"),
        ("a b", 3, "unexpected 'b'"),
        ("1 % 2", 3, "'%'"),
        ("foo(1)", 1, "unknown function 'foo'"),
        ("abs(1, 2)", 1, "takes 1 argument"),
        ("max()", 1, "at least 1"),
        ("min(1,", 7, "ends"),
        ("2 ** 3", 4, "unexpected '*'"),
        ("import os", 8, "unexpected 'os'"),
        ("__import__('os')", 12, "unexpected character"),
    ],
)
def test_parse_errors_name_the_position(formula, position, fragment):
    with pytest.raises(FormulaError) as ei:
        parse(formula)
    assert ei.value.position == position
    assert fragment in ei.value.message
    assert ei.value.pointer().splitlines()[1].index("^") == position - 1


@pytest.mark.parametrize("formula", ["1 / c", "log(c)", "sqrt(-1)", "c ^ -1", "(-8) ^ 0.5", "exp(1000)", "10 ^ 400"])
def test_evaluation_errors(formula):
    with pytest.raises(FormulaEvalError):
        evaluate(formula, VALUES)


def test_missing_value_is_an_evaluation_error():
    with pytest.raises(FormulaEvalError, match="no value for 'z'"):
        evaluate("z + 1", {})


def test_never_uses_eval(monkeypatch):
    import builtins

    def boom(*a, **k):
        raise AssertionError("eval must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    assert evaluate("max(1, 2) ^ 2", {}) == 4.0
    assert math.isclose(evaluate("sqrt(a)", {"a": 2}), math.sqrt(2))
