"""Accuracy and parse-error rate of models on the structured-output validation set, decoded with and without
the job's response_format constraint (the figures of examples/structured/README in the report).

Run: `python examples/structured/evaluate.py MODEL [MODEL ...]` (model references: the embedded name, a
checkpoint directory, ckpt:<id>). Prints one line per (model, decoding).
"""

import sys
from pathlib import Path

import yaml

from rft.eval.runner import run_eval

HERE = Path(__file__).parent


def main(models):
    job = yaml.safe_load((HERE / "job.yaml").read_text())
    rein = job["method"]["reinforcement"]
    for model in models:
        for label, rf in (("constrained", rein["response_format"]), ("unconstrained", None)):
            rep = run_eval(model, str(HERE / "validation.jsonl"), rein["grader"], max_new_tokens=48, write=False,
                           response_format=rf)
            print(f"{model[-40:]:40s} {label:13s} accuracy {rep['accuracy']:.3f} "
                  f"ci95 [{rep['accuracy_ci95'][0]:.3f}, {rep['accuracy_ci95'][1]:.3f}] "
                  f"parse_error_rate {rep['error_rates']['sample_parse_error']:.3f} n={rep['n']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m-instruct"])
