"""Graders: the reinforcement signal. One grader path serves training rewards, evaluation and `rft grader run`.

Each OpenAI grader type is one module registered by name (`@register_grader`). Import this package to get
every registered type; `build(spec, context=GraderContext(...))` validates and constructs one (the context
carries the network allowlist, sandbox limits and pools, judges, HTTP client: no process globals);
`grade_many` grades a batch. Close a grader when done (it gives back its sandbox pool).

How to run: `python -c "from rft.graders import build, make_sample; print(build({'type': 'string_check', 'input':
'{{sample.output_text}}', 'reference': '4', 'operation': 'eq'}).grade(make_sample('4'), {}))"`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

# Every grader module registers itself on import.
from rft.graders import endpoint, multi, python_grader, reasoning_gym_grader, score_model, string_check, text_similarity  # noqa: F401
from rft.graders.base import (GRADERS, Grader, GraderContext, GraderError, build, load_grader_file, register_grader,
                              reward_problem, spec_sha256, validate)
from rft.graders.httpclient import HttpClient
from rft.graders.judges import Judges
from rft.graders.sandbox import SandboxLimits
from rft.graders.templating import TemplateError, make_sample, render
from rft.types import GradeResult


def grade_many(grader: Grader, samples: list[dict], items: list[dict], *, max_workers: int | None = None) -> list[GradeResult]:
    """Grade samples[i] against items[i]. Graders that wait on I/O (sandbox, HTTP) run concurrently
    (`grader.concurrency` at a time unless max_workers says otherwise); one slow sample never blocks the rest."""
    max_workers = max_workers or getattr(grader, "concurrency", 1)
    if max_workers <= 1 or len(samples) <= 1:
        return [grader.grade(s, it) for s, it in zip(samples, items)]
    with ThreadPoolExecutor(max_workers=max_workers) as ex:
        return list(ex.map(grader.grade, samples, items))


__all__ = [
    "GRADERS", "Grader", "GraderContext", "GraderError", "GradeResult", "HttpClient", "Judges", "SandboxLimits",
    "TemplateError", "build", "grade_many", "load_grader_file", "make_sample", "register_grader", "render",
    "reward_problem", "spec_sha256", "validate",
]
