"""The grader interface and registry.

A grader turns (sample, item) into a `GradeResult`: a score, or `score=None` plus an OpenAI error kind
when it could not score (unscored is not zero). Grader types register a class with `@register_grader`;
`build(spec, context=...)` validates an OpenAI grader JSON object and returns a ready grader. Each grader also
has a stable `sha256` of its canonical spec for lineage.

`GraderContext` is everything a grader is built with besides its spec, passed explicitly (no process globals):
the network allowlist of `endpoint` graders, the sandbox limits and pool size of `python` graders (and the
pools themselves, shared by the graders of one context), the judges of model graders, the HTTP client of
endpoint graders and remote judges, and the clock grading latencies are measured with. An exception a grader
did not expect (a bug, a library failing) is caught in `grade`: the sample is unscored with `other_error` and
the exception in the details, never a crashed training step.

A score is a reward only when it
is a real number that stays finite as the float32 the reward tensor holds (`reward_problem`): 1e39 would become
inf there and turn a whole group's advantages into NaN or zero, so it is unscored instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from rft.errors import Problem, Registry, RftError
from rft.graders.httpclient import HttpClient
from rft.graders.judges import Judges
from rft.graders.netguard import HostAllowlist
from rft.graders.sandbox import SandboxLimits, SandboxPool, SharedPools
from rft.graders.templating import TemplateError
from rft.types import GradeResult

GRADERS = Registry("grader type")


def register_grader(name: str):
    return GRADERS.register(name)


@dataclass(frozen=True)
class GraderContext:
    """Built once by the caller (training loop, CLI, evals) and handed to `build`/`validate`; every grader built
    with it (sub-graders of a `multi` included) shares its pools, judges and HTTP client.

    allow_private_hosts: hostnames, IP addresses or CIDR blocks that `endpoint` graders may reach although they
        are loopback, link-local or private (see `rft.graders.netguard`); empty by default, so they may not.
    sandbox: the limits of `python` graders (None: `SandboxLimits()`, 120 s wall clock, 2 GB address space).
    sandbox_workers: how many sandboxed calls run at once (None: the CPU count, at least 2).
    sandbox_pool: an already running pool every `python` grader uses instead (its owner closes it; tests and
        benchmarks keep workers warm this way). Otherwise the context starts one pool per distinct limits, and
        it is closed when the last grader using it is closed.
    judges: the judges of `score_model`/`label_model` graders (`rft.graders.judges.Judges`: engines loaded with
        `rft.engine.load_engine` on first use, one per model reference; map a model name to any judge with
        `Judges({"*": judge})` or `judges.set(model, judge)`).
    http: the HTTP client of `endpoint` graders and remote judges (its `Timing` drives retries and rate limits).
    clock: the clock `GradeResult.latency_s` is measured with (seconds).
    """

    allow_private_hosts: tuple[str, ...] = ()
    sandbox: SandboxLimits | None = None
    sandbox_workers: int | None = None
    sandbox_pool: SandboxPool | None = field(default=None, compare=False)
    judges: Judges = field(default_factory=Judges, compare=False, repr=False)
    http: HttpClient = field(default_factory=HttpClient, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.perf_counter, compare=False, repr=False)
    allowlist: HostAllowlist = field(init=False, repr=False, compare=False)
    pools: SharedPools = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_private_hosts", tuple(self.allow_private_hosts or ()))
        object.__setattr__(self, "allowlist", HostAllowlist.parse(self.allow_private_hosts))
        object.__setattr__(self, "pools", SharedPools())
        if self.sandbox is not None and not isinstance(self.sandbox, SandboxLimits):
            raise TypeError(f"sandbox must be a SandboxLimits, got {type(self.sandbox).__name__}")

    def acquire_sandbox_pool(self) -> SandboxPool:
        """The pool a python grader runs in; pair with `release_sandbox_pool` when the grader is closed."""
        if self.sandbox_pool is not None:
            return self.sandbox_pool
        return self.pools.acquire(self.sandbox or SandboxLimits(), self.sandbox_workers)

    def release_sandbox_pool(self, pool: SandboxPool) -> None:
        if pool is not self.sandbox_pool:
            self.pools.release(pool)

    def close(self) -> None:
        """Close the pools this context started that graders have not released (a caller's safety net)."""
        self.pools.close()


DEFAULT_CONTEXT = GraderContext()


def reward_problem(value: Any) -> str | None:
    """Why `value` cannot be a reward, or None: it must be an int or float (not a bool) that is finite after
    rounding to float32, the dtype of the reward tensor (|x| up to about 3.4028235e38)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"a score must be a number, got {type(value).__name__}: {repr(value)[:100]}"
    try:
        f = float(value)
        struct.pack("<f", f)  # raises OverflowError exactly when float32 rounding gives +-inf
    except OverflowError:
        return (f"the score {repr(value)[:100]} is outside the float32 range of the reward tensor "
                "(|score| <= 3.4028235e38) and would become inf there")
    if not math.isfinite(f):
        return f"the score {f!r} is not a finite number"
    return None


class Grader:
    """Base class: subclasses set `type`, implement `validate_spec` (static checks) and `score`.

    `score(sample, item)` returns a float, or raises `GraderError(kind, details)`/`TemplateError`;
    `grade()` wraps it with timing and error capture.
    """

    type: ClassVar[str] = ""
    allowed_fields: ClassVar[set[str]] = {"type", "name"}
    required_fields: ClassVar[set[str]] = {"type"}

    def __init__(self, spec: dict[str, Any], *, context: GraderContext | None = None):
        self.spec = spec
        # Without a context, a fresh one: nothing (pools, judges, rate limits) is shared through a global.
        self.context = context if context is not None else GraderContext()
        self.name = spec.get("name") or self.type

    @classmethod
    def validate_spec(cls, spec: dict[str, Any], where: str, context: GraderContext = DEFAULT_CONTEXT) -> list[Problem]:
        problems = []
        for key in spec:
            if key not in cls.allowed_fields:
                from rft.errors import did_you_mean

                problems.append(
                    Problem(f"unknown field '{key}' for {cls.type}{did_you_mean(key, sorted(cls.allowed_fields))}",
                            field=f"{where}.{key}")
                )
        for key in sorted(cls.required_fields - set(spec)):
            problems.append(Problem(f"missing required field '{key}'", field=f"{where}.{key}"))
        return problems

    def score(self, sample: dict, item: dict) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def grade(self, sample: dict, item: dict) -> GradeResult:
        clock = self.context.clock
        t0 = clock()
        try:
            return self._grade(sample, item, t0)
        except Exception as e:  # a bug in the grader or a library it calls: unscored, never a crashed step
            return GradeResult(None, "other_error", f"the {self.type} grader failed unexpectedly: {_exc_text(e)}",
                               latency_s=clock() - t0, name=self.name)

    def _grade(self, sample: dict, item: dict, t0: float) -> GradeResult:
        """`score()` with the errors graders expect turned into unscored results; `t0`: when grading started."""
        clock = self.context.clock
        try:
            value = self.score(sample, item)
            why = reward_problem(value)
            if why:  # None, NaN, inf, a bool, or a float32 overflow: unscored, never a reward
                return GradeResult(None, "other_error", f"grader returned {repr(value)[:100]}: {why}",
                                   latency_s=clock() - t0, name=self.name)
            return GradeResult(float(value), latency_s=clock() - t0, name=self.name)
        except TemplateError as e:  # invalid_variable_error, or sample_parse_error for a non-JSON output_json
            return GradeResult(None, e.error_kind, str(e), latency_s=clock() - t0, name=self.name)
        except GraderError as e:
            return GradeResult(None, e.kind, e.details, latency_s=clock() - t0, name=self.name)

    @property
    def pass_threshold(self) -> float | None:
        """OpenAI's optional `pass_threshold` (text_similarity, score_model, endpoint); it never changes the reward."""
        return self.spec.get("pass_threshold")

    def passed(self, score: float | None) -> bool | None:
        t = self.pass_threshold
        return None if t is None or score is None else score >= t

    @property
    def concurrency(self) -> int:
        """How many samples may be graded at once (I/O-bound graders: sandbox pools, HTTP)."""
        return 1

    def close(self) -> None:
        """Release resources (worker pools, connections)."""

    @property
    def sha256(self) -> str:
        return spec_sha256(self.spec)


class GraderError(Exception):
    def __init__(self, kind: str, details: str = ""):
        super().__init__(f"{kind}: {details}")
        self.kind = kind
        self.details = details


def _exc_text(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:
        text = "<the exception message could not be rendered>"
    text = text if len(text) <= 2000 else text[:2000] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def spec_sha256(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def validate(spec: Any, where: str = "grader", *, context: GraderContext | None = None) -> list[Problem]:
    """All static problems of a grader spec (unknown type, fields, templates, formulas, source, and URLs the
    context's network policy refuses)."""
    if not isinstance(spec, dict):
        return [Problem(f"a grader must be a JSON object, got {type(spec).__name__}", field=where)]
    gtype = spec.get("type")
    if gtype is None:
        return [Problem(f"missing 'type' (one of: {', '.join(sorted(GRADERS))})", field=f"{where}.type")]
    if not isinstance(gtype, str):
        return [Problem(f"'type' must be a string (one of: {', '.join(sorted(GRADERS))}), got {type(gtype).__name__}",
                        field=f"{where}.type")]
    if gtype not in GRADERS:
        from rft.errors import did_you_mean

        return [
            Problem(
                f"unknown grader type '{gtype}'{did_you_mean(str(gtype), list(GRADERS))}; valid: {', '.join(sorted(GRADERS))}",
                field=f"{where}.type",
            )
        ]
    return GRADERS[gtype].validate_spec(spec, where, context or DEFAULT_CONTEXT)


def build(spec: Any, where: str = "grader", source: str | None = None, *, context: GraderContext | None = None) -> Grader:
    """Validate and construct a grader; raises RftError naming every problem."""
    problems = validate(spec, where, context=context)
    if problems:
        if source:
            problems = [Problem(p.message, file=source, field=p.field) for p in problems]
        raise RftError(f"invalid grader{f' in {source}' if source else ''}", problems)
    return GRADERS[spec["type"]](spec, context=context)


def load_grader_file(path: str) -> dict:
    """The grader object in a JSON file (YAML for .yaml/.yml): a bare grader or the graders API request shape
    {"grader": {...}}. Every problem with the file (missing, a directory, too long a name, binary or non-UTF-8,
    invalid, nested too deeply, not an object) is one RftError naming it."""
    from rft.userinput import _json_kind, parse_json, parse_yaml, read_user_text

    name = str(path)
    text = read_user_text(path, "grader")
    if name.endswith((".yaml", ".yml")):
        spec = parse_yaml(text, name, "grader")
    else:
        spec = parse_json(text, name, "grader")
    if isinstance(spec, dict) and "grader" in spec and "type" not in spec:
        spec = spec["grader"]
        if not isinstance(spec, dict):
            raise RftError(f"{name}: field 'grader': the grader must be an object ({{\"type\": ...}}), got {_json_kind(spec)}")
    elif not isinstance(spec, dict):
        raise RftError(f"{name}: the grader file must hold an object ({{\"type\": ...}} or {{\"grader\": {{...}}}}), "
                       f"got {_json_kind(spec)}")
    return spec
