"""`reasoning_gym` grader (rft extension): scores an answer with the reasoning-gym task's own `score_answer`.

What: `{type: "reasoning_gym", name?, task?, input?}`. The answer is the rendered `input` (default
`{{sample.output_text}}`; use `{{sample.extracted}}` with rft's answer extraction). The task is `task` when
given, else the row's `item.rg_task`; the entry is `item.rg_entry`. Rows from `builtin:reasoning_gym/<task>`
carry both (and `answer`). Scoring goes through `rft.data.reasoning_gym_score`, which restores what JSON did to
entries where a task's scorer cares. Scores are in [0, 1], partial credit possible.

- A row without `rg_entry` (or without `rg_task` when the spec names no task) is unscored with
  `invalid_variable_error`; an unknown task is a validation problem (spec) or `other_error` (row).
- A scorer that raises is a crash, not a verdict: the sample is unscored with `other_error` and details naming
  the task and the exception (never a real 0.0, which would teach the policy that its answer was wrong when
  the verifier failed). A score that is not a finite number is unscored the same way. Some reasoning-gym
  scorers raise on malformed answers (prime_factorization on "31x"); those samples are unscored too, so they
  get no advantage either way, and their rate is visible in the `errors/other_error` metric and the
  unscored-fraction limit of training (`rft.train.max_unscored_frac`).

How to run: `python -c "from rft.data import load_dataset; from rft.graders import build, make_sample;
row = load_dataset('builtin:reasoning_gym/leg_counting?n=1').rows[0]; g = build({'type': 'reasoning_gym'});
print(g.grade(make_sample(row['answer']), row))"`.
"""

from __future__ import annotations

from rft.errors import Problem, RftError, did_you_mean
from rft.graders.base import DEFAULT_CONTEXT, Grader, GraderError, register_grader
from rft.graders.templating import check, render

DEFAULT_INPUT = "{{sample.output_text}}"


def task_names() -> list[str]:
    from rft.data.reasoning_gym_tasks import reasoning_gym_task_names

    return reasoning_gym_task_names()


def score_answer(task: str, answer: str, entry: dict) -> float:
    try:
        from rft.data import reasoning_gym_score
    except ImportError:  # the data layer without the adapter: call reasoning-gym directly
        from reasoning_gym.factory import get_score_answer_fn

        return float(get_score_answer_fn(task)(answer, entry))
    return reasoning_gym_score(task, answer, entry)


@register_grader("reasoning_gym")
class ReasoningGymGrader(Grader):
    type = "reasoning_gym"
    allowed_fields = {"type", "name", "task", "input"}
    required_fields = {"type"}

    @classmethod
    def validate_spec(cls, spec, where, context=DEFAULT_CONTEXT):
        problems = super().validate_spec(spec, where, context)
        if "task" in spec:
            task = spec["task"]
            if not isinstance(task, str):
                problems.append(Problem("task must be a reasoning-gym task name", field=f"{where}.task"))
            else:
                try:
                    names = task_names()
                except ImportError:
                    problems.append(Problem("the reasoning_gym grader needs the package 'reasoning-gym'", field=f"{where}.type"))
                else:
                    if task not in names:
                        problems.append(Problem(f"unknown reasoning-gym task '{task}'{did_you_mean(task, names)}",
                                                field=f"{where}.task"))
        if "input" in spec:
            if not isinstance(spec["input"], str):
                problems.append(Problem("must be a string template", field=f"{where}.input"))
            else:
                problems += check(spec["input"], f"{where}.input")
        return problems

    def score(self, sample, item):
        answer = render(self.spec.get("input", DEFAULT_INPUT), sample, item)
        task = self.spec.get("task") or item.get("rg_task")
        if not task:
            raise GraderError("invalid_variable_error", "'item.rg_task' does not exist and the grader names no task; "
                              "reasoning_gym graders need rows from builtin:reasoning_gym/<task>")
        entry = item.get("rg_entry")
        if not isinstance(entry, dict):
            raise GraderError("invalid_variable_error", "'item.rg_entry' does not exist; reasoning_gym graders need rows "
                              "from builtin:reasoning_gym/<task>")
        try:
            return score_answer(task, answer, entry)
        except RftError as e:  # unknown task named by the row
            raise GraderError("other_error", str(e)) from None
        except Exception as e:  # the verifier crashed: unscored, not a wrong answer (see module docstring)
            raise GraderError("other_error", f"the reasoning-gym scorer of task '{task}' raised {type(e).__name__}: "
                              f"{str(e)[:500]} (answer: {answer[:200]!r})") from None


__all__ = ["ReasoningGymGrader", "score_answer"]
