"""The full check of a job spec: the schema (`rft.config`) plus what only the layers above it can check.

What: `parse_job(raw, source)` and `load_job(path, overrides)` return a `JobSpec` or raise one RftError that
lists every problem: the schema's (unknown keys with a did-you-mean, kinds, ranges), then the advantage and the
loss by their registered names (`rft.algo`), the grader (`rft.graders.run.validate_reinforcement_grader`, with
the job's own network allowlist), the extraction pattern, and the ranges across fields. Every entry point that
reads a job spec (the CLI, training, resume of a stored spec) calls this module, never `rft.config.parse_job`
alone.

Simplified: this module only composes checks that live elsewhere; it sits above rft.algo and rft.graders so
that `rft.config` stays a leaf (it imports nothing from rft but the ground floor).

How to run: `python -c "from rft.jobcheck import load_job; print(load_job('examples/quickstart.yaml').model)"`.
"""

from __future__ import annotations

from pathlib import Path

from rft import algo
from rft.config import _show  # values cut short exactly as in the schema's messages
from rft.config import JobSpec, apply_overrides, load_raw, parse_schema, raise_problems, spec_problems
from rft.errors import Problem, did_you_mean
from rft.graders import GraderContext
from rft.graders.run import validate_reinforcement_grader


def algorithm_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """The advantage and the loss must be registered names (`rft.algo.ADVANTAGES`, `rft.algo.LOSSES`)."""
    a = job.rft.algorithm
    problems = []
    if a.advantage not in algo.ADVANTAGES:
        problems.append(Problem(f"unknown advantage '{_show(a.advantage)}'{did_you_mean(a.advantage, list(algo.ADVANTAGES))}; "
                                f"valid: {', '.join(algo.ADVANTAGES)}", file=source, field="rft.algorithm.advantage"))
    if a.loss not in algo.LOSSES:
        problems.append(Problem(f"unknown loss '{_show(a.loss)}'{did_you_mean(a.loss, list(algo.LOSSES))}; "
                                f"valid: {', '.join(algo.LOSSES)}", file=source, field="rft.algorithm.loss"))
    return problems


def grader_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """The job's grader, checked as a fine-tuning grader with the job's own network allowlist."""
    ctx = GraderContext(allow_private_hosts=tuple(job.rft.network.allow_private_hosts))
    return [Problem(p.message, file=source, field=p.field)
            for p in validate_reinforcement_grader(job.grader, "method.reinforcement.grader", context=ctx)]


def check_job(job: JobSpec, source: str | None = None) -> JobSpec:
    """`job` when it passes every check above the schema; else one RftError with every problem."""
    raise_problems(algorithm_problems(job, source) + grader_problems(job, source) + spec_problems(job, source), source)
    return job


def parse_job(raw: dict, source: str | None = None) -> JobSpec:
    """The schema, then every other check, all problems in one RftError (schema problems alone when the schema
    fails: nothing else can be checked on a spec that did not parse)."""
    return check_job(parse_schema(raw, source), source)


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """`parse_job` of the job file at `path` with `key=value` overrides applied."""
    return parse_job(apply_overrides(load_raw(path), overrides or []), str(path))
