"""multi graders: formula combination, validation, unscored propagation, label_model inside multi."""

import pytest

from rft.graders import build, make_sample, validate
from rft.graders.multi import MultiGrader
from rft.graders.run import validate_reinforcement_grader


def eq(ref, field="{{sample.output_text}}"):
    return {"type": "string_check", "input": field, "reference": ref, "operation": "eq"}


def multi(formula, **graders):
    return {"type": "multi", "name": "m", "graders": graders, "calculate_output": formula}


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("a + b", 1.0),
        ("0.5 * a + 0.5 * b", 0.5),
        ("a * 2 ^ 3", 8.0),
        ("(a + b) / 2", 0.5),
        ("-b + 1", 1.0),
        ("max(a, b) - min(a, b)", 1.0),
        ("sqrt(a + 3) * exp(b) + log(a) + abs(-a) + floor(0.9) + ceil(0.1)", 4.0),
    ],
)
def test_formula_combines_sub_scores(formula, expected):
    g = build(multi(formula, a=eq("yes"), b=eq("no")))
    r = g.grade(make_sample("yes"), {})
    assert r.score == pytest.approx(expected)
    assert r.sub_scores == {"a": 1.0, "b": 0.0}
    assert r.error is None and r.latency_s > 0


def test_unscored_sub_grader_makes_multi_unscored_with_its_kind():
    g = build(multi("a + b", a=eq("yes"), b=eq("x", "{{item.missing}}")))
    r = g.grade(make_sample("yes"), {})
    assert r.score is None and r.error == "invalid_variable_error"
    assert "sub-grader 'b'" in r.details
    assert r.sub_scores == {"a": 1.0, "b": None}


def test_sample_parse_error_propagates():
    g = build(multi("a", a=eq("x", "{{sample.output_json.answer}}")))
    assert g.grade(make_sample("not json"), {}).error == "sample_parse_error"


def test_evaluation_error_is_other_error():
    g = build(multi("a / b", a=eq("yes"), b=eq("no")))
    r = g.grade(make_sample("yes"), {})
    assert r.score is None and r.error == "other_error" and "division by zero" in r.details


def test_unvalidated_bad_formula_is_a_formula_parse_error_at_run_time():
    g = MultiGrader(multi("a + * b", a=eq("yes"), b=eq("no")))
    r = g.grade(make_sample("yes"), {})
    assert r.score is None and r.error == "formula_parse_error" and "position 5" in r.details
    g = MultiGrader(multi("a + c", a=eq("yes"), b=eq("no")))
    assert g.grade(make_sample("yes"), {}).error == "formula_parse_error"


@pytest.mark.parametrize(
    "spec, fragment, field",
    [
        (multi("a + * b", a=eq("y"), b=eq("n")), "formula_parse_error: unexpected '*'; expected a number, name or '(' at position 5", "grader.calculate_output"),
        (multi("a + c", a=eq("y"), b=eq("n")), "unknown variable 'c'", "grader.calculate_output"),
        (multi("acuracy", accuracy=eq("y")), "did you mean 'accuracy'", "grader.calculate_output"),
        (multi("a", a=multi("x", x=eq("y"))), "cannot contain another multi", "grader.graders.a.type"),
        (multi("a", a={"type": "string_check", "input": "x", "reference": "y", "operation": "equals"}), "operation must be one of",
         "grader.graders.a.operation"),
        (multi("a", a={"type": "nope"}), "unknown grader type 'nope'", "grader.graders.a.type"),
        ({"type": "multi", "graders": {}, "calculate_output": "1"}, "non-empty object", "grader.graders"),
        ({"type": "multi", "graders": {"a": eq("y")}, "calculate_output": 3}, "must be a formula string", "grader.calculate_output"),
    ],
)
def test_validation(spec, fragment, field):
    problems = validate(spec)
    assert any(fragment in p.message and p.field == field for p in problems), [str(p) for p in problems]


def test_label_model_only_inside_multi_for_training(scripted_judge, grader_context):
    scripted_judge('{"result": "good"}')
    label = {"type": "label_model", "model": "judge", "input": [{"role": "user", "content": "{{sample.output_text}}"}],
             "labels": ["good", "bad"], "passing_labels": ["good"]}
    assert any("only inside a multi" in p.message for p in validate_reinforcement_grader(label))
    wrapped = multi("0.5 * label + 0.5 * exact", label=label, exact=eq("hello"))
    assert validate_reinforcement_grader(wrapped) == []
    r = build(wrapped, context=grader_context).grade(make_sample("hello"), {})
    assert r.score == 1.0 and r.sub_scores == {"label": 1.0, "exact": 1.0}


def test_sub_grader_names_default_to_keys(python_sandbox, grader_context):
    g = build(multi("p + t", p={"type": "python", "source": "def grade(s, i):\n    return 0.25\n"},
                    t={"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "abc", "evaluation_metric": "fuzzy_match"}),
              context=grader_context)
    assert g.graders["p"].name == "p" and g.graders["t"].name == "t"
    r = g.grade(make_sample("abc"), {})
    assert r.score == pytest.approx(1.25) and r.sub_scores == {"p": 0.25, "t": 1.0}


def test_a_formula_result_that_overflows_float32_is_unscored():
    from rft.graders import build as build_grader

    eq = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "yes", "operation": "eq"}
    g = build_grader({"type": "multi", "graders": {"a": eq}, "calculate_output": "a * 1e38 * 10"})
    r = g.grade({"output_text": "yes"}, {})
    assert r.score is None and r.error == "other_error" and "float32" in r.details and r.sub_scores == {"a": 1.0}
    assert g.grade({"output_text": "no"}, {}).score == 0.0
