"""Graders: the reinforcement signal. One grader path serves training rewards, evaluation and `rft grader run`.

Each OpenAI grader type is one module registered by name (`@register_grader`). Import this package to get
every registered type; `build(spec, context=GraderContext(...))` validates and constructs one; `grade_many`
grades a batch.
"""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor

from rft.graders.base import (GRADERS, Grader, GraderContext, GraderError, build, load_grader_file, register_grader,
                              reward_problem, spec_sha256, validate)
from rft.graders.templating import TemplateError, make_sample, render
from rft.types import GradeResult

# Every grader module registers itself on import. Modules that are not present yet are skipped.
for _mod in ("string_check", "text_similarity", "python_grader", "score_model", "multi", "endpoint", "reasoning_gym_grader"):
    try:
        importlib.import_module(f"rft.graders.{_mod}")
    except ModuleNotFoundError as e:  # only tolerate the module itself being absent
        if e.name != f"rft.graders.{_mod}":
            raise


def grade_many(grader: Grader, samples: list[dict], items: list[dict], *, max_workers: int | None = None) -> list[GradeResult]:
    """Grade samples[i] against items[i]. Graders that wait on I/O (sandbox, HTTP) run concurrently
    (`grader.concurrency` at a time unless max_workers says otherwise); one slow sample never blocks the rest."""
    max_workers = max_workers or getattr(grader, "concurrency", 1)
    if max_workers <= 1 or len(samples) <= 1:
        return [grader.grade(s, it) for s, it in zip(samples, items)]
    with ThreadPoolExecutor(max_workers=max_workers) as ex:
        return list(ex.map(grader.grade, samples, items))


__all__ = [
    "GRADERS", "Grader", "GraderContext", "GraderError", "GradeResult", "TemplateError", "build", "grade_many",
    "load_grader_file", "make_sample", "register_grader", "render", "reward_problem", "spec_sha256", "validate",
]
