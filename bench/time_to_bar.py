"""Time to the quickstart's accuracy bar: rft vs TRL's GRPOTrainer on the quickstart recipe, one after the other.

The recipe is examples/quickstart.yaml: the embedded SmolLM2-135M-Instruct on builtin:arithmetic, 4 prompts x 8
completions per step, up to 16 new tokens, temperature 1, dapo loss with clip 0.2 / 0.28, KL beta 0.1 to the base
model, lr 2e-5 decaying linearly to 0 over 20 steps; the reward is rft's string_check on the last number.
Both are evaluated the same way after steps 5, 10, 15 and 20: greedy accuracy on the 200 held-out validation
questions with rft's evaluator. Training time counts the training steps only (evaluation excluded, for both).

Prints, per framework, the validation accuracy and cumulative training seconds at each evaluation, the training
time at which accuracy first reaches the bar (default 0.90), and the ratio rft / TRL.

    .venv/bin/python bench/time_to_bar.py [--bar 0.90] [--trl-config bf16|fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_EVERY, STEPS = 5, 20


def child_rft() -> dict:
    from rft.config import load_job
    from rft.train import loop

    job = load_job(ROOT / "examples" / "quickstart.yaml", ["rft.eval.baseline=false", "rft.train.log_samples=false",
                                                           "rft.checkpoint.at_eval=false", "rft.checkpoint.save_final=false",
                                                           "rft.checkpoint.state_interval=100000"])
    out = tempfile.mkdtemp(prefix="rft-ttb-")
    res = loop.run_job(job, output_dir=out, log=lambda s: None)
    rows = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    cum, t = {}, 0.0
    for r in rows:
        t += r["time/step"]
        cum[r["step"]] = t
    evals = [{"step": e["step"], "accuracy": e["accuracy"], "train_s": cum[e["step"]]} for e in res["evals"]]
    return {"framework": "rft", "evals": evals, "step_s": [r["time/step"] for r in rows]}


def child_trl(config: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rft.config import ExtractionConfig
    from rft.data import load_dataset
    from rft.engine.local import LocalEngine, best_cpu_dtype
    from rft.eval import evaluate
    from rft.extraction import sample_from_text
    from rft.graders import build
    from rft.models import load, resolve

    grader_spec = {"type": "string_check", "name": "exact_answer", "input": "{{sample.extracted}}",
                   "reference": "{{item.answer}}", "operation": "eq"}
    torch.manual_seed(0)
    model, tok = load(resolve("smollm2-135m-instruct"), dtype=torch.float32)
    tok.padding_side = "left"
    train = load_dataset("builtin:arithmetic", split="train")
    val = load_dataset("builtin:arithmetic", split="validation")
    ds = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in train.rows])
    grader = build(grader_spec)
    ext = ExtractionConfig(pattern=r"-?\d+")

    def reward(completions, answer, **kw):
        return [grader.grade(sample_from_text(c[0]["content"] if isinstance(c, list) else c, ext), {"answer": a}).score
                for c, a in zip(completions, answer)]

    state = {"train_s": 0.0, "t0": 0.0, "evals": [], "steps": []}

    class Cb(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            state["t0"] = time.perf_counter()

        def on_step_end(self, args, st, control, model=None, **kw):
            dt = time.perf_counter() - state["t0"]
            state["train_s"] += dt
            state["steps"].append(dt)
            if st.global_step % EVAL_EVERY == 0:
                m = kw.get("model") or model
                eng = LocalEngine(m, tok, compute_dtype=best_cpu_dtype())
                rep = evaluate(eng, val, grader, model_name="trl", max_new_tokens=16, extraction=ext)
                m.train()
                state["evals"].append({"step": st.global_step, "accuracy": rep.accuracy.mean, "train_s": state["train_s"]})

    cfg = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=32, num_generations=8,
                     max_completion_length=16, learning_rate=2e-5, lr_scheduler_type="linear", warmup_steps=0,
                     beta=0.1, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, temperature=1.0, max_steps=STEPS,
                     logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=config == "bf16", seed=0,
                     dataloader_num_workers=0)
    tr = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Cb()])
    tr.train()
    return {"framework": "trl", "config": config, "evals": state["evals"], "step_s": state["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bar", type=float, default=0.90)
    ap.add_argument("--trl-config", default="bf16")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        out = child_rft() if a.child == "rft" else child_trl(a.trl_config)
        print("RESULT " + json.dumps(out), flush=True)
        return
    results = {}
    for fw in ("trl", "rft"):
        print(f"running {fw} ...", flush=True)
        p = subprocess.run([sys.executable, __file__, "--child", fw, "--trl-config", a.trl_config], capture_output=True,
                           text=True)
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            print(f"{fw} failed:\n{p.stderr[-3000:]}")
            continue
        results[fw] = json.loads(line[7:])
    hit = {}
    for fw, r in results.items():
        cells = "  ".join(f"step {e['step']}: {e['accuracy']:.3f} @ {e['train_s']:.0f}s" for e in r["evals"])
        first = next((e for e in r["evals"] if e["accuracy"] >= a.bar), None)
        hit[fw] = first["train_s"] if first else None
        med = sorted(r["step_s"])[len(r["step_s"]) // 2]
        print(f"{fw:>4} (median {med:.2f} s/step): {cells}")
        print(f"      reaches {a.bar:.2f} after {first['train_s']:.0f} s of training (step {first['step']})" if first
              else f"      does not reach {a.bar:.2f} in {STEPS} steps")
    if hit.get("rft") and hit.get("trl"):
        print(f"\ntime to {a.bar:.2f}: rft / TRL = x{hit['rft'] / hit['trl']:.2f}")
    elif hit.get("rft"):
        total = sum(results["trl"]["step_s"]) if "trl" in results else float("nan")
        print(f"\nTRL did not reach {a.bar:.2f} within {STEPS} steps ({total:.0f} s); rft reached it in {hit['rft']:.0f} s "
              f"(x{hit['rft'] / total:.2f} of TRL's whole run)")


if __name__ == "__main__":
    main()
