"""A hand-made finished job for the replay and explain tests: data files, a run folder with one step of samples
and a baseline evaluation, and the job's rows in the registry. The numbers are chosen so that the flips and
advantage signs can be worked out by hand (see tests/review/test_replay.py).

The job was "trained" with a buggy grader: string_check `like` (contains) on the whole output, so an output that
lists numbers passes. The fixed grader compares the last number in the output (`{{sample.extracted}}`) with `eq`.
"""

from __future__ import annotations

import json
from pathlib import Path

BUGGY = {"type": "string_check", "name": "contains", "input": "{{sample.output_text}}",
         "reference": "{{item.answer}}", "operation": "like"}
FIXED = {"type": "string_check", "name": "exact_last_number", "input": "{{sample.extracted}}",
         "reference": "{{item.answer}}", "operation": "eq"}
G = 4

TRAIN = [{"messages": [{"role": "user", "content": "What is 2 + 3?"}], "answer": "5", "op": "+"},
         {"messages": [{"role": "user", "content": "What is 3 * 3?"}], "answer": "9", "op": "*"}]
VAL = [{"messages": [{"role": "user", "content": "What is 1 + 1?"}], "answer": "2", "op": "+"},
       {"messages": [{"role": "user", "content": "What is 2 * 4?"}], "answer": "8", "op": "*"},
       {"messages": [{"role": "user", "content": "What is 4 + 4?"}], "answer": "8", "op": "+"},
       {"messages": [{"role": "user", "content": "What is 3 * 4?"}], "answer": "12", "op": "*"}]

# (completion, stored reward): group A (answer 5) and group B (answer 9). B's third reward is 0 although the
# output is right (a flaky old grader), so that one item flips fail -> pass.
STEP1 = [("5", 1.0), ("1 2 3 4 5 6", 1.0), ("4", 0.0), ("15", 1.0),
         ("9", 1.0), ("8", 0.0), ("9", 0.0), ("19", 1.0)]
# baseline evaluation, greedy: stored scores under the buggy grader
EVAL = [("2", 1.0), ("2 4 6 8 10", 1.0), ("8", 1.0), ("1 12 24", 1.0)]


def write_jsonl(p: Path, rows: list[dict]) -> Path:
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def make_job(tmp_path: Path, *, samples: bool = True, evals: bool = True, job_id: str = "ftjob-replaytest") -> dict:
    """Create the job (registry rows + run folder); returns {"id", "run_dir", "train", "val"}."""
    from rft.config import parse_job
    from rft.graders import spec_sha256
    from rft.registry import Registry

    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    val = write_jsonl(tmp_path / "val.jsonl", VAL)
    spec = {"model": "smollm2-135m-instruct", "training_file": str(train), "validation_file": str(val), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {"grader": BUGGY}},
            "rft": {"extraction": {"pattern": "-?\\d+", "occurrence": "last"}, "sampling": {"n": G},
                    "algorithm": {"advantage": "grpo"}, "train": {"reference_output": "{{item.answer}}"}}}
    job = parse_job(spec, "test")
    resolved = job.model_dump(mode="json") | {"resolved": {"completions_per_prompt": G, "prompts_per_step": 2}}
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    if samples:
        write_jsonl(run / "samples" / "step_000001.jsonl", [
            {"step": 1, "prompt": TRAIN[i // G]["messages"][-1]["content"], "completion": c, "reward": r, "error": None,
             "advantage": 0.0, "finish_reason": "stop"} for i, (c, r) in enumerate(STEP1)])
    if evals:
        items = [{"index": i, "id": None, "score": s, "passed": s >= 1.0, "error": None, "completion": c,
                  "completion_tokens": len(c.split()), "finish_reason": "stop", "answer": VAL[i]["answer"],
                  "fields": {"answer": VAL[i]["answer"], "op": VAL[i]["op"]}} for i, (c, s) in enumerate(EVAL)]
        (run / "eval_baseline.json").write_text(json.dumps({"accuracy": 1.0, "pass_threshold": 1.0, "step": 0,
                                                            "dataset_sha256": None, "items": items}))
    reg = Registry()
    reg.create_job(job_id, spec=spec, model=spec["model"], run_dir=str(run), status="succeeded",
                   resolved_config=resolved, grader_sha256=spec_sha256(BUGGY), training_file=str(train),
                   validation_file=str(val))
    return {"id": job_id, "run_dir": run, "train": train, "val": val}


def grader_file(tmp_path: Path, spec: dict, name: str = "fixed.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(spec))
    return p
