"""What a job's graders are built with, and the check that its reference answers pass them: shared by training
(`rft.train.setup`, before the first step) and replay (`rft.review.replay`, before a new grader is trusted).

    ctx = grader_context(job)                              # sandbox limits and pool, SSRF allowlist
    problems = reference_problems(job, grader, [train_ds, val_ds], what="the grader")

Simplified: a reference answer passes when it scores >= 1.0; a job without `rft.train.reference_output` has
nothing to check.
"""

from __future__ import annotations

from typing import Iterable

from rft import graders
from rft.config import JobSpec
from rft.errors import Problem
from rft.extraction import sample_from_text


def grader_context(job: JobSpec | None) -> graders.GraderContext:
    """What graders are built with besides their spec: the hosts endpoint graders may reach (SSRF allowlist) and
    the sandbox python graders run in (limits and pool size from `rft.sandbox`). Make one per job: the graders
    built with it share its sandbox pool, which closes with the last of them. No job: the defaults."""
    if job is None:
        return graders.GraderContext()
    sb = job.rft.sandbox
    return graders.GraderContext(
        allow_private_hosts=tuple(job.rft.network.allow_private_hosts),
        sandbox=graders.SandboxLimits(timeout_s=sb.timeout_s, cpu_s=sb.cpu_s, memory_mb=sb.memory_mb, nproc=sb.nproc,
                                      fsize_mb=sb.fsize_mb, isolation=sb.isolation),
        sandbox_workers=sb.workers)


def reference_problems(job: JobSpec, grader, datasets: Iterable, *, what: str = "the grader") -> list[Problem]:
    """Every row's reference output (`rft.train.reference_output`, a template over the row) must pass `grader`
    (score >= 1.0); one problem (file, line) per row that does not."""
    tmpl = job.rft.train.reference_output
    if not tmpl:
        return []
    problems: list[Problem] = []
    for ds in datasets:
        for i, row in enumerate(ds.rows):
            try:
                text = graders.render(tmpl, {}, row)
            except graders.TemplateError as e:
                problems.append(ds.problem(i, f"reference_output: {e}"))
                continue
            g = grader.grade(sample_from_text(text, job.rft.extraction), row)
            if g.score is None or g.score < 1.0:
                why = g.error or f"score {g.score}"
                problems.append(ds.problem(i, f"the reference answer {text!r} does not pass {what} ({why})"))
    return problems
