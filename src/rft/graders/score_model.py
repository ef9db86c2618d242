"""OpenAI model graders: `score_model` (a judge model gives a number) and `label_model` (a judge picks a label).

What
----
`{type: "score_model", name, model, input: [messages], range?: [min, max] (default [0, 1]), sampling_params?,
pass_threshold?}` renders every message's content as a template, asks the judge, and parses its reply:
`{"result": <number>}` (the whole reply, inside a ```json fence, or embedded in text; extra keys such as
`steps` are fine) or a bare number. The number is clamped to `range`. Anything else is unscored with
`model_grader_parse_error`; a refusal (the API's `refusal` field, or a reply that reads as one and holds no
result) is `model_grader_refusal_error`; the judge being unreachable, failing or erroring is
`model_grader_server_error`.

`{type: "label_model", name, model, input, labels, passing_labels}` parses the reply to one of `labels`
(`{"result": "<label>"}` / `{"label": ...}`, the whole reply, or the only label named in it; case-insensitive)
and scores 1.0 when it is in `passing_labels`, else 0.0. OpenAI allows it in RFT only inside `multi`
(`rft.graders.run.validate_reinforcement_grader` enforces that for training jobs).

The judge (`model`) comes from the `GraderContext`'s `judges` (`rft.graders.judges.Judges`), which gives:
- a local model reference (`smollm2-135m-instruct`, a model directory, `ckpt:...`): one engine per reference per
  context, loaded through `rft.engine.load_engine`;
- a remote OpenAI-compatible server, written `http(s)://host:port/v1/<model>`: POST `/v1/chat/completions`
  through the context's HTTP client, API key read at call time from the environment variable named in the
  spec's `api_key_env` (rft extension; the key itself is never stored in the spec, logs or lineage);
- whatever was mapped with `Judges.set(model, judge)` or `Judges({"*": judge})`: any object with
  `complete(messages, params) -> JudgeReply`. Tests use a scripted fake; a job can map OpenAI model names
  (`gpt-4o-2024-08-06`) to a local judge this way.

Simplified
----------
- OpenAI constrains the judge with structured outputs; rft instead appends an instruction describing the
  JSON to the system message (a new system message when there is none) and parses leniently.
- `developer` messages are sent as `system`. Text content parts (`input_text`, `output_text`, plain text)
  are joined; image and audio parts are rejected at validation (the local judges are text-only).
- `sampling_params`: `temperature` (default 0: greedy, so grading is repeatable), `top_p`, `seed`,
  `max_completions_tokens` (also spelled `max_completion_tokens`; default 512); `reasoning_effort` is
  accepted and ignored.
- Refusal detection without the API field is a phrase heuristic, applied only when no result parses.
- `pass_threshold` does not change the reward; it decides `passed` in `rft grader run` output and evals.

How to run: `python -c "from rft.graders.score_model import *; from rft.graders import build, make_sample;
g = build({'type': 'score_model', 'model': 'smollm2-135m-instruct', 'input': [{'role': 'user', 'content':
'Rate: {{sample.output_text}}'}]}); print(g.grade(make_sample('Paris'), {}))"` (loads the embedded model).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading

from rft.errors import Problem, RftError, did_you_mean
from rft.graders.base import DEFAULT_CONTEXT, Grader, GraderError, register_grader
from rft.graders.judges import DEFAULT_MAX_TOKENS, Judge, JudgeParams, JudgeReply, JudgeServerError
from rft.graders.templating import check, render

ROLES = ("system", "developer", "user", "assistant")
TEXT_PART_TYPES = ("input_text", "output_text", "text")
SAMPLING_KEYS = ("seed", "top_p", "temperature", "max_completions_tokens", "max_completion_tokens", "reasoning_effort")


# ----------------------------------------------------------------------------------------------------------
# Prompt building and reply parsing
# ----------------------------------------------------------------------------------------------------------

def content_text(content) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if isinstance(p, str):
            parts.append(p)
        else:
            parts.append(p.get("text", ""))
    return "\n".join(parts)


def render_messages(messages: list[dict], sample: dict, item: dict, instruction: str) -> list[dict]:
    out = [{"role": "system" if m["role"] == "developer" else m["role"],
            "content": render(content_text(m["content"]), sample, item)} for m in messages]
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": out[0]["content"].rstrip() + "\n\n" + instruction}
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_REFUSAL = re.compile(
    r"\b(I\s*(?:'m| am)\s+(?:sorry|unable|not able)|I\s+(?:can(?:'|no)t|cannot|won't|will not)\s+"
    r"(?:help|assist|comply|provide|do|grade|evaluate|score|rate)|As an AI\b)", re.I)


def _json_candidates(text: str):
    """Every JSON value found in the reply: the whole text, fenced blocks, then objects embedded in prose."""
    stripped = text.strip()
    try:
        yield json.loads(stripped)
    except ValueError:
        pass
    for m in _FENCE.finditer(text):
        try:
            yield json.loads(m.group(1).strip())
        except ValueError:
            pass
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        yield obj


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_score(text: str) -> float | None:
    """The judge's number, or None when the reply holds none in an accepted form."""
    stripped = text.strip()
    if _NUMBER.match(stripped):
        v = float(stripped)
        return v if math.isfinite(v) else None
    for obj in _json_candidates(text):
        if _is_number(obj):
            return float(obj)
        if isinstance(obj, dict) and _is_number(obj.get("result")):
            return float(obj["result"])
    return None


def parse_label(text: str, labels: list[str]) -> str | None:
    by_lower = {lab.lower(): lab for lab in labels}
    for obj in _json_candidates(text):
        if isinstance(obj, dict):
            for key in ("result", "label"):
                v = obj.get(key)
                if isinstance(v, str) and v.strip().lower() in by_lower:
                    return by_lower[v.strip().lower()]
        elif isinstance(obj, str) and obj.strip().lower() in by_lower:
            return by_lower[obj.strip().lower()]
    bare = text.strip().strip("`'\"*").rstrip(".").strip().lower()
    if bare in by_lower:
        return by_lower[bare]
    found = {lab for lab in labels if re.search(r"(?<![\w-])" + re.escape(lab) + r"(?![\w-])", text, re.I)}
    if len(found) == 1:
        return found.pop()
    return None


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text))


# ----------------------------------------------------------------------------------------------------------
# Graders
# ----------------------------------------------------------------------------------------------------------

def _check_messages(spec: dict, where: str) -> list[Problem]:
    msgs = spec.get("input")
    if not isinstance(msgs, list) or not msgs:
        return [Problem("input must be a non-empty list of messages {role, content}", field=f"{where}.input")]
    problems = []
    for i, m in enumerate(msgs):
        f = f"{where}.input[{i}]"
        if not isinstance(m, dict):
            problems.append(Problem("a message must be an object {role, content}", field=f))
            continue
        for k in m:
            if k not in ("role", "content", "type"):
                problems.append(Problem(f"unknown message field '{k}'{did_you_mean(k, ['role', 'content', 'type'])}", field=f"{f}.{k}"))
        if m.get("type", "message") != "message":
            problems.append(Problem(f"type must be 'message', got {m.get('type')!r}", field=f"{f}.type"))
        if m.get("role") not in ROLES:
            problems.append(Problem(f"role must be one of {', '.join(ROLES)}, got {m.get('role')!r}", field=f"{f}.role"))
        content = m.get("content")
        if isinstance(content, str):
            problems += check(content, f"{f}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                pf = f"{f}.content[{j}]"
                if isinstance(part, str):
                    problems += check(part, pf)
                elif isinstance(part, dict) and part.get("type", "input_text") in TEXT_PART_TYPES and isinstance(part.get("text"), str):
                    problems += check(part["text"], f"{pf}.text")
                elif isinstance(part, dict) and part.get("type") in ("input_image", "input_audio"):
                    problems.append(Problem(f"{part['type']} content is not supported: rft's judges are text-only", field=pf))
                else:
                    problems.append(Problem("a content part must be {type: input_text|output_text, text}", field=pf))
        else:
            problems.append(Problem("content must be a string or a list of content parts", field=f"{f}.content"))
    return problems


def _check_model(spec: dict, where: str) -> list[Problem]:
    problems = []
    model = spec.get("model")
    if "model" in spec and (not isinstance(model, str) or not model.strip()):
        problems.append(Problem("model must be a model reference or an http(s)://host/v1/<model> URL", field=f"{where}.model"))
    env = spec.get("api_key_env")
    if "api_key_env" in spec:
        if not isinstance(env, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env):
            problems.append(Problem("api_key_env must name an environment variable (the key itself never goes in the spec)",
                                    field=f"{where}.api_key_env"))
        elif env not in os.environ:
            problems.append(Problem(f"the environment variable {env} is not set", field=f"{where}.api_key_env"))
    sp = spec.get("sampling_params")
    if "sampling_params" in spec:
        if not isinstance(sp, dict):
            problems.append(Problem("sampling_params must be an object", field=f"{where}.sampling_params"))
        else:
            for k, v in sp.items():
                f = f"{where}.sampling_params.{k}"
                if k not in SAMPLING_KEYS:
                    problems.append(Problem(f"unknown sampling parameter '{k}'{did_you_mean(k, list(SAMPLING_KEYS))}", field=f))
                elif k == "reasoning_effort":
                    if v is not None and v not in ("minimal", "low", "medium", "high", "default"):
                        problems.append(Problem("reasoning_effort must be low, medium or high", field=f))
                elif v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    problems.append(Problem(f"must be a number, got {v!r}", field=f))
                elif k in ("max_completions_tokens", "max_completion_tokens") and v is not None and (v < 1 or v != int(v)):
                    problems.append(Problem("must be a positive integer", field=f))
                elif k == "temperature" and v is not None and v < 0:
                    problems.append(Problem("must be >= 0", field=f))
                elif k == "top_p" and v is not None and not 0 < v <= 1:
                    problems.append(Problem("must be in (0, 1]", field=f))
    return problems


class _ModelGrader(Grader):
    """Shared by score_model and label_model: judge lookup, prompting, usage accounting."""

    def __init__(self, spec, *, judge: Judge | None = None, context=None):
        super().__init__(spec, context=context)
        self._judge = judge
        self._usage_lock = threading.Lock()
        self.usage: dict[str, dict[str, int]] = {}  # judge model -> token counts (model_grader_token_usage_per_model)

    @property
    def model(self) -> str:
        return self.spec["model"]

    @property
    def judge(self) -> Judge:
        return self._judge or self.context.judges.get(self.model, self.spec.get("api_key_env"), self.context.http)

    def params(self) -> JudgeParams:
        sp = self.spec.get("sampling_params") or {}
        max_tokens = sp.get("max_completions_tokens") or sp.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        return JudgeParams(
            temperature=float(sp["temperature"]) if sp.get("temperature") is not None else 0.0,
            top_p=float(sp["top_p"]) if sp.get("top_p") is not None else 1.0,
            max_tokens=int(max_tokens),
            seed=int(sp["seed"]) if sp.get("seed") is not None else None,
        )

    def instruction(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def ask(self, sample: dict, item: dict) -> JudgeReply:
        messages = render_messages(self.spec["input"], sample, item, self.instruction())
        try:
            reply = self.judge.complete(messages, self.params())
        except JudgeServerError as e:
            raise GraderError("model_grader_server_error", str(e)) from None
        except (GraderError, RftError):
            raise
        except Exception as e:  # a judge backend failing in any other way is still the judge's failure
            raise GraderError("model_grader_server_error", f"the judge failed: {type(e).__name__}: {e}") from None
        with self._usage_lock:
            u = self.usage.setdefault(self.model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
            u["prompt_tokens"] += reply.prompt_tokens
            u["completion_tokens"] += reply.completion_tokens
            u["total_tokens"] += reply.prompt_tokens + reply.completion_tokens
        if reply.refusal:
            raise GraderError("model_grader_refusal_error", f"the judge refused: {reply.refusal[:500]}")
        return reply

    def _unparsed(self, reply: JudgeReply, expected: str) -> GraderError:
        shown = reply.text.strip()
        shown = shown if len(shown) <= 500 else shown[:500] + "..."
        if looks_like_refusal(reply.text):
            return GraderError("model_grader_refusal_error", f"the judge refused: {shown!r}")
        return GraderError("model_grader_parse_error", f"expected {expected}; the judge said: {shown!r}")


@register_grader("score_model")
class ScoreModelGrader(_ModelGrader):
    type = "score_model"
    allowed_fields = {"type", "name", "model", "input", "range", "sampling_params", "pass_threshold", "api_key_env"}
    required_fields = {"type", "model", "input"}

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context) + _check_model(spec, where)
        if "input" in spec:
            problems += _check_messages(spec, where)
        if "range" in spec:
            r = spec["range"]
            if (not isinstance(r, list) or len(r) != 2 or not all(_is_number(x) for x in r) or r[0] >= r[1]):
                problems.append(Problem(f"range must be [min, max] with min < max, got {r!r}", field=f"{where}.range"))
        if "pass_threshold" in spec and not _is_number(spec["pass_threshold"]):
            problems.append(Problem("pass_threshold must be a number", field=f"{where}.pass_threshold"))
        return problems

    @property
    def range(self) -> tuple[float, float]:
        lo, hi = self.spec.get("range") or (0.0, 1.0)
        return float(lo), float(hi)

    def instruction(self) -> str:
        lo, hi = self.range
        return ("Reply with only a JSON object of the form {\"result\": <number>}, where the number is your score "
                f"from {lo:g} to {hi:g}. You may add a \"steps\" list of {{\"description\", \"conclusion\"}} objects "
                "before the result.")

    def score(self, sample, item):
        reply = self.ask(sample, item)
        value = parse_score(reply.text)
        if value is None:
            raise self._unparsed(reply, '{"result": <number>} or a number')
        lo, hi = self.range
        return min(hi, max(lo, value))


@register_grader("label_model")
class LabelModelGrader(_ModelGrader):
    type = "label_model"
    allowed_fields = {"type", "name", "model", "input", "labels", "passing_labels", "sampling_params", "api_key_env"}
    required_fields = {"type", "model", "input", "labels", "passing_labels"}

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context) + _check_model(spec, where)
        if "input" in spec:
            problems += _check_messages(spec, where)
        labels = spec.get("labels")
        ok_labels = isinstance(labels, list) and labels and all(isinstance(x, str) and x.strip() for x in labels)
        if "labels" in spec and not ok_labels:
            problems.append(Problem("labels must be a non-empty list of non-empty strings", field=f"{where}.labels"))
        elif ok_labels and len({x.lower() for x in labels}) != len(labels):
            problems.append(Problem("labels must be distinct (case-insensitively)", field=f"{where}.labels"))
        passing = spec.get("passing_labels")
        if "passing_labels" in spec:
            if not isinstance(passing, list) or not passing or not all(isinstance(x, str) for x in passing):
                problems.append(Problem("passing_labels must be a non-empty list of strings", field=f"{where}.passing_labels"))
            elif ok_labels:
                for x in passing:
                    if x not in labels:
                        problems.append(Problem(f"passing label {x!r} is not one of labels ({', '.join(labels)})"
                                                f"{did_you_mean(x, labels)}", field=f"{where}.passing_labels"))
        return problems

    def instruction(self) -> str:
        labels = ", ".join(json.dumps(x) for x in self.spec["labels"])
        return f"Reply with only a JSON object of the form {{\"result\": <label>}}, where the label is one of: {labels}."

    def score(self, sample, item):
        reply = self.ask(sample, item)
        label = parse_label(reply.text, self.spec["labels"])
        if label is None:
            raise self._unparsed(reply, f"one of the labels {self.spec['labels']}")
        return 1.0 if label in self.spec["passing_labels"] else 0.0


__all__ = ["LabelModelGrader", "ScoreModelGrader", "looks_like_refusal", "parse_label", "parse_score"]
