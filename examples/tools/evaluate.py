"""Tool-call accuracy of models on the tool-call validation set (examples/tools/job.yaml's grader), plus the
share of completions with a call and the accuracy of the function name alone, read through
`{{sample.output_tools[0].function.name}}` (unscored when there is no call).

Run: `python examples/tools/evaluate.py MODEL [MODEL ...]`.
"""

import sys
from pathlib import Path

import yaml

from rft.eval.runner import run_eval

HERE = Path(__file__).parent
NAME0 = {"type": "string_check", "name": "name0", "input": "{{sample.output_tools[0].function.name}}",
         "reference": "{{item.tool}}", "operation": "eq"}


def main(models):
    job = yaml.safe_load((HERE / "job.yaml").read_text())
    grader = job["method"]["reinforcement"]["grader"]
    for model in models:
        rep = run_eval(model, str(HERE / "validation.jsonl"), grader, max_new_tokens=48, write=False)
        calls = sum(1 for it in rep["items"] if "<tool_call>" in it["completion"])
        rep0 = run_eval(model, str(HERE / "validation.jsonl"), NAME0, max_new_tokens=48, write=False)
        print(f"{model[-40:]:40s} accuracy {rep['accuracy']:.3f} ci95 [{rep['accuracy_ci95'][0]:.3f}, "
              f"{rep['accuracy_ci95'][1]:.3f}] with_call {calls / rep['n']:.3f} "
              f"name0_accuracy_over_all {sum((it['score'] or 0) for it in rep0['items']) / max(1, len(rep0['items'])):.3f} "
              f"name0_unscored {rep0['unscored_frac']:.3f} n={rep['n']}", flush=True)
        print("  example:", repr(rep["items"][0]["completion"][:160]))


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m-instruct"])
