"""OpenAI `string_check` grader: compares the rendered `input` with the rendered `reference`.

Operations: `eq` (exact, case-sensitive), `ne` (not equal), `like` (input contains reference,
case-sensitive), `ilike` (contains, case-insensitive). Scores 1.0 or 0.0.
"""

from __future__ import annotations

from rft.errors import Problem
from rft.graders.base import DEFAULT_CONTEXT, Grader, register_grader
from rft.graders.templating import check, render

OPERATIONS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "like": lambda a, b: b in a,
    "ilike": lambda a, b: b.lower() in a.lower(),
}


@register_grader("string_check")
class StringCheckGrader(Grader):
    type = "string_check"
    allowed_fields = {"type", "name", "input", "reference", "operation"}
    required_fields = {"type", "input", "reference", "operation"}

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context)
        op = spec.get("operation")
        if "operation" in spec and op not in OPERATIONS:
            problems.append(Problem(f"operation must be one of {', '.join(OPERATIONS)}, got {op!r}", field=f"{where}.operation"))
        for key in ("input", "reference"):
            if key in spec:
                if not isinstance(spec[key], str):
                    problems.append(Problem("must be a string template", field=f"{where}.{key}"))
                else:
                    problems += check(spec[key], f"{where}.{key}")
        return problems

    def score(self, sample, item):
        a = render(self.spec["input"], sample, item)
        b = render(self.spec["reference"], sample, item)
        return 1.0 if OPERATIONS[self.spec["operation"]](a, b) else 0.0
