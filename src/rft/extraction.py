"""Answer extraction: the layer between a completion's text and its grader.

With `rft.extraction.pattern` set, the first or last regex match of the completion is exposed to graders as
`{{sample.extracted}}` (group 1 when the pattern has a group). No match gives the empty string: the model did
not produce an answer, which is a wrong answer (0), not an unscored one. `sample.output_text` is never
changed, so OpenAI graders keep their exact semantics.
`sample_from_text` also fills `output_json` (strictly, under a JSON response_format: an unparsable output is a
`sample_parse_error`) and `output_tools` (the tool calls, when the prompt offered tools).
Simplified: one pattern per job, applied to the whole text (no per-grader patterns, no JSON-path extraction).
How to run: `python -c "from rft.config import ExtractionConfig as E; from rft.extraction import extract; print(extract('so 4, then 5', E(pattern='[0-9]+')))"`.
"""

from __future__ import annotations

import re
from functools import lru_cache

from rft.config import ExtractionConfig
from rft.engine.tools import parse_tool_calls
from rft.graders.templating import make_sample


@lru_cache(maxsize=64)
def _compile(pattern: str):
    return re.compile(pattern)


def extract(text: str, cfg: ExtractionConfig) -> str | None:
    if not cfg.pattern:
        return None
    rx = _compile(cfg.pattern)
    matches = list(rx.finditer(text))
    if not matches:
        return ""
    m = matches[0] if cfg.occurrence == "first" else matches[-1]
    return m.group(1) if rx.groups else m.group(0)


def sample_from_text(text: str, cfg: ExtractionConfig, *, finish_reason: str | None = None,
                     response_format: dict | None = None, tools: list | None = None) -> dict:
    """The grader's `sample` namespace for a completion's text, with `extracted` set by `cfg`.

    response_format: the job's (or request's) OpenAI response_format; with a JSON type the whole text must parse,
    else the sample is marked and graders report `sample_parse_error` (counted per step as
    `errors/sample_parse_error`). tools: the tools the prompt offered; when given, tool calls in the text are
    parsed into `output_tools` (OpenAI's shape, see rft.engine.tools)."""
    calls = parse_tool_calls(text)[1] if tools else None
    return make_sample(text, extracted=extract(text, cfg), finish_reason=finish_reason,
                       response_format=response_format, output_tools=calls)
