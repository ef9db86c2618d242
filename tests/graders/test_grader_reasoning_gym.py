"""reasoning_gym graders on rows from builtin:reasoning_gym/<task>."""

import pytest

from rft.data import load_dataset
from rft.graders import build, make_sample, validate


@pytest.fixture(scope="module")
def legs():
    return load_dataset("builtin:reasoning_gym/leg_counting?n=3").rows


def test_reference_answers_pass_and_wrong_answers_fail(legs):
    g = build({"type": "reasoning_gym"})
    for row in legs:
        assert g.grade(make_sample(row["answer"]), row).score == 1.0
        assert g.grade(make_sample(str(int(row["answer"]) + 1)), row).score == 0.0


def test_templated_input_and_fixed_task(legs):
    row = legs[0]
    g = build({"type": "reasoning_gym", "name": "rg", "task": "leg_counting", "input": "{{sample.output_json.answer}}"})
    assert g.grade(make_sample('{"answer": "%s"}' % row["answer"]), {"rg_entry": row["rg_entry"]}).score == 1.0


def test_a_scorer_that_raises_is_unscored_not_zero():
    row = load_dataset("builtin:reasoning_gym/prime_factorization?n=1").rows[0]
    r = build({"type": "reasoning_gym"}).grade(make_sample("31x"), row)  # this scorer raises ValueError on it
    assert r.score is None and r.error == "other_error"
    assert "prime_factorization" in r.details and "ValueError" in r.details and "'31x'" in r.details
    assert build({"type": "reasoning_gym"}).grade(make_sample(row["answer"]), row).score == 1.0


@pytest.mark.parametrize("crash", [KeyError("question"), ZeroDivisionError("division by zero"), RecursionError()])
def test_verifier_crash_is_unscored_with_an_error_kind(legs, monkeypatch, crash):
    import rft.data

    def broken(task, answer, entry):
        raise crash

    monkeypatch.setattr(rft.data, "reasoning_gym_score", broken)
    g = build({"type": "reasoning_gym"})
    r = g.grade(make_sample(legs[0]["answer"]), legs[0])  # even the right answer: the verifier, not the answer, failed
    assert r.score is None and r.error == "other_error"
    assert type(crash).__name__ in r.details and "leg_counting" in r.details


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e39, None, "1.0"])
def test_verifier_returning_a_non_score_is_unscored(legs, monkeypatch, bad):
    import rft.data

    monkeypatch.setattr(rft.data, "reasoning_gym_score", lambda task, answer, entry: bad)
    r = build({"type": "reasoning_gym"}).grade(make_sample("4"), legs[0])
    assert r.score is None and r.error == "other_error", r


def test_rows_without_reasoning_gym_fields_are_unscored(legs):
    g = build({"type": "reasoning_gym"})
    assert g.grade(make_sample("4"), {"answer": "4"}).error == "invalid_variable_error"
    assert g.grade(make_sample("4"), {"rg_task": "leg_counting"}).error == "invalid_variable_error"
    bad = {**legs[0], "rg_task": "no_such_task"}
    r = g.grade(make_sample("4"), bad)
    assert r.error == "other_error" and "unknown reasoning-gym task" in r.details


def test_validation():
    msgs = [p.message for p in validate({"type": "reasoning_gym", "task": "leg_countin"})]
    assert any("unknown reasoning-gym task 'leg_countin'" in m and "did you mean 'leg_counting'" in m for m in msgs)
    assert validate({"type": "reasoning_gym", "task": "leg_counting", "input": "{{sample.extracted}}"}) == []
    assert any("bad template variable" in p.message for p in validate({"type": "reasoning_gym", "input": "{{x}}"}))
