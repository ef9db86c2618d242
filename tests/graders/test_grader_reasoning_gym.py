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


def test_malformed_answer_is_a_wrong_answer_not_unscored():
    row = load_dataset("builtin:reasoning_gym/prime_factorization?n=1").rows[0]
    r = build({"type": "reasoning_gym"}).grade(make_sample("31x"), row)  # this scorer raises on it
    assert r.score == 0.0 and r.error is None
    assert build({"type": "reasoning_gym"}).grade(make_sample(row["answer"]), row).score == 1.0


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
