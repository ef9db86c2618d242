"""Property-based tests (hypothesis) of the template renderer and the formula parser: generated input never
escapes as anything but rft's own error type.

Driven functions:
- rft.graders.templating: `variables`, `check`, `render`, `lookup` (through render), `make_sample`; and a
  string_check grader built from generated templates (`graders.validate`, `graders.build`, `Grader.grade`).
- rft.graders.formula: `tokenize`, `parse`, `Formula.evaluate`, `evaluate`; and a multi grader built with the
  generated formula (`graders.validate`, `graders.build`, `Grader.grade`).
Contract checked: `RftError` (TemplateError, FormulaError, FormulaEvalError are RftErrors) is the only exception
that escapes; `validate` returns problems and never raises; `grade` never raises and returns a score that is
a finite float or None with an error kind. A differential check compares evaluation with Python's own float
arithmetic on formulas where both languages agree (+ - * ^, unary minus, parentheses, min, max, abs).

Run: `python -m pytest -q tests/graders/test_fuzz_graders.py` (a few seconds; examples are kept modest).
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rft.errors import RftError
from rft.graders import build, make_sample, render, validate
from rft.graders.formula import MAX_DEPTH, evaluate, parse, tokenize
from rft.graders.templating import TemplateError, check, to_text, variables
from rft.types import ERROR_KINDS

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- templates -------------------------------------------------------------------------------------------

TEMPLATE_PIECES = ["{{", "}}", "{", "}", " ", "  ", "\n", "\t", "item", "sample", ".", "[", "]", "0", "1", "12",
                   "'", '"', "a", "b", "-", "_", "\\", "é", "\u2028", "output_text", "output_json", "output_tools",
                   "choices", "message", "content", "extracted", "{{item.a}}", "{{ sample.output_text }}",
                   "{{item.list[0]}}", '{{item["a b"]}}', "{{sample.output_json.x}}"]
templates = st.one_of(st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=25).map("".join), st.text(max_size=60))

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                         st.text(max_size=10))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "a b", "list", "x", "output_text", "-"]), inner, max_size=4)),
    max_leaves=12)
items = st.dictionaries(st.sampled_from(["a", "b", "a b", "list", "x", "answer"]), json_values, max_size=5)
outputs = st.one_of(st.text(max_size=40), json_values.map(lambda v: to_text(v)),
                    st.integers(1, 3000).map(lambda n: "[" * n), st.integers(1, 3000).map(lambda n: '{"x":' * n))


@FAST
@given(template=templates, item=items, output=outputs)
@example(template="{{" + " " * 5_000, item={}, output="x")  # the old regex backtracked cubically on this
@example(template="{{sample.output_json}}", item={}, output="[" * 5_000)  # deeper than json's recursion limit
def test_render_raises_only_template_errors(template, item, output):
    sample = make_sample(output)
    assert isinstance(variables(template), list)
    assert all(isinstance(p.message, str) for p in check(template))
    try:
        text = render(template, sample, item)
    except TemplateError as e:  # an RftError: invalid_variable_error / sample_parse_error
        assert isinstance(e, RftError) and e.error_kind in ERROR_KINDS
        return
    assert isinstance(text, str)
    if "{{" not in template:
        assert text == template  # nothing to substitute: the text comes back unchanged


@FAST
@given(key=st.sampled_from(["a", "b", "x", "answer"]), value=json_values)
def test_a_resolvable_variable_renders_its_value(key, value):
    assert render(f"before {{{{ item.{key} }}}} after", make_sample(""), {key: value}) == f"before {to_text(value)} after"


@FAST
@given(output=outputs)
def test_make_sample_never_raises(output):
    s = make_sample(output)
    assert s["output_text"] == output and s["choices"][0]["message"]["content"] == output


@FAST
@given(inp=templates, ref=templates, op=st.sampled_from(["eq", "ne", "like", "ilike", "is"]), item=items, output=outputs)
def test_string_check_from_generated_templates(inp, ref, op, item, output):
    spec = {"type": "string_check", "name": "s", "input": inp, "reference": ref, "operation": op}
    problems = validate(spec)
    try:
        g = build(spec)
    except RftError:
        assert problems  # build refuses exactly what validate reports
        return
    assert not problems
    r = g.grade(make_sample(output), item)
    assert (r.score in (0.0, 1.0) and r.error is None) or (r.score is None and r.error in ERROR_KINDS)


# --- formulas --------------------------------------------------------------------------------------------

FORMULA_PIECES = ["a", "b", "c", "1", "0", "2.5", ".5", "1e3", "1e999", "e", "+", "-", "*", "/", "^", "(", ")", ",",
                  " ", "min", "max", "abs", "floor", "ceil", "exp", "sqrt", "log", "pow", "__import__", "**", "'",
                  "#", "é", "\x00"]
formula_text = st.one_of(st.lists(st.sampled_from(FORMULA_PIECES), max_size=30).map("".join), st.text(max_size=40))
values = st.fixed_dictionaries({k: st.floats(allow_nan=False, allow_infinity=False) for k in "abc"})


@FAST
@given(formula=formula_text, vals=values)
@example(formula="(" * 2000 + "1" + ")" * 2000, vals={})
@example(formula="-" * 2000 + "1", vals={})
@example(formula="2^" * 2000 + "1", vals={})
@example(formula="+".join(["a"] * 2000), vals={"a": 1.0})
@example(formula="floor(1e308 * 10 - 1e308 * 10)", vals={})
@example(formula="ceil(a * 1e308 * 1e308)", vals={"a": -1.0})
@example(formula="1e999 - 1e999", vals={})
def test_formulas_raise_only_rft_errors(formula, vals):
    try:
        tokenize(formula)
        f = parse(formula)
    except RftError as e:
        assert str(e)  # FormulaError says where: "... at position N"
        return
    assert all(v.isidentifier() and v in formula for v in f.variables)
    try:
        out = f.evaluate(vals)
    except RftError:  # FormulaEvalError: division by zero, overflow, a missing variable, ...
        return
    assert isinstance(out, float) and math.isfinite(out)


@FAST
@given(formula=formula_text, a=st.sampled_from([0.0, 1.0, 0.5, -1.0]))
def test_multi_grader_from_a_generated_formula(formula, a):
    eq = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "yes", "operation": "eq"}
    spec = {"type": "multi", "graders": {"a": eq, "b": eq}, "calculate_output": formula}
    problems = validate(spec)
    try:
        g = build(spec)
    except RftError:
        assert problems
        return
    r = g.grade(make_sample("yes" if a else "no"), {})
    assert (r.score is not None and math.isfinite(r.score)) or (r.score is None and r.error in ERROR_KINDS)


# Differential: formulas both languages read the same way, evaluated with float literals.
leaf = st.one_of(st.sampled_from(["a", "b"]), st.integers(-50, 50).map(lambda n: f"{n}.0" if n >= 0 else f"({n}.0)"))


def _compound(inner):
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        inner.map(lambda x: f"-{x}"),
        inner.map(lambda x: f"({x})"),
        st.tuples(inner, st.integers(0, 3)).map(lambda t: f"({t[0]}) ^ {t[1]}"),
        st.tuples(st.sampled_from(["min", "max"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        inner.map(lambda x: f"abs({x})"),
    )


agreed_formulas = st.recursive(leaf, _compound, max_leaves=15)


@FAST
@given(formula=agreed_formulas, a=st.floats(-1e3, 1e3), b=st.floats(-1e3, 1e3))
def test_evaluation_matches_python_arithmetic(formula, a, b):
    python_text = formula.replace("^", "**")
    try:
        expected = eval(python_text, {"__builtins__": {}, "min": min, "max": max, "abs": abs}, {"a": a, "b": b})  # noqa: S307 - generated from the grammar above
    except OverflowError:
        expected = math.inf
    try:
        got = evaluate(formula, {"a": a, "b": b})
    except RftError as e:
        # only overflow, or a formula deeper than the documented limit, may refuse what Python computes
        assert not math.isfinite(expected) or "nests more than" in str(e), (formula, expected, e)
        return
    assert got == float(expected), (formula, got, expected)
    assert MAX_DEPTH >= 1
