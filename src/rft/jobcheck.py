"""The full check of a job spec: the schema (`rft.config`) plus what only the layers above it can check.

What: `parse_job(raw, source)` and `load_job(path, overrides)` return a `JobSpec` or raise one RftError that
lists every problem: the schema's (unknown keys with a did-you-mean, kinds, ranges), the method (one section,
of its own type; no guard set or warm start on supervised/dpo), then the advantage and the
loss by their registered names (`rft.algo`), the grader (`rft.graders.run.validate_reinforcement_grader`, with
the job's own network allowlist), OpenAI's `integrations` (a wandb entry becomes rft.report_to + rft.trackers.wandb)
and the trackers' libraries (installed?), the extraction pattern, and the ranges across fields. Every entry point that
reads a job spec (the CLI, training, resume of a stored spec) calls this module, never `rft.config.parse_job`
alone.

Simplified: this module only composes checks that live elsewhere; it sits above rft.algo and rft.graders so
that `rft.config` stays a leaf (it imports nothing from rft but the ground floor).

How to run: `python -c "from rft.jobcheck import load_job; print(load_job('examples/quickstart.yaml').model)"`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from rft import algo
from rft.config import _show  # values cut short exactly as in the schema's messages
from rft.config import JobSpec, apply_overrides, load_raw, parse_schema, raise_problems, spec_problems
from rft.config import TRACKER_PACKAGES, WandbSettings
from rft.errors import Problem, RftError, did_you_mean
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
    """The job's grader (method.<type>.grader; optional for supervised and dpo), checked as a fine-tuning grader
    with the job's own network allowlist."""
    if job.grader is None:
        return []
    ctx = GraderContext(allow_private_hosts=tuple(job.rft.network.allow_private_hosts))
    return [Problem(p.message, file=source, field=p.field)
            for p in validate_reinforcement_grader(job.grader, job.grader_field, context=ctx)]


def method_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """`method` names one type and carries only its section; what only reinforcement jobs have (a guard set, the
    warm start) is refused on supervised and dpo jobs rather than ignored."""
    m = job.method
    out = [Problem(f"method.type is '{m.type}', so method.{name} would be ignored; give only method.{m.type}"
                   f"{did_you_mean(name, [m.type])}", file=source, field=f"method.{name}")
           for name in m.other_sections()]
    if m.type != "reinforcement":
        if job.rft.eval.guard_file:
            out.append(Problem(f"guard sets are for reinforcement jobs; a {m.type} job has none yet", file=source,
                               field="rft.eval.guard_file"))
        if job.rft.warm_start.enabled is True:
            out.append(Problem(f"the warm start runs before reinforcement learning; a {m.type} job is supervised "
                               "already", file=source, field="rft.warm_start.enabled"))
    return out


# OpenAI's `integrations` entry: {"type": "wandb", "wandb": {"project", "name", "entity", "tags"}}
INTEGRATION_TYPES = ("wandb",)
WANDB_INTEGRATION_KEYS = ("project", "name", "entity", "tags")


def integration_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """Map OpenAI's `integrations: [{type: wandb, wandb: {project, name, entity, tags}}]` onto rft's trackers:
    "wandb" joins rft.report_to and the fields fill rft.trackers.wandb (the job is changed in place, so the
    stored and resolved spec show what runs). A field set both here and, differently, in rft.trackers.wandb is
    a conflict; mapping an already mapped spec changes nothing (a resumed job's stored spec)."""
    out: list[Problem] = []
    for i, entry in enumerate(job.integrations or []):
        at = f"integrations[{i}]"
        if not isinstance(entry, dict) or entry.get("type") not in INTEGRATION_TYPES:
            t = entry.get("type") if isinstance(entry, dict) else entry
            out.append(Problem(f"unknown integration type '{_show(t)}'{did_you_mean(str(t), INTEGRATION_TYPES)}; "
                               f"valid: {', '.join(INTEGRATION_TYPES)}", file=source, field=f"{at}.type"))
            continue
        extra = [k for k in entry if k not in ("type", "wandb")]
        w = entry.get("wandb")
        if extra:
            out.append(Problem(f"unknown key '{_show(extra[0])}'; valid keys here: type, wandb", file=source,
                               field=f"{at}.{extra[0]}"))
        if not isinstance(w, dict) or not w.get("project"):
            out.append(Problem("a wandb integration needs wandb.project", file=source, field=f"{at}.wandb.project"))
            continue
        bad = [k for k in w if k not in WANDB_INTEGRATION_KEYS]
        for k in bad:
            out.append(Problem(f"unknown key '{_show(k)}'{did_you_mean(str(k), WANDB_INTEGRATION_KEYS)}; valid keys "
                               f"here: {', '.join(WANDB_INTEGRATION_KEYS)}", file=source, field=f"{at}.wandb.{k}"))
        current, default = job.rft.trackers.wandb, WandbSettings()
        merged = current.model_dump()
        for k in WANDB_INTEGRATION_KEYS:
            if w.get(k) is None:
                continue
            mine = getattr(current, k)
            if mine != getattr(default, k) and mine != w[k]:
                out.append(Problem(f"{_show(w[k])} conflicts with rft.trackers.wandb.{k} = {_show(mine)}; set it in "
                                   "one place", file=source, field=f"{at}.wandb.{k}"))
            merged[k] = w[k]
        try:
            settings = WandbSettings.model_validate(merged)
        except ValidationError as e:
            out += [Problem(f"{err['msg']} (got {_show(err.get('input'))})", file=source,
                            field=f"{at}.wandb." + ".".join(str(x) for x in err["loc"])) for err in e.errors()]
            continue
        if not bad and not extra:
            job.rft.trackers.wandb = settings
            if "wandb" not in job.rft.report_to:
                job.rft.report_to = [*job.rft.report_to, "wandb"]
    return out


def response_format_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """`method.reinforcement.response_format` must compile to a decoding constraint now, not at the first step."""
    import re

    from rft.engine.constrain import from_response_format

    where = "method.reinforcement.response_format"
    try:
        from_response_format(job.response_format, where)
    except RftError as e:
        m = re.match(r"field '([^']*)': (.*)", e.message, re.S)  # the constraint's errors name their field
        return [Problem(m.group(2), file=source, field=m.group(1)) if m else Problem(e.message, file=source, field=where)]
    return []


def tracker_problems(job: JobSpec, source: str | None = None) -> list[Problem]:
    """Every tracker in rft.report_to must have its library installed; the message names the pip package."""
    import importlib.util

    out = []
    for name in job.rft.report_to:
        module, package = TRACKER_PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            via = " (asked for by integrations)" if name == "wandb" and job.integrations else ""
            out.append(Problem(f"the {name} tracker{via} needs the Python package '{package}', which is not "
                               f"installed: pip install {package}", file=source, field="rft.report_to"))
    return out


def check_job(job: JobSpec, source: str | None = None) -> JobSpec:
    """`job` when it passes every check above the schema; else one RftError with every problem."""
    mapped = integration_problems(job, source)  # first: it may add wandb to rft.report_to
    raise_problems(method_problems(job, source) + algorithm_problems(job, source) + grader_problems(job, source) + mapped
                   + tracker_problems(job, source) + response_format_problems(job, source) + spec_problems(job, source),
                   source)
    return job


def parse_job(raw: dict, source: str | None = None) -> JobSpec:
    """The schema, then every other check, all problems in one RftError (schema problems alone when the schema
    fails: nothing else can be checked on a spec that did not parse)."""
    return check_job(parse_schema(raw, source), source)


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """`parse_job` of the job file at `path` with `key=value` overrides applied."""
    return parse_job(apply_overrides(load_raw(path), overrides or []), str(path))
