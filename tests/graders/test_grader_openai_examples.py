"""Grader JSON as published in OpenAI's graders guide validates and runs unchanged (score_model via a fake judge).

The objects below are copied from the guide's examples (string_check, text_similarity, score_model,
python, multi) and the field lists of shared/reference/openai-rft-and-peers.md section 1; only the
surrounding Python is ours.
"""

import json

import pytest

from rft.graders import build, make_sample, validate
from rft.graders.run import run_grader, validate_reinforcement_grader

STRING_CHECK = json.loads("""
{
  "type": "string_check",
  "name": "Example string check grader",
  "input": "{{sample.output_text}}",
  "reference": "{{item.label}}",
  "operation": "eq"
}
""")

TEXT_SIMILARITY = json.loads("""
{
  "type": "text_similarity",
  "name": "Example text similarity grader",
  "input": "{{sample.output_text}}",
  "reference": "{{item.label}}",
  "pass_threshold": 0.8,
  "evaluation_metric": "fuzzy_match"
}
""")

SCORE_MODEL = json.loads("""
{
  "type": "score_model",
  "name": "Example score model grader",
  "input": [
    {
      "role": "user",
      "content": "Score how close the reference answer is to the model answer. Score 1.0 if they are the same and 0.0 if they are different. Return just a floating point score\\n\\nReference answer: {{item.label}}\\n\\nModel answer: {{sample.output_text}}"
    }
  ],
  "model": "o4-mini-2025-04-16",
  "sampling_params": {
    "temperature": 1,
    "top_p": 1,
    "seed": 42,
    "max_completions_tokens": 32768,
    "reasoning_effort": "medium"
  }
}
""")

PYTHON = json.loads("""
{
  "type": "python",
  "source": "def grade(sample, item):\\n    return 1.0",
  "image_tag": "2025-05-08"
}
""")

MULTI = json.loads("""
{
  "type": "multi",
  "graders": {
    "name": {
      "name": "name_grader",
      "type": "text_similarity",
      "input": "{{sample.output_json.name}}",
      "reference": "{{item.name}}",
      "evaluation_metric": "fuzzy_match",
      "pass_threshold": 0.9
    },
    "email": {
      "name": "email_grader",
      "type": "string_check",
      "input": "{{sample.output_json.email}}",
      "reference": "{{item.email}}",
      "operation": "eq"
    }
  },
  "calculate_output": "(name + email) / 2"
}
""")

MULTI_COMPLIANCE = json.loads("""
{
  "type": "multi",
  "name": "compliance",
  "graders": {
    "compliant": {
      "type": "label_model",
      "name": "compliance_label",
      "model": "gpt-4o-2024-08-06",
      "input": [
        {"role": "developer", "content": "Label the assistant answer as compliant or non_compliant with the policy."},
        {"role": "user", "content": "Policy: {{item.policy}}\\nAnswer: {{sample.output_text}}"}
      ],
      "labels": ["compliant", "non_compliant"],
      "passing_labels": ["compliant"]
    },
    "explanation": {
      "type": "score_model",
      "name": "explanation_quality",
      "model": "gpt-4o-2024-08-06",
      "input": [
        {"type": "message", "role": "user", "content": "Rate the explanation from 0 to 1: {{sample.output_text}}"}
      ],
      "range": [0, 1]
    }
  },
  "calculate_output": "0.5 * compliant + 0.5 * explanation"
}
""")


@pytest.mark.parametrize("spec", [STRING_CHECK, TEXT_SIMILARITY, SCORE_MODEL, PYTHON, MULTI, MULTI_COMPLIANCE],
                         ids=["string_check", "text_similarity", "score_model", "python", "multi", "multi_label_model"])
def test_validates_unchanged(spec):
    assert validate(spec) == []
    assert validate_reinforcement_grader(spec) == []


def test_string_check_example():
    g = build(STRING_CHECK)
    assert g.grade(make_sample("positive"), {"label": "positive"}).score == 1.0
    assert g.grade(make_sample("Positive"), {"label": "positive"}).score == 0.0


def test_text_similarity_example():
    out = run_grader(TEXT_SIMILARITY, "The Eiffel Tower", {"label": "the Eiffel tower"})
    assert 0.8 < out["reward"] < 1.0 and out["metadata"]["passed"] is True


def test_score_model_example(scripted_judge, grader_context):
    judge = scripted_judge("1.0")
    out = run_grader(SCORE_MODEL, "Paris", {"label": "Paris"}, context=grader_context)
    assert out["reward"] == 1.0 and out["metadata"]["sampled_model_name"] == "o4-mini-2025-04-16"
    prompt = judge.calls[0][0][-1]["content"]
    assert "Reference answer: Paris\n\nModel answer: Paris" in prompt
    assert judge.calls[0][1].seed == 42


def test_python_example(python_sandbox, grader_context):
    assert run_grader(PYTHON, "anything", context=grader_context)["reward"] == 1.0


def test_multi_example():
    item = {"name": "Jane Doe", "email": "jane@example.com"}
    out = run_grader(MULTI, '{"name": "Jane Doe", "email": "jane@example.com"}', item)
    assert out["reward"] == 1.0 and out["sub_rewards"] == {"name": 1.0, "email": 1.0}
    out = run_grader(MULTI, '{"name": "Jane Doe", "email": "jd@example.com"}', item)
    assert out["reward"] == 0.5


def test_multi_with_label_model_example(scripted_judge, grader_context):
    scripted_judge('{"result": "compliant"}', '{"result": 0.6}')
    out = run_grader(MULTI_COMPLIANCE, "I can't share that account's data.", {"policy": "never share account data"}, context=grader_context)
    assert out["sub_rewards"] == {"compliant": 1.0, "explanation": 0.6}
    assert out["reward"] == pytest.approx(0.8)
