"""run_grader (OpenAI graders/run response shape, every error flag) and grade_file summaries."""

import pytest

from rft.errors import RftError
from rft.graders import build
from rft.graders.endpoint import MAX_PAYLOAD_BYTES
from rft.graders.multi import MultiGrader
from rft.graders.run import grade_file, run_grader
from rft.types import ERROR_KINDS

EQ = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}
JUDGE = {"type": "score_model", "name": "judge", "model": "judge-model", "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
DETAIL_KEYS = {"model_grader_server_error_details", "python_grader_runtime_error_details", "python_grader_server_error_type"}


def test_response_shape_for_a_passing_sample():
    out = run_grader(EQ, "4", {"answer": "4"})
    assert set(out) == {"reward", "sub_rewards", "model_grader_token_usage_per_model", "metadata"}
    assert out["reward"] == 1.0 and out["sub_rewards"] == {} and out["model_grader_token_usage_per_model"] == {}
    md = out["metadata"]
    assert {"name", "type", "execution_time", "scores", "token_usage", "sampled_model_name", "errors"} <= set(md)
    assert md["name"] == "exact" and md["type"] == "string_check" and md["scores"] == {"exact": 1.0}
    assert md["execution_time"] >= 0 and md["sampled_model_name"] is None and md["token_usage"] is None
    assert set(md["errors"]) == set(ERROR_KINDS) | DETAIL_KEYS
    assert not any(md["errors"][k] for k in ERROR_KINDS)


def test_multi_response_has_sub_rewards_and_token_usage(scripted_judge):
    scripted_judge('{"result": 0.5}')
    spec = {"type": "multi", "name": "m", "graders": {"exact": EQ, "judge": JUDGE}, "calculate_output": "exact + judge"}
    out = run_grader(spec, "4", {"answer": "4"})
    assert out["reward"] == 1.5 and out["sub_rewards"] == {"exact": 1.0, "judge": 0.5}
    assert out["metadata"]["scores"] == {"exact": 1.0, "judge": 0.5}
    assert out["model_grader_token_usage_per_model"] == {"judge-model": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    assert out["metadata"]["token_usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert out["metadata"]["sampled_model_name"] == "judge-model"


def _endpoint(url):
    g = build({"type": "endpoint", "url": url})
    g.backoff_s = 0.0
    return g


# (flag, how to produce it): spec, sample, item, extra run_grader kwargs, judge replies
FLAG_CASES = {
    "formula_parse_error": lambda: dict(spec=None, grader=MultiGrader({"type": "multi", "graders": {"a": EQ}, "calculate_output": "a +"}),
                                        sample="4", item={"answer": "4"}),
    "invalid_variable_error": lambda: dict(spec={**EQ, "reference": "{{item.nope}}"}, sample="4", item={}),
    "model_grader_parse_error": lambda: dict(spec=JUDGE, sample="x", judge=["no number here"]),
    "model_grader_refusal_error": lambda: dict(spec=JUDGE, sample="x", judge=["I'm sorry, I can't help with that."]),
    "model_grader_server_error": lambda: dict(spec=JUDGE, sample="x", judge=[ConnectionError("judge is down")]),
    "other_error": lambda: dict(spec={"type": "multi", "graders": {"a": EQ}, "calculate_output": "1 / (a - 1)"}, sample="4", item={"answer": "4"}),
    "python_grader_runtime_error": lambda: dict(spec={"type": "python", "source": "def grade(s, i):\n    return None\n"}, sample="x"),
    "python_grader_server_error": lambda: dict(spec={"type": "python", "source": "import os\ndef grade(s, i):\n    os._exit(3)\n"}, sample="x"),
    "sample_parse_error": lambda: dict(spec=EQ, sample="not json", item={"answer": "x"},
                                       response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}),
    "truncated_observation_error": lambda: dict(spec=None, grader=_endpoint("http://127.0.0.1:9/g"), sample="x" * (MAX_PAYLOAD_BYTES + 1)),
    "unresponsive_reward_error": lambda: dict(spec=None, grader=_endpoint("http://127.0.0.1:9/g"), sample="x"),
}


def test_every_error_kind_is_covered():
    assert set(FLAG_CASES) == set(ERROR_KINDS)


@pytest.mark.parametrize("flag", sorted(FLAG_CASES))
def test_each_error_flag(flag, scripted_judge, python_sandbox):
    case = FLAG_CASES[flag]()
    if "judge" in case:
        scripted_judge(*case["judge"])
    spec = case["spec"] if case["spec"] is not None else case["grader"].spec
    out = run_grader(spec, case["sample"], case.get("item"), response_format=case.get("response_format"), grader=case.get("grader"))
    errors = out["metadata"]["errors"]
    assert errors[flag] is True
    assert [k for k in ERROR_KINDS if errors[k]] == [flag]
    assert out["reward"] is None  # unscored is not zero
    assert out["metadata"]["error_details"]
    if flag == "python_grader_runtime_error":
        assert "returned NoneType" in errors["python_grader_runtime_error_details"] or "got NoneType" in errors["python_grader_runtime_error_details"]
    if flag == "python_grader_server_error":
        assert errors["python_grader_server_error_type"] == "crash"
    if flag == "model_grader_server_error":
        assert "judge is down" in errors["model_grader_server_error_details"]


def test_response_format_fills_output_json():
    spec = {**EQ, "input": "{{sample.output_json.answer}}"}
    assert run_grader(spec, '{"answer": "4"}', {"answer": "4"}, response_format={"type": "json_object"})["reward"] == 1.0


def test_invalid_specs_raise_with_every_problem():
    with pytest.raises(RftError) as ei:
        run_grader({"type": "string_check", "input": "{{x}}", "operation": "is"}, "4")
    text = str(ei.value)
    assert "reference" in text and "operation must be one of" in text and "bad template variable" in text
    with pytest.raises(RftError):
        run_grader(EQ, 4)


def test_passed_reflects_pass_threshold():
    spec = {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "abce", "evaluation_metric": "fuzzy_match",
            "pass_threshold": 0.7}
    out = run_grader(spec, "abcd")
    assert out["reward"] == pytest.approx(0.75) and out["metadata"]["passed"] is True


def test_grade_file_summary(python_sandbox):
    rows = [{"answer": str(i)} for i in range(10)] + [{}]
    samples = [str(i) if i % 2 == 0 else "wrong" for i in range(10)] + ["0"]
    s = grade_file(EQ, rows, samples)
    assert s["n"] == 11 and s["scored"] == 10 and s["unscored"] == 1
    assert s["mean_score"] == pytest.approx(0.5)
    assert s["error_rates"]["invalid_variable_error"] == pytest.approx(1 / 11)
    assert set(s["error_rates"]) == set(ERROR_KINDS)
    lat = sorted(r["latency_s"] for r in s["rows"])
    assert s["latency_p95_s"] == lat[10]  # nearest rank: ceil(0.95 * 11) = 11th
    assert s["latency_mean_s"] == pytest.approx(sum(lat) / 11) and s["latency_mean_s"] > 0
    assert [r["score"] for r in s["rows"][:4]] == [1.0, 0.0, 1.0, 0.0] and s["rows"][10]["error"] == "invalid_variable_error"
    py = grade_file({"type": "python", "source": "def grade(s, i):\n    return float(s['output_text'] == i['answer'])\n"}, rows[:10], samples[:10])
    assert py["mean_score"] == pytest.approx(0.5) and py["unscored"] == 0


def test_grade_file_pairs_rows_and_samples():
    with pytest.raises(RftError, match="must pair up"):
        grade_file(EQ, [{}], ["a", "b"])


def test_grade_file_pass_rate_and_sample_parse_errors():
    spec = {"type": "text_similarity", "input": "{{sample.output_json.a}}", "reference": "{{item.a}}", "evaluation_metric": "fuzzy_match",
            "pass_threshold": 0.9}
    s = grade_file(spec, [{"a": "abc"}] * 3, ['{"a": "abc"}', '{"a": "xyz"}', "oops"], response_format={"type": "json_object"})
    assert s["pass_rate"] == pytest.approx(0.5)
    assert s["error_rates"]["sample_parse_error"] == pytest.approx(1 / 3)
