"""The grader interface and registry.

A grader turns (sample, item) into a `GradeResult`: a score, or `score=None` plus an OpenAI error kind
when it could not score (unscored is not zero). Grader types register a class with `@register_grader`;
`build(spec, context=...)` validates an OpenAI grader JSON object and returns a ready grader. Each grader also
has a stable `sha256` of its canonical spec for lineage.

`GraderContext` is what a grader is built with besides its spec, passed explicitly (no process globals): today
the network allowlist of `endpoint` graders (`rft.network.allow_private_hosts`). A score is a reward only when it
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
from typing import Any, ClassVar

from rft.errors import Problem, Registry, RftError
from rft.graders.templating import TemplateError
from rft.types import GradeResult

GRADERS = Registry("grader type")


def register_grader(name: str):
    return GRADERS.register(name)


@dataclass(frozen=True)
class GraderContext:
    """Built once by the caller (training loop, CLI, evals) and handed to `build`/`validate`.

    `allow_private_hosts`: hostnames, IP addresses or CIDR blocks that `endpoint` graders may reach although they
    are loopback, link-local or private (see `rft.graders.netguard`); empty by default, so they may not.
    """

    allow_private_hosts: tuple[str, ...] = ()
    allowlist: Any = field(init=False, repr=False, compare=False)  # the parsed HostAllowlist

    def __post_init__(self) -> None:
        from rft.graders.netguard import HostAllowlist

        object.__setattr__(self, "allow_private_hosts", tuple(self.allow_private_hosts or ()))
        object.__setattr__(self, "allowlist", HostAllowlist.parse(self.allow_private_hosts))


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
        self.context = context or DEFAULT_CONTEXT
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
        t0 = time.perf_counter()
        try:
            value = self.score(sample, item)
            why = reward_problem(value)
            if why:  # None, NaN, inf, a bool, or a float32 overflow: unscored, never a reward
                return GradeResult(None, "other_error", f"grader returned {repr(value)[:100]}: {why}",
                                   latency_s=time.perf_counter() - t0, name=self.name)
            return GradeResult(float(value), latency_s=time.perf_counter() - t0, name=self.name)
        except TemplateError as e:  # invalid_variable_error, or sample_parse_error for a non-JSON output_json
            return GradeResult(None, e.error_kind, str(e), latency_s=time.perf_counter() - t0, name=self.name)
        except GraderError as e:
            return GradeResult(None, e.kind, e.details, latency_s=time.perf_counter() - t0, name=self.name)

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
