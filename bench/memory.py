"""Forecast against measured peak memory: `rft.train.memory`'s forecast next to the peak RSS of real GRPO steps,
for several memory settings on two models, each configuration in a fresh process (CPU).

Models:
    smollm2     the embedded SmolLM2-135M-Instruct
    qwen05      a randomly initialised Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, intermediate 4864, 14 heads,
                2 KV heads, vocab 151936, tied embeddings), built from a config and saved once (bf16 safetensors,
                ~1 GB) under --cache (default /tmp/rft-bench-memory); the SmolLM2 tokenizer stands in for Qwen's
Configurations:
    fp32        fp32 weights, AdamW (the default)
    bf16-8bit   rft.train.weights_dtype=bfloat16 + rft.optimizer.name=adamw_8bit (needs bitsandbytes)
    lora        rft.lora.enabled=true (rank 16, all linear layers), fp32 base
    ckpt        rft.train.gradient_checkpointing=true, otherwise fp32
    lora-bf16   LoRA on a bf16 base
    bf16        rft.train.weights_dtype=bfloat16 with AdamW (the split fp32 master, rft.train.optim.SplitMaster)
    lora-int8   LoRA on int8 base linears (rft.lora.quantize_base=int8, bitsandbytes' Linear8bitLt), fp32 rest
The job: 2 prompts x 8 completions, 32 new tokens, an arithmetic prompt (~60 tokens), a fuzzy-match grader (random
completions score differently, so every step trains; `updates` counts the optimizer steps). A child builds the parts with `setup_training` (the forecast
runs there, before the model loads), runs --steps GRPO steps, and reports its peak RSS (VmHWM) and the forecast.

    nice -n 10 .venv/bin/python bench/memory.py [--models smollm2,qwen05] [--configs fp32,bf16-8bit,lora,ckpt]
                                                [--steps 2] [--max-new-tokens 32] [--prompts 2] [--group 8] [--json]
    .venv/bin/python bench/memory.py --reforecast results.json    # the same measurements, today's forecast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "fp32": {},
    "bf16-8bit": {"train": {"weights_dtype": "bfloat16"}, "optimizer": {"name": "adamw_8bit"}},
    "lora": {"lora": {"enabled": True}},
    "ckpt": {"train": {"gradient_checkpointing": True}},
    "lora-bf16": {"lora": {"enabled": True}, "train": {"weights_dtype": "bfloat16"}},
    "bf16": {"train": {"weights_dtype": "bfloat16"}},
    "lora-int8": {"lora": {"enabled": True, "quantize_base": "int8"}},
}
QWEN05 = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=896, num_hidden_layers=24,
              intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
              tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
              hidden_act="silu", use_sliding_window=False)


def _hwm(key: str = "VmHWM:") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def build_qwen(cache: Path) -> Path:
    """The random Qwen2.5-0.5B-shaped model directory (made once, in a child so its memory is returned)."""
    out = cache / "qwen05-random"
    if (out / "model.safetensors").exists():
        return out
    code = f"""
import torch, json
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from rft import models
cfg = {QWEN05!r}
mt = cfg.pop("model_type")
tok = AutoTokenizer.from_pretrained(str(models.resolve("smollm2-135m-instruct").path), local_files_only=True)
cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(AutoConfig.for_model(mt, **cfg), dtype=torch.bfloat16)
out = Path({str(out)!r}); tmp = out.with_name(out.name + ".partial")
m.save_pretrained(tmp, safe_serialization=True); tok.save_pretrained(tmp); tmp.rename(out)
"""
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return out


def bench_job(model: str, config: str, steps: int, max_new: int, workdir: Path, prompts: int, group: int):
    """(the job, its four rows)."""
    from rft.jobcheck import parse_job

    data = workdir / "data.jsonl"
    rows = [{"messages": [{"role": "system", "content": "You are a careful calculator. Answer with the number only."},
                          {"role": "user", "content": f"What is {a} + {b}? Think about it, then answer."}],
             "answer": str(a + b)} for a, b in ((12, 30), (7, 8), (45, 11), (3, 99))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"model": model, "training_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                # a similarity score: random completions score differently, so every group has reward variance
                # and every step trains
                "grader": {"type": "text_similarity", "input": "{{sample.output_text}}",
                           "reference": "{{item.answer}} is the answer", "evaluation_metric": "fuzzy_match"},
                "hyperparameters": {"batch_size": prompts, "n_epochs": 1}}},
            "rft": {"sampling": {"n": group, "max_new_tokens": max_new}, "train": {"max_steps": steps},
                    "learnability": {"enabled": False}, "eval": {"baseline": False, "final": False}}}
    for section, values in CONFIGS[config].items():
        spec["rft"].setdefault(section, {}).update(values)
    return parse_job(spec, "bench job"), rows


def child(model: str, config: str, steps: int, max_new: int, workdir: Path, prompts: int = 2, group: int = 8) -> dict:
    from rft.train import memory
    from rft.train.setup import load_inputs, set_seed, setup_training
    from rft.train.step import train_step

    job, rows = bench_job(model, config, steps, max_new, workdir, prompts, group)
    set_seed(0)
    inputs = load_inputs(job)
    fc = memory.job_forecast(job, inputs, device="cpu")
    if job.rft.lora.quantize_base == "int8":  # the policy as setup_training builds it, int8 base layers included
        from rft.models import quant
        from rft.train.setup import load_policy, policy_parts

        policy, tok = load_policy(job, inputs.model_ref)
        quant.quantize_lora_base(policy)  # a no-op where load_policy already did it
        parts = policy_parts(job, inputs, policy, tok)
    else:
        parts = setup_training(job, inputs, check_memory=False)
    after_setup = _hwm()
    trained = 0
    for k in range(steps):
        st = train_step(k + 1, [rows[(prompts * k + i) % 4] for i in range(prompts)], parts)
        trained += st.update.updates
    inputs.close()
    return {"model": model, "config": config, "forecast": fc.peak, "forecast_phase": fc.peak_phase,
            "components": fc.components, "phases": fc.phases, "measured": _hwm(), "after_setup": after_setup,
            "updates": trained, "settings": fc.settings,
            # file-backed resident pages at the end (clean safetensors pages the kernel can drop; in VmHWM)
            "rss_file": _hwm("RssFile:")}


def reforecast(path: Path, cache: Path) -> None:
    from rft.train import memory
    from rft.train.setup import load_inputs

    results = json.loads(path.read_text())
    for r in results:
        ref = str(cache / "qwen05-random") if r["model"] == "qwen05" else "smollm2-135m-instruct"
        st = r["settings"]
        with tempfile.TemporaryDirectory() as d:
            job, _ = bench_job(ref, r["config"], 1, st["completion_tokens"], Path(d), st["prompts_per_step"],
                               st["group"])
            inputs = load_inputs(job)
            fc = memory.job_forecast(job, inputs, device="cpu")
            inputs.close()
        r.update(forecast=fc.peak, forecast_phase=fc.peak_phase, components=fc.components, phases=fc.phases)
    table(results)


def table(results: list[dict]) -> None:
    print("| model | config | forecast GiB (peak phase) | measured peak RSS GiB | forecast / measured | after setup GiB "
          "| updates |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['config']} | {r['forecast'] / 2**30:.2f} ({r['forecast_phase']}) | "
              f"{r['measured'] / 2**30:.2f} | {r['forecast'] / r['measured']:.2f} | "
              f"{r['after_setup'] / 2**30 if r.get('after_setup') else float('nan'):.2f} | {r['updates']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2,qwen05")
    ap.add_argument("--configs", default="fp32,bf16-8bit,lora,ckpt")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "rft-bench-memory"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    ap.add_argument("--reforecast", metavar="RESULTS_JSON",
                    help="recompute the forecasts of an earlier --json run with the current code (no training)")
    a = ap.parse_args()
    if a.reforecast:
        return reforecast(Path(a.reforecast), Path(a.cache))
    if a.child:
        with tempfile.TemporaryDirectory() as d:
            os.environ.setdefault("RFT_HOME", str(Path(d) / "home"))
            print("RESULT " + json.dumps(child(a.child[0], a.child[1], a.steps, a.max_new_tokens, Path(d), a.prompts,
                                               a.group)))
        return
    results = []
    for m in a.models.split(","):
        ref = str(build_qwen(Path(a.cache))) if m == "qwen05" else "smollm2-135m-instruct"
        for c in a.configs.split(","):
            r = subprocess.run([sys.executable, __file__, "--child", ref, c, "--steps", str(a.steps),
                                "--max-new-tokens", str(a.max_new_tokens), "--prompts", str(a.prompts), "--group",
                                str(a.group)], cwd=ROOT, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode or not line:
                print(f"{m} {c}: failed (exit {r.returncode})\n{r.stderr[-3000:]}", file=sys.stderr)
                continue
            res = json.loads(line[-1][7:]) | {"model": m}
            results.append(res)
            print(f"{m:8s} {c:10s} forecast {res['forecast'] / 2**30:6.2f} GiB  measured {res['measured'] / 2**30:6.2f} "
                  f"GiB  ratio {res['forecast'] / res['measured']:.2f}  updates {res['updates']}", file=sys.stderr,
                  flush=True)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    table(results)


if __name__ == "__main__":
    main()
