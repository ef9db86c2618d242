"""What each speed lever buys: the quickstart's GRPO step (examples/quickstart.yaml: 4 prompts x 8 completions,
16 new tokens, beta 0.1) timed with one lever changed at a time, each configuration in its own process.

Configurations:
    default            bf16 compute with fp32 master weights, the fast decoder, reference pass (beta 0.1)
    fp32               rft.train.dtype=float32 (no bf16 anywhere)
    hf-decoder         generation through transformers' forward + DynamicCache instead of the fast decoder
    no-kernels         the fast decoder on PyTorch ops instead of its C kernels (RFT_CPU_KERNELS=0)
    beta0              rft.algorithm.beta=0: no reference model, no reference forward pass
Prints the median over steps after warm-up of the step and its phases, and the ratio to the default.

    .venv/bin/python bench/levers.py [--steps 6] [--warmup 1] [--configs default,fp32,hf-decoder,no-kernels,beta0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = {"default": [], "fp32": ["rft.train.dtype=float32"], "hf-decoder": [], "no-kernels": [],
             "beta0": ["rft.algorithm.beta=0"]}
KEYS = ("time/step", "time/sampling", "time/training/forward", "time/training/backward", "time/training/optimizer")


def child(config: str, steps: int) -> dict:
    import tempfile

    from rft.config import load_job
    from rft.engine import local
    from rft.train import loop

    if config == "hf-decoder":
        orig = local.LocalEngine.__init__
        local.LocalEngine.__init__ = lambda self, *a, **kw: orig(self, *a, **(kw | {"fast": False}))
    job = load_job(ROOT / "examples" / "quickstart.yaml", OVERRIDES[config] + [
        f"rft.train.max_steps={steps}", "rft.eval.baseline=false", "rft.eval.final=false",
        "rft.checkpoint.at_eval=false", "rft.checkpoint.save_final=false", "rft.train.log_samples=false",
        "method.reinforcement.hyperparameters.eval_interval=1000", "rft.checkpoint.state_interval=100000"])
    out = tempfile.mkdtemp(prefix="rft-levers-")
    loop.run_job(job, output_dir=out, log=lambda s: None)
    return {"rows": [json.loads(x) for x in open(Path(out) / "metrics.jsonl")]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--configs", default="default,fp32,hf-decoder,no-kernels,beta0")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.steps)), flush=True)
        return
    res = {}
    for cfg in a.configs.split(","):
        env = os.environ | ({"RFT_CPU_KERNELS": "0"} if cfg == "no-kernels" else {})
        p = subprocess.run([sys.executable, __file__, "--child", cfg, "--steps", str(a.steps)], capture_output=True,
                           text=True, env=env)
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            print(f"{cfg}: failed\n{p.stderr[-2000:]}")
            continue
        rows = json.loads(line[7:])["rows"][a.warmup:]
        res[cfg] = {k: statistics.median(r[k] for r in rows) for k in KEYS}
    print(f"{'config':<12} " + " ".join(f"{k.replace('time/', '').replace('training/', ''):>10}" for k in KEYS) + "   step vs default")
    base = res.get("default", {}).get("time/step")
    for cfg, m in res.items():
        ratio = f"x{m['time/step'] / base:.2f}" if base else "-"
        print(f"{cfg:<12} " + " ".join(f"{m[k]:>10.2f}" for k in KEYS) + f"   {ratio}")


if __name__ == "__main__":
    main()
