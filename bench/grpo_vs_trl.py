"""The same GRPO job through TRL's GRPOTrainer and through rft, one after the other in one invocation.

Job (both): the embedded SmolLM2-135M-Instruct, builtin:arithmetic training prompts, 2 prompts x 8 completions
per step, up to 32 new tokens, temperature 1.0, lr 2e-5 constant, beta 0 (no KL), loss "dapo", seed 0. The
reward is rft's own grader (string_check on the last number of the completion), called from a TRL reward
function, so both optimise exactly the same signal. Each framework runs in its own subprocess so its peak
memory (max RSS) is its own. Afterwards both trained models are evaluated the same way: greedy accuracy on the
200 builtin:arithmetic validation questions with rft's evaluator.

Prints per framework: median step time over steps after warm-up, phase times (sampling, grading, training; TRL
only reports the whole step), tokens per second, peak memory, the reward curve, final greedy accuracy, and the
ratios rft / TRL. TRL is a benchmark dependency: `pip install -c constraints.txt trl datasets`.

    .venv/bin/python bench/grpo_vs_trl.py [--steps 40] [--trl-configs bf16,fp32] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

STEPS_DEFAULT = 40
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.extracted}}", "reference": "{{item.answer}}",
          "operation": "eq"}
PATTERN = r"-?\d+"


def _evaluate(model, tok) -> dict:
    from rft.config import ExtractionConfig
    from rft.data import load_dataset
    from rft.engine.local import LocalEngine, best_cpu_dtype
    from rft.eval import evaluate
    from rft.graders import build

    model = model.float().eval()
    eng = LocalEngine(model, tok, compute_dtype=best_cpu_dtype())
    rep = evaluate(eng, load_dataset("builtin:arithmetic", split="validation"), build(GRADER), model_name="bench",
                   max_new_tokens=32, extraction=ExtractionConfig(pattern=PATTERN))
    return {"accuracy": rep.accuracy.mean, "ci95": [rep.accuracy.low, rep.accuracy.high]}


def main_child(framework: str, steps: int, config: str) -> None:
    t0 = time.time()
    if framework == "rft":
        out = _child_rft(steps)
    else:
        out = _child_trl(steps, config)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["wall_s"] = time.time() - t0
    print("RESULT " + json.dumps(out), flush=True)


def _child_rft(steps: int) -> dict:
    import tempfile

    from rft.config import parse_job
    from rft.train import loop

    job = parse_job({
        "model": "smollm2-135m-instruct", "training_file": "builtin:arithmetic",
        "validation_file": "builtin:arithmetic", "seed": 0,
        "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
            "batch_size": 2, "eval_interval": 10 ** 6}}},
        "rft": {"extraction": {"pattern": PATTERN}, "algorithm": {"loss": "dapo", "beta": 0.0},
                "sampling": {"n": 8, "max_new_tokens": 32, "temperature": 1.0}, "optimizer": {"lr": 2e-5},
                "eval": {"baseline": False, "final": True},
                "train": {"max_steps": steps, "log_samples": False}, "checkpoint": {"save_final": False}},
    })
    out_dir = tempfile.mkdtemp(prefix="rft-bench-")
    res = loop.run_job(job, output_dir=out_dir, log=lambda s: None)
    rows = [json.loads(x) for x in open(os.path.join(out_dir, "metrics.jsonl"))]
    return {
        "framework": "rft", "config": f"{res['compute_dtype']} compute, fp32 master",
        "step_s": [r["time/step"] for r in rows], "reward": [r["reward"] for r in rows],
        "sampling_s": [r["time/sampling"] for r in rows], "grading_s": [r["time/grading"] for r in rows],
        "training_s": [r["time/training"] for r in rows],
        "tokens": [r["tokens_per_second"] * r["time/step"] for r in rows],
        "final": {"accuracy": res["final_eval"]["accuracy"], "ci95": res["final_eval"]["accuracy_ci95"]},
    }


def _child_trl(steps: int, config: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rft.data import load_dataset
    from rft.extraction import sample_from_text
    from rft.config import ExtractionConfig
    from rft.graders import build
    from rft.models import load, resolve

    torch.manual_seed(0)
    model, tok = load(resolve("smollm2-135m-instruct"), dtype=torch.float32)
    tok.padding_side = "left"
    train = load_dataset("builtin:arithmetic", split="train")
    ds = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in train.rows])
    grader = build(GRADER)
    ext = ExtractionConfig(pattern=PATTERN)

    def reward(completions, answer, **kw):
        out = []
        for c, a in zip(completions, answer):
            text = c[0]["content"] if isinstance(c, list) else c
            out.append(grader.grade(sample_from_text(text, ext), {"answer": a}).score)
        return out

    times, starts, rewards = [], {}, []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            starts["t"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - starts["t"])

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])

    bf16 = "bf16" in config
    cfg = GRPOConfig(
        output_dir="/tmp/trl-bench", per_device_train_batch_size=16, num_generations=8, max_completion_length=32,
        learning_rate=2e-5, lr_scheduler_type="constant", beta=0.0, loss_type="dapo", temperature=1.0,
        max_steps=steps, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=bf16,
        gradient_checkpointing="gc" in config, seed=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    final = _evaluate(trainer.model, tok)
    return {"framework": "trl", "config": config, "step_s": times, "reward": rewards, "final": final}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=STEPS_DEFAULT)
    ap.add_argument("--trl-configs", default="bf16,fp32", help="comma list of bf16, fp32, bf16-gc, fp32-gc")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "CONFIG"))
    args = ap.parse_args()
    if args.child:
        main_child(args.child[0], args.steps, args.child[1])
        return
    runs = [("trl", c) for c in args.trl_configs.split(",") if c] + [("rft", "auto")]
    results = []
    for fw, cfg in runs:
        print(f"running {fw} ({cfg}), {args.steps} steps ...", flush=True)
        p = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", fw, cfg],
                           capture_output=True, text=True)
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode != 0 or line is None:
            print(f"  {fw} ({cfg}) failed:\n{p.stderr[-3000:]}")
            continue
        results.append(json.loads(line[7:]))
    print()
    print(f"{'run':<18} {'median s/step':>13} {'sampling':>9} {'grading':>8} {'training':>9} {'tok/s':>7} {'peak MB':>8} {'final acc [95% CI]':>22}")
    for r in results:
        w = r["step_s"][args.warmup:] or r["step_s"]
        med = statistics.median(w)
        r["median_step_s"] = med
        ph = lambda k: f"{statistics.median(r[k][args.warmup:] or r[k]):.2f}" if k in r else "-"  # noqa: E731
        tps = f"{statistics.median([t / s for t, s in zip(r['tokens'][args.warmup:], w)]):.0f}" if "tokens" in r else "-"
        acc = r["final"]
        print(f"{r['framework'] + ' ' + r['config'][:12]:<18} {med:>13.2f} {ph('sampling_s'):>9} {ph('grading_s'):>8} "
              f"{ph('training_s'):>9} {tps:>7} {r['peak_rss_mb']:>8.0f} {acc['accuracy']:>8.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]")
    print("\nreward curves (per step):")
    for r in results:
        print(f"  {r['framework']} {r['config']}: " + " ".join(f"{x:.2f}" for x in r["reward"]))
    rft = next((r for r in results if r["framework"] == "rft"), None)
    trls = [r for r in results if r["framework"] == "trl"]
    if rft and trls:
        fastest = min(trls, key=lambda r: r["median_step_s"])
        print(f"\nrft / TRL fastest ({fastest['config']}): step time x{rft['median_step_s'] / fastest['median_step_s']:.2f}, "
              f"peak memory x{rft['peak_rss_mb'] / fastest['peak_rss_mb']:.2f}, "
              f"final accuracy {rft['final']['accuracy'] - fastest['final']['accuracy']:+.3f}")


if __name__ == "__main__":
    main()
