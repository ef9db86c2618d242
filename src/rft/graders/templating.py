"""OpenAI grader templates: `{{item.a}}`, `{{item.a.b}}`, `{{item.list[0]}}`, `{{sample.output_text}}`,
`{{sample.output_json.x}}`, `{{sample.output_tools[0].function.name}}`.

Only the `item` and `sample` namespaces exist. A path that does not resolve raises `TemplateError` (an
`RftError`), which graders report as `invalid_variable_error` (unscored), never as an empty string. Values that
are not strings are rendered as JSON (compact), matching how a dict or list would be pasted into a prompt.
Scanning is linear in the template's length (no backtracking regex), and a model output nested too deeply to
parse as JSON simply has no `output_json`. `make_sample(text, response_format=..., output_tools=...)` builds the
`sample` namespace: with a JSON response_format an output that does not parse marks the sample (`parse_error`)
and any `{{sample.*}}` then fails as `sample_parse_error`; `output_tools` holds the parsed tool calls in OpenAI's
shape (rft.engine.tools). Fuzzed in tests/graders/test_fuzz_graders.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rft.errors import Problem, RftError

# The variable is stripped in code: `\{\{\s*([^{}]*?)\s*\}\}` backtracks cubically on "{{" + many spaces (a
# 5,000-space template took a minute to validate).
_TOKEN = re.compile(r"\{\{([^{}]*)\}\}")
_PATH = re.compile(r"^(item|sample)((?:\.[A-Za-z_][A-Za-z0-9_\-]*|\[\d+\]|\[\"[^\"]*\"\]|\['[^']*'\])*)$")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")


class TemplateError(RftError):
    """A template variable could not be resolved (OpenAI: invalid_variable_error)."""

    error_kind = "invalid_variable_error"


class SampleParseError(TemplateError):
    """A template needs `sample.output_json` but the output is not JSON (OpenAI: sample_parse_error)."""

    error_kind = "sample_parse_error"


def variables(template: str) -> list[str]:
    return [m.group(1).strip() for m in _TOKEN.finditer(template)]


def check(template: str, where: str = "template") -> list[Problem]:
    """Static check: every {{...}} is a well-formed item./sample. path."""
    out = []
    for var in variables(template):
        if not _PATH.match(var):
            out.append(
                Problem(f"bad template variable '{{{{{var}}}}}': expected item.<path> or sample.<path>", field=where)
            )
    if template.count("{{") != template.count("}}"):
        out.append(Problem("unbalanced '{{' and '}}' in template", field=where))
    return out


def lookup(path: str, sample: dict, item: dict) -> Any:
    m = _PATH.match(path)
    if not m:
        raise TemplateError(f"bad template variable '{path}'")
    if m.group(1) == "sample" and sample.get("parse_error"):
        # the job asked for JSON (response_format) and the output is not: every sample variable is unusable
        raise SampleParseError(f"'{path}' is not available: {sample['parse_error']}")
    cur: Any = item if m.group(1) == "item" else sample
    walked = m.group(1)
    for step in _STEP.finditer(m.group(2)):
        key, idx, q1, q2 = step.groups()
        if idx is not None:
            if not isinstance(cur, (list, tuple)) or int(idx) >= len(cur):
                raise TemplateError(f"'{walked}[{idx}]' does not exist")
            cur = cur[int(idx)]
            walked += f"[{idx}]"
        else:
            k = key if key is not None else (q1 if q1 is not None else q2)
            if not isinstance(cur, dict) or k not in cur:
                raise TemplateError(f"'{walked}.{k}' does not exist")
            cur = cur[k]
            walked += f".{k}"
            if cur is None and walked == "sample.output_json":
                raise SampleParseError("'sample.output_json' is not available: the output is not JSON")
    return cur


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(template: str, sample: dict, item: dict) -> str:
    """Substitute every {{...}}; raises TemplateError for a variable that does not resolve."""
    return _TOKEN.sub(lambda m: to_text(lookup(m.group(1).strip(), sample, item)), template)


def make_sample(
    output_text: str,
    *,
    output_json: Any = None,
    parse_json: bool = True,
    output_tools: list | None = None,
    extracted: str | None = None,
    finish_reason: str | None = None,
    response_format: dict | None = None,
) -> dict:
    """The `sample` namespace graders see. `output_json` is filled when the text parses as JSON (or given).
    `extracted` is rft's answer extraction (job `rft.extraction`), exposed as `{{sample.extracted}}`.
    With a JSON `response_format` (`json_schema` / `json_object`) the whole text must parse: if it does not,
    `sample["parse_error"]` says why and every `{{sample.*}}` variable then raises `SampleParseError`
    (OpenAI: sample_parse_error, unscored)."""
    parse_error = None
    if output_json is None and (response_format or {}).get("type") in ("json_schema", "json_object"):
        try:
            output_json = json.loads(output_text)
        except (ValueError, RecursionError) as e:  # RecursionError: "[[[[..." nested past the parser's limit
            parse_error = (f"the output is not valid JSON but response_format is {response_format['type']}: "
                           f"{str(e)[:200] or type(e).__name__}")
        parse_json = False
    if output_json is None and parse_json:
        s = output_text.strip()
        if s[:1] in "{[":
            try:
                output_json = json.loads(s)
            except (ValueError, RecursionError):  # RecursionError: "[[[[..." deeper than the parser goes
                output_json = None
    sample: dict[str, Any] = {
        "output_text": output_text,
        "output_json": output_json,
        "output_tools": output_tools or [],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": output_text}}],
    }
    if parse_error is not None:
        sample["parse_error"] = parse_error
    if extracted is not None:
        sample["extracted"] = extracted
    if finish_reason is not None:
        sample["finish_reason"] = finish_reason
    return sample
