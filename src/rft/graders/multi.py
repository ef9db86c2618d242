"""OpenAI `multi` grader: several named sub-graders combined by a `calculate_output` formula.

What: `{type: "multi", name, graders: {<key>: <grader>}, calculate_output: "<formula>"}`. Every sub-grader
grades the sample (in key order), then the formula (see `rft.graders.formula`: + - * / ^, unary minus,
parentheses, min max abs floor ceil exp sqrt log) is evaluated with each key bound to its sub-grader's score.
`sub_scores` holds every sub-grader's score (None for an unscored one).

- Validation: every sub-grader is validated in place (`graders.<key>.<field>` in problems); a `multi` inside a
  `multi` is rejected (as OpenAI does); `label_model` is allowed here (and, for training, only here); a
  formula that does not parse is reported with `formula_parse_error` and its position; a formula name that is
  not a grader key is reported with the valid keys.
- Run time: if any sub-grader is unscored, the multi result is unscored with the first such sub-grader's error
  kind (in key order) and details naming it; a formula that cannot be evaluated for these scores (division
  by zero, log of 0, overflow, a result outside the float32 range of the reward tensor) is unscored with
  `other_error`. A multi grader constructed without validation whose formula does not parse is unscored with
  `formula_parse_error` on every sample.

Simplified: sub-graders run one after another (`grade_many` already grades samples concurrently), and the
formula's result is not clipped.

How to run: `python -c "from rft.graders import build, make_sample; g = build({'type': 'multi', 'graders': {'a':
{'type': 'string_check', 'input': '{{sample.output_text}}', 'reference': 'x', 'operation': 'eq'}},
'calculate_output': '2 * a'}); print(g.grade(make_sample('x'), {}))"`.
"""

from __future__ import annotations

from rft.errors import Problem, did_you_mean
from rft.graders.base import DEFAULT_CONTEXT, GRADERS, Grader, GraderError, register_grader, reward_problem, validate
from rft.graders.formula import FormulaError, FormulaEvalError, parse
from rft.types import GradeResult


def formula_problems(formula, keys: list[str], where: str) -> list[Problem]:
    field = f"{where}.calculate_output"
    try:
        parsed = parse(formula)
    except FormulaError as e:
        return [Problem(f"formula_parse_error: {e.message} at position {e.position}\n    {e.pointer().replace(chr(10), chr(10) + '    ')}",
                        field=field)]
    out = []
    for name in parsed.variables:
        if name not in keys:
            out.append(Problem(f"formula_parse_error: unknown variable '{name}'{did_you_mean(name, keys)}; "
                               f"the variables are the grader keys: {', '.join(keys) or '(none)'}", field=field))
    return out


@register_grader("multi")
class MultiGrader(Grader):
    type = "multi"
    allowed_fields = {"type", "name", "graders", "calculate_output"}
    required_fields = {"type", "graders", "calculate_output"}

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context)
        graders = spec.get("graders")
        keys: list[str] = []
        if "graders" in spec:
            if not isinstance(graders, dict) or not graders:
                problems.append(Problem("graders must be a non-empty object {name: grader}", field=f"{where}.graders"))
            else:
                keys = list(graders)
                for key, sub in graders.items():
                    f = f"{where}.graders.{key}"
                    if isinstance(sub, dict) and sub.get("type") == "multi":
                        problems.append(Problem("a multi grader cannot contain another multi grader", field=f"{f}.type"))
                        continue
                    problems += validate(sub, f, context=context)
        if "calculate_output" in spec:
            formula = spec["calculate_output"]
            if not isinstance(formula, str):
                problems.append(Problem("calculate_output must be a formula string", field=f"{where}.calculate_output"))
            elif isinstance(graders, dict):
                problems += formula_problems(formula, keys, where)
        return problems

    def __init__(self, spec, *, context=None):
        super().__init__(spec, context=context)
        self.graders: dict[str, Grader] = {k: GRADERS[s["type"]](s, context=self.context) for k, s in spec["graders"].items()}
        for key, g in self.graders.items():
            if not g.spec.get("name"):
                g.name = key
        try:
            self.formula = parse(spec["calculate_output"])
            self.formula_error = None
        except FormulaError as e:
            self.formula, self.formula_error = None, e

    @property
    def concurrency(self) -> int:
        return max(g.concurrency for g in self.graders.values())

    @property
    def usage(self) -> dict[str, dict[str, int]]:
        """Judge token usage summed over the model sub-graders, per judge model."""
        total: dict[str, dict[str, int]] = {}
        for g in self.graders.values():
            for model, u in getattr(g, "usage", {}).items():
                t = total.setdefault(model, {})
                for k, v in u.items():
                    t[k] = t.get(k, 0) + v
        return total

    def _grade(self, sample, item, t0) -> GradeResult:  # Grader.grade turns an unexpected exception into other_error
        results = {k: g.grade(sample, item) for k, g in self.graders.items()}
        subs = {k: r.score for k, r in results.items()}
        lat = {k: r.latency_s for k, r in results.items()}
        done = lambda score, error=None, details=None: GradeResult(  # noqa: E731
            score, error, details, sub_scores=subs, latency_s=self.context.clock() - t0, name=self.name,
            sub_latency_s=lat)
        for key, r in results.items():
            if not r.scored:
                return done(None, r.error, f"sub-grader '{key}': {r.details or r.error}")
        if self.formula is None:
            e = self.formula_error
            return done(None, "formula_parse_error", f"calculate_output: {e.message} at position {e.position}")
        missing = [v for v in self.formula.variables if v not in subs]
        if missing:
            return done(None, "formula_parse_error", f"calculate_output: unknown variable(s) {', '.join(missing)}")
        try:
            value = self.formula.evaluate(subs)
        except FormulaEvalError as e:
            return done(None, "other_error", f"calculate_output could not be evaluated: {e}")
        why = reward_problem(value)
        if why:  # finite as a float64 but not as the float32 reward (e.g. 1e30 * 1e30)
            return done(None, "other_error", f"calculate_output gave {value!r}: {why}")
        return done(value)

    def score(self, sample, item):  # _grade() is overridden; kept for the Grader contract
        r = self.grade(sample, item)
        if not r.scored:
            raise GraderError(r.error or "other_error", r.details or "")
        return r.score

    def close(self) -> None:
        for g in self.graders.values():
            g.close()


__all__ = ["MultiGrader", "formula_problems"]
