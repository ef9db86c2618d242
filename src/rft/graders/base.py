"""The grader interface and registry.

A grader turns (sample, item) into a `GradeResult`: a score, or `score=None` plus an OpenAI error kind
when it could not score (unscored is not zero). Grader types register a class with `@register_grader`;
`build(spec)` validates an OpenAI grader JSON object and returns a ready grader. Each grader also has a
stable `sha256` of its canonical spec for lineage.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, ClassVar

from rft.errors import Problem, Registry, RftError
from rft.graders.templating import TemplateError
from rft.types import GradeResult

GRADERS = Registry("grader type")


def register_grader(name: str):
    return GRADERS.register(name)


class Grader:
    """Base class: subclasses set `type`, implement `validate_spec` (static checks) and `score`.

    `score(sample, item)` returns a float, or raises `GraderError(kind, details)`/`TemplateError`;
    `grade()` wraps it with timing and error capture.
    """

    type: ClassVar[str] = ""
    allowed_fields: ClassVar[set[str]] = {"type", "name"}
    required_fields: ClassVar[set[str]] = {"type"}

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.name = spec.get("name") or self.type

    @classmethod
    def validate_spec(cls, spec: dict[str, Any], where: str) -> list[Problem]:
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
            if value is None or not isinstance(value, (int, float)) or value != value:  # None / NaN
                return GradeResult(None, "other_error", f"grader returned {value!r}", latency_s=time.perf_counter() - t0, name=self.name)
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


def validate(spec: Any, where: str = "grader") -> list[Problem]:
    """All static problems of a grader spec (unknown type, fields, templates, formulas, source)."""
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
    return GRADERS[gtype].validate_spec(spec, where)


def build(spec: Any, where: str = "grader", source: str | None = None) -> Grader:
    """Validate and construct a grader; raises RftError naming every problem."""
    problems = validate(spec, where)
    if problems:
        if source:
            problems = [Problem(p.message, file=source, field=p.field) for p in problems]
        raise RftError(f"invalid grader{f' in {source}' if source else ''}", problems)
    return GRADERS[spec["type"]](spec)


def load_grader_file(path: str) -> dict:
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise RftError(f"grader file not found: {path}")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            spec = yaml.safe_load(text)
        else:
            spec = json.loads(text)
    except (ValueError, Exception) as e:  # yaml.YAMLError is not a ValueError
        raise RftError(f"{path}: not valid {'YAML' if p.suffix in ('.yaml', '.yml') else 'JSON'}: {e}") from None
    # Accept both a bare grader and the graders API request shape {"grader": {...}}.
    if isinstance(spec, dict) and "grader" in spec and "type" not in spec:
        spec = spec["grader"]
    return spec
