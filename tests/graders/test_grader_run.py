"""run_grader (OpenAI graders/run response shape, every error flag) and grade_file summaries."""

import pytest

from rft.errors import RftError
from rft.graders import GraderContext, HttpClient, build
from rft.graders.endpoint import MAX_PAYLOAD_BYTES
from rft.graders.multi import MultiGrader
from rft.graders.retry import Timing
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
    assert md["scored"] is True


def test_multi_response_has_sub_rewards_and_token_usage(scripted_judge, grader_context):
    scripted_judge('{"result": 0.5}')
    spec = {"type": "multi", "name": "m", "graders": {"exact": EQ, "judge": JUDGE}, "calculate_output": "exact + judge"}
    out = run_grader(spec, "4", {"answer": "4"}, context=grader_context)
    assert out["reward"] == 1.5 and out["sub_rewards"] == {"exact": 1.0, "judge": 0.5}
    assert out["metadata"]["scores"] == {"exact": 1.0, "judge": 0.5}
    assert out["model_grader_token_usage_per_model"] == {"judge-model": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    assert out["metadata"]["token_usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert out["metadata"]["sampled_model_name"] == "judge-model"


def _endpoint(url):
    no_waiting = HttpClient(timing=Timing(sleep=lambda s: None))  # retries without sleeping
    return build({"type": "endpoint", "url": url}, context=GraderContext(allow_private_hosts=("127.0.0.1",), http=no_waiting))


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
def test_each_error_flag(flag, scripted_judge, python_sandbox, grader_context):
    case = FLAG_CASES[flag]()
    if "judge" in case:
        scripted_judge(*case["judge"])
    spec = case["spec"] if case["spec"] is not None else case["grader"].spec
    out = run_grader(spec, case["sample"], case.get("item"), response_format=case.get("response_format"), grader=case.get("grader"), context=grader_context)
    errors = out["metadata"]["errors"]
    assert errors[flag] is True
    assert [k for k in ERROR_KINDS if errors[k]] == [flag]
    # OpenAI's shape: reward is always a number, 0.0 with the flag set when grading failed ...
    assert out["reward"] == 0.0 and type(out["reward"]) is float
    assert all(type(v) is float for v in out["metadata"]["scores"].values())
    assert out["metadata"]["scored"] is False and out["metadata"]["error_details"]
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


def test_grade_file_summary(python_sandbox, grader_context):
    rows = [{"answer": str(i)} for i in range(10)] + [{}]
    samples = [str(i) if i % 2 == 0 else "wrong" for i in range(10)] + ["0"]
    s = grade_file(EQ, rows, samples, context=grader_context)
    assert s["n"] == 11 and s["scored"] == 10 and s["unscored"] == 1
    assert s["mean_score"] == pytest.approx(0.5)
    assert s["error_rates"]["invalid_variable_error"] == pytest.approx(1 / 11)
    assert set(s["error_rates"]) == set(ERROR_KINDS)
    lat = sorted(r["latency_s"] for r in s["rows"])
    assert s["latency_p95_s"] == lat[10]  # nearest rank: ceil(0.95 * 11) = 11th
    assert s["latency_mean_s"] == pytest.approx(sum(lat) / 11) and s["latency_mean_s"] > 0
    assert [r["score"] for r in s["rows"][:4]] == [1.0, 0.0, 1.0, 0.0] and s["rows"][10]["error"] == "invalid_variable_error"
    py = grade_file({"type": "python", "source": "def grade(s, i):\n    return float(s['output_text'] == i['answer'])\n"}, rows[:10], samples[:10], context=grader_context)
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


def test_failed_grade_is_zero_in_the_response_but_unscored_inside_rft(python_sandbox, grader_context):
    """Where the two shapes differ: graders/run reports 0.0 + flag; GradeResult (training, evals) keeps None,
    so the sample gets zero advantage and is not averaged in as a wrong answer."""
    import torch

    from rft.algo import compute_advantages
    from rft.graders import grade_many, make_sample

    spec = {"type": "python", "name": "py", "source": "def grade(s, i):\n    return 1e39 if s['output_text'] == 'boom' else float(s['output_text'])\n"}
    out = run_grader(spec, "boom", context=grader_context)
    assert out["reward"] == 0.0 and out["metadata"]["errors"]["python_grader_runtime_error"] is True
    assert "float32" in out["metadata"]["errors"]["python_grader_runtime_error_details"]
    g = build(spec, context=grader_context)
    texts = ["1", "0", "boom", "1"]  # one group of 4
    grades = grade_many(g, [make_sample(t) for t in texts], [{}] * 4)
    assert [r.score for r in grades] == [1.0, 0.0, None, 1.0] and grades[2].error == "python_grader_runtime_error"
    # the training step builds its reward tensor exactly like this (rft.train.loop.train_step)
    rewards = torch.tensor([r.score if r.score is not None else float("nan") for r in grades]).view(1, 4)  # [N, G]
    adv = compute_advantages("grpo", rewards)
    assert torch.isfinite(adv.advantages).all() and adv.advantages[0, 2] == 0.0
    assert adv.advantages[0, 0] > 0 > adv.advantages[0, 1]  # the scored samples still learn
    s = grade_file(spec, [{}] * 4, texts, context=grader_context)
    assert s["unscored"] == 1 and s["mean_score"] == pytest.approx(2 / 3) and s["rows"][2]["score"] is None


def test_multi_sub_rewards_are_numbers_when_a_sub_grader_fails():
    spec = {"type": "multi", "graders": {"exact": EQ, "broken": {**EQ, "reference": "{{item.nope}}"}},
            "calculate_output": "exact + broken"}
    out = run_grader(spec, "4", {"answer": "4"})
    assert out["reward"] == 0.0 and out["sub_rewards"] == {"exact": 1.0, "broken": 0.0}
    assert out["metadata"]["scores"] == {"exact": 1.0, "broken": 0.0}
    assert out["metadata"]["sub_scored"] == {"exact": True, "broken": False}
    assert out["metadata"]["errors"]["invalid_variable_error"] is True
    r = build(spec).grade({"output_text": "4"}, {"answer": "4"})
    assert r.score is None and r.sub_scores == {"exact": 1.0, "broken": None}


def test_deeply_nested_sample_with_a_json_response_format_is_a_parse_error():
    out = run_grader(EQ, "[" * 100_000, {"answer": "x"}, response_format={"type": "json_object"})
    assert out["metadata"]["errors"]["sample_parse_error"] is True and out["reward"] == 0.0
