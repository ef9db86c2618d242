"""Run a grader the way OpenAI's `graders/run` does, on one sample or a whole file.

What
----
- `run_grader(spec, model_sample, item=None, *, response_format=None, context=None)` validates the grader (raising
  `RftError` with every problem, like `graders/validate`), grades one sample and returns OpenAI's run
  response: `{reward, sub_rewards, model_grader_token_usage_per_model, metadata: {name, type,
  execution_time, scores, token_usage, sampled_model_name, errors: {...}}}`. `metadata.errors` has every
  flag of `rft.types.ERROR_KINDS` (True for the one that applies) plus OpenAI's detail keys
  `model_grader_server_error_details`, `python_grader_runtime_error_details`, `python_grader_server_error_type`.
- `grade_file(spec, data_rows, sample_texts)` grades sample_texts[i] against data_rows[i] concurrently and
  summarises: mean score over scored rows, unscored fraction, the rate of every error flag, latency mean and
  p95, pass rate when the grader has a `pass_threshold`, and per-row results.
- `validate_reinforcement_grader(spec)` adds the fine-tuning-job rule that `label_model` is allowed only
  inside `multi` (the graders API accepts it alone).

Differences from OpenAI, on purpose
-----------------------------------
- The response keeps OpenAI's shape exactly: `reward`, every `sub_rewards` value and every `metadata.scores`
  value are numbers, 0.0 where grading failed, with the error flag set (as OpenAI's graders/run reports a
  failed grade). That 0.0 exists only in this response: inside rft (`Grader.grade` -> `GradeResult`, which
  training, evals and `grade_file` use) an unscored sample has `score=None`, gets zero advantage and counts
  in the unscored fraction; it is never a reward of 0. rft extensions in `metadata`: `scored` (False when the
  reward is that placeholder 0.0, with `sub_scored` per multi key), `error_details` (the message for any error
  kind), `passed` (for graders with `pass_threshold`) and `latency_s`.
- `response_format`: when given (`{"type": "json_schema" | "json_object", ...}`), a sample that is not JSON is
  unscored with `sample_parse_error` before the grader runs; `output_json` is filled whenever the sample
  parses as JSON either way. The schema itself is not enforced.

How to run: `python -c "from rft.graders.run import run_grader; print(run_grader({'type': 'string_check',
'input': '{{sample.output_text}}', 'reference': '{{item.answer}}', 'operation': 'eq'}, '4', {'answer': '4'}))"`.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from rft.errors import Problem, RftError
from rft.types import ERROR_KINDS, GradeResult

ONLY_INSIDE_MULTI = ("label_model",)


def validate_reinforcement_grader(spec: Any, where: str = "grader", *, context=None) -> list[Problem]:
    """Problems of a grader used as `method.reinforcement.grader` of a fine-tuning job (`context`: a
    `GraderContext`, e.g. with the job's `rft.network.allow_private_hosts`)."""
    from rft.graders import validate

    problems = validate(spec, where, context=context)
    if isinstance(spec, dict) and spec.get("type") in ONLY_INSIDE_MULTI:
        problems.append(Problem(f"a {spec['type']} grader can be used in a fine-tuning job only inside a multi grader "
                                "(wrap it: {\"type\": \"multi\", \"graders\": {\"label\": ...}, \"calculate_output\": \"label\"})",
                                field=f"{where}.type"))
    return problems


def _sample_for(model_sample: str, response_format: dict | None) -> tuple[dict, str | None]:
    """The sample namespace, and a sample_parse_error message when a JSON response_format is not met (the same
    rule training and evaluation apply: `templating.make_sample`)."""
    from rft.graders.templating import make_sample

    sample = make_sample(model_sample, response_format=response_format)
    return sample, sample.get("parse_error")


def _usage(grader) -> dict[str, dict[str, int]]:
    return {m: dict(u) for m, u in (getattr(grader, "usage", None) or {}).items()}


def _judge_models(grader) -> list[str]:
    subs = getattr(grader, "graders", None)
    if isinstance(subs, dict):
        return [m for g in subs.values() for m in _judge_models(g)]
    return [grader.spec["model"]] if grader.type in ("score_model", "label_model") else []


def errors_block(result: GradeResult) -> dict[str, Any]:
    errors: dict[str, Any] = {k: False for k in ERROR_KINDS}
    errors.update(model_grader_server_error_details=None, python_grader_runtime_error_details=None,
                  python_grader_server_error_type=None)
    if result.error:
        errors[result.error if result.error in ERROR_KINDS else "other_error"] = True
        if result.error == "model_grader_server_error":
            errors["model_grader_server_error_details"] = result.details
        elif result.error == "python_grader_runtime_error":
            errors["python_grader_runtime_error_details"] = result.details
        elif result.error == "python_grader_server_error":
            errors["python_grader_server_error_type"] = (result.details or "").split(":", 1)[0] or "unknown"
    return errors


def response_for(grader, result: GradeResult, *, usage: dict, execution_time: float) -> dict:
    """The OpenAI graders/run response for one GradeResult."""
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for u in usage.values():
        for k in total:
            total[k] += u.get(k, 0)
    models = _judge_models(grader)
    is_multi = grader.type == "multi"
    passed = grader.passed(result.score) if hasattr(grader, "passed") else None
    # OpenAI's shape: numbers only; an unscored grade reads 0.0 here and `errors` (and `scored`) say it failed.
    reward = result.score if result.scored else 0.0
    subs = {k: (v if v is not None else 0.0) for k, v in result.sub_scores.items()} if is_multi else {}
    return {
        "reward": reward,
        "sub_rewards": subs,
        "model_grader_token_usage_per_model": usage,
        "metadata": {
            "name": grader.name,
            "type": grader.type,
            "execution_time": execution_time,
            "scores": dict(subs) if is_multi else {grader.name: reward},
            "token_usage": total if usage else None,
            "sampled_model_name": models[0] if len(models) == 1 else (",".join(models) or None),
            "errors": errors_block(result),
            "scored": result.scored,
            **({"sub_scored": {k: v is not None for k, v in result.sub_scores.items()}} if is_multi else {}),
            "error_details": result.details if result.error else None,
            "passed": passed,
            "latency_s": result.latency_s,
        },
    }


def run_grader(spec: dict, model_sample: str, item: dict | None = None, *, response_format: dict | None = None,
               grader=None, context=None) -> dict:
    """Validate `spec`, grade `model_sample` against `item`, return OpenAI's graders/run response (see module doc).
    `grader`: an already built grader for `spec` (e.g. with an injected judge); `context`: the `GraderContext`
    to build it with (e.g. `GraderContext(allow_private_hosts=(...))` from `--allow-private-host`)."""
    from rft.graders import build

    if not isinstance(model_sample, str):
        raise RftError(f"model_sample must be a string, got {type(model_sample).__name__}")
    if item is not None and not isinstance(item, dict):
        raise RftError(f"item must be a JSON object, got {type(item).__name__}")
    g = grader or build(spec, context=context)
    t0 = time.perf_counter()
    sample, parse_error = _sample_for(model_sample, response_format)
    before = _usage(g)
    if parse_error:
        result = GradeResult(None, "sample_parse_error", parse_error, latency_s=time.perf_counter() - t0, name=g.name)
    else:
        result = g.grade(sample, item or {})
    after = _usage(g)
    usage = {m: {k: v - before.get(m, {}).get(k, 0) for k, v in u.items()} for m, u in after.items()}
    return response_for(g, result, usage=usage, execution_time=time.perf_counter() - t0)


def _p95(xs: list[float]) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(0.95 * len(s)) - 1))]  # nearest-rank


def grade_file(spec: dict, data_rows: list[dict], sample_texts: list[str], *, response_format: dict | None = None,
               max_workers: int = 4, grader=None, context=None) -> dict:
    """Grade many samples; returns a summary with per-row results (see module doc)."""
    from rft.graders import build, grade_many

    if len(data_rows) != len(sample_texts):
        raise RftError(f"{len(data_rows)} data rows but {len(sample_texts)} samples; they must pair up one to one")
    g = grader or build(spec, context=context)
    t0 = time.perf_counter()
    samples, results_pre = [], {}
    for i, text in enumerate(sample_texts):
        s, err = _sample_for(text, response_format)
        samples.append(s)
        if err:
            results_pre[i] = GradeResult(None, "sample_parse_error", err, name=g.name)
    todo = [i for i in range(len(samples)) if i not in results_pre]
    graded = grade_many(g, [samples[i] for i in todo], [data_rows[i] for i in todo], max_workers=max_workers)
    results = dict(results_pre)
    results.update(zip(todo, graded))
    ordered = [results[i] for i in range(len(samples))]
    n = len(ordered)
    scored = [r.score for r in ordered if r.scored]
    lat = [r.latency_s for r in ordered]
    summary = {
        "grader": {"name": g.name, "type": g.type},
        "n": n,
        "scored": len(scored),
        "unscored": n - len(scored),
        "unscored_frac": (n - len(scored)) / n if n else 0.0,
        "mean_score": sum(scored) / len(scored) if scored else None,
        "error_rates": {k: (sum(r.error == k for r in ordered) / n if n else 0.0) for k in ERROR_KINDS},
        "latency_mean_s": sum(lat) / n if n else 0.0,
        "latency_p95_s": _p95(lat),
        "seconds": time.perf_counter() - t0,
        "model_grader_token_usage_per_model": _usage(g),
        "rows": [
            {"index": i, "score": r.score, "error": r.error, "details": r.details,
             "sub_scores": dict(r.sub_scores), "latency_s": r.latency_s}
            for i, r in enumerate(ordered)
        ],
    }
    if getattr(g, "pass_threshold", None) is not None:
        passes = [g.passed(r.score) for r in ordered if r.scored]
        summary["pass_rate"] = sum(passes) / len(passes) if passes else None
    return summary


__all__ = ["ONLY_INSIDE_MULTI", "errors_block", "grade_file", "response_for", "run_grader", "validate_reinforcement_grader"]
