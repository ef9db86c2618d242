"""GRPO on one GPU: rft against TRL, each with and without vLLM where vLLM imports, on randomly initialised models
of the Qwen2.5-0.5B and Qwen2.5-1.5B shapes (real weights are too large to carry to a lent GPU machine).

Every configuration runs the same job in its own process: P prompts x G completions x L new tokens per step
(default 8 x 8 x 256; EOS is suppressed where the framework allows, so lengths are fixed), a random but seeded
reward, lr 1e-6, beta 0, fp32 master weights with bf16 compute, AdamW. Configurations:

    rft        rft's training step (`rft.train.step.train_step`) with the local engine; on CUDA that is the
               static-cache decoder with the decode step replayed as a CUDA graph (rft.engine.cuda_decode)
    rft-vllm   the same step with `rft.engine.backend: vllm` (rft.engine.vllm_engine), if vllm imports
    trl        TRL's GRPOTrainer, generation with transformers' generate
    trl-vllm   TRL's GRPOTrainer with vLLM in colocate mode, if vllm imports

Per configuration it reports the median step time after warm-up, the rollout's share of it, rollout tokens/s
(generated tokens / rollout seconds), the peak GPU memory torch allocated, and the device memory in use at the end
(which also counts memory vLLM takes outside torch's allocator); then ratios rft / TRL. One table, and JSON in
$OUT/gpu_check.json when OUT is set (or --json PATH). A time budget (--budget-s) bounds the whole run: a
configuration that cannot start with at least 30 s left is reported as skipped, and each child has a timeout.

    python bench/gpu_check.py                                   # on a GPU machine (bench/gpu_check.sh wraps it)
    python bench/gpu_check.py --device cpu --sizes tiny         # smoke test without a GPU (under a minute)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    # name: (hidden, intermediate, layers, heads, kv_heads, vocab); qwen2 architecture (q/k/v biases), tied embeddings
    "tiny": (64, 128, 2, 4, 2, 512),
    "0.5b": (896, 4864, 24, 14, 2, 151936),  # Qwen2.5-0.5B
    "1.5b": (1536, 8960, 28, 12, 2, 151936),  # Qwen2.5-1.5B
}
CONFIGS = ("rft", "trl", "rft-vllm", "trl-vllm")


def has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def build_model_dir(size: str, out: Path, device: str) -> Path:
    """A random Qwen2 of the given shape (saved in bf16) and a character/word-level tokenizer with ChatML."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    hidden, inter, layers, heads, kv, vocab = SIZES[size]
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    chars = list(string.ascii_letters + string.digits + " .,?!+*-=\n'")
    words = specials + chars + [f"w{i}" for i in range(vocab - len(specials) - len(chars))]
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                      tie_word_embeddings=True, rope_theta=1e6, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on the CPU for 1.5B
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    return out


def prompts(n: int) -> list[list[dict]]:
    rng = random.Random(0)
    return [[{"role": "user", "content": f"What is {rng.randint(0, 99)} {rng.choice('+*-')} {rng.randint(0, 99)}? "
              "Explain step by step."}] for _ in range(n)]


def reward_of(text: str) -> float:
    return (hash(text) % 1000) / 1000.0  # PYTHONHASHSEED=0 in the child; varied within groups


def _memory(dev: str) -> dict:
    import torch

    if dev != "cuda":
        return {"peak_alloc_gib": None, "device_used_gib": None}
    free, total = torch.cuda.mem_get_info()
    return {"peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30, "device_used_gib": (total - free) / 2**30}


# -- children ------------------------------------------------------------------------------------------------------
def child_rft(model_dir: str, a, vllm: bool) -> dict:
    import dataclasses

    import torch

    from rft.config import parse_job
    from rft.engine import backends
    from rft.models import ResolvedModel, load
    from rft.train.setup import TrainInputs, policy_parts
    from rft.config import resolve
    from rft.train.step import train_step
    from rft.types import GradeResult

    class G:
        name, sha256 = "random", "random"

        def grade(self, sample, item):
            return GradeResult(reward_of(sample["output_text"]), name="random")

        def close(self):
            pass

    total = a.warmup + a.steps
    job = parse_job({"model": model_dir, "training_file": "builtin:arithmetic", "method": {"type": "reinforcement",
                     "reinforcement": {"grader": {"type": "string_check", "name": "x", "input": "a", "reference": "a",
                                                  "operation": "eq"}}},
                     "rft": {"sampling": {"n": a.group, "max_new_tokens": a.new_tokens, "temperature": 1.0},
                             "optimizer": {"lr": 1e-6}, "algorithm": {"beta": 0.0},
                             "train": {"dtype": "bfloat16", "device": a.device},
                             "engine": {"backend": "vllm" if vllm else "local"}}})
    dev = a.device
    ref = ResolvedModel(model_dir, Path(model_dir), "directory")
    model, tok = load(ref, dtype=torch.float32, device=dev)
    model.train()
    inputs = TrainInputs(values=resolve(job, a.prompts * total), train_ds=None, val_ds=None, guard_ds=None, grader=G(),
                         guard_grader=None, model_ref=ref, compute_dtype=torch.bfloat16)
    parts = policy_parts(job, inputs, model, tok)
    if vllm:  # the job's engine choice, as training setup makes it
        parts = dataclasses.replace(parts, engine=None)
        engine = backends.training_engine(job.rft.engine, model, tok, compute_dtype=torch.bfloat16, model_path=model_dir)
        parts = dataclasses.replace(parts, engine=engine)
    else:
        parts.engine.eos = {-1}  # fixed lengths: no row ends early
    backend = parts.engine.backend
    ps = prompts(a.prompts * total)
    times, roll_s, roll_tok = [], [], []
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for step in range(1, total + 1):
        rows = [{"messages": m} for m in ps[(step - 1) * a.prompts: step * a.prompts]]
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(step, rows, parts)
        if dev == "cuda":
            torch.cuda.synchronize()
        if step > a.warmup:
            st = parts.engine.last_stats  # the step's rollout (its only generate call)
            times.append(time.perf_counter() - t0)
            roll_s.append(st.seconds)
            roll_tok.append(st.completion_tokens)
    return {"backend": backend, "median_step_s": statistics.median(times), "rollout_s": statistics.median(roll_s),
            "rollout_tokens": statistics.mean(roll_tok), **_memory(dev)}


def child_trl(model_dir: str, a, vllm: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    total = a.warmup + a.steps
    ds = Dataset.from_list([{"prompt": m} for m in prompts(a.prompts * total)])

    def rf(completions, **kw):
        return [reward_of(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    stamps: list[float] = []
    gen_s: list[float] = []

    class T(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    extra = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3) if vllm else {}
    cfg = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.prompts * a.group,
                     num_generations=a.group, max_completion_length=a.new_tokens, learning_rate=1e-6, beta=0.0,
                     loss_type="dapo", bf16=a.device == "cuda", use_cpu=a.device == "cpu", max_steps=total,
                     logging_steps=1, save_strategy="no", report_to=[], seed=0, temperature=1.0,
                     generation_kwargs={"min_tokens" if vllm else "min_new_tokens": a.new_tokens},
                     shuffle_dataset=False, **extra)
    tr = GRPOTrainer(model=model, reward_funcs=rf, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[T()])
    inner = tr._generate_single_turn  # the rollout, HF generate or vLLM: timed around it

    def timed(*args, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = inner(*args, **kw)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        gen_s.append(time.perf_counter() - t0)
        return out

    tr._generate_single_turn = timed
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tr.train()
    ends = [t0] + stamps
    times = [ends[i + 1] - ends[i] for i in range(len(ends) - 1)][a.warmup:]
    return {"backend": "vllm" if vllm else "transformers generate", "median_step_s": statistics.median(times),
            "rollout_s": statistics.median(gen_s[a.warmup:]) if len(gen_s) > a.warmup else None,
            "rollout_tokens": a.prompts * a.group * a.new_tokens, **_memory(a.device)}


# -- parent --------------------------------------------------------------------------------------------------------
def run_child(cfg: str, model_dir: Path, a, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", cfg, str(model_dir), "--device", a.device, "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--prompts", str(a.prompts), "--group", str(a.group),
           "--new-tokens", str(a.new_tokens)]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-800:]
        return {"status": f"timed out after {timeout:.0f} s", "log": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        return {"status": f"failed (exit {p.returncode})", "log": p.stderr[-1500:]}
    return {"status": "ok", "wall_s": time.perf_counter() - t0, **json.loads(line[0][7:])}


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.5b,1.5b", help="comma list of: " + ", ".join(SIZES))
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of: " + ", ".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=None, help="timed steps after warm-up (cuda 3, cpu 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (cuda 8, cpu 2)")
    ap.add_argument("--group", type=int, default=None, help="completions per prompt (cuda 8, cpu 4)")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens per completion (cuda 256, cpu 16)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--budget-s", type=float, default=390, help="wall-clock budget for the whole run")
    ap.add_argument("--child-timeout-s", type=float, default=150, help="limit for one configuration")
    ap.add_argument("--json", default=None, help="where to write the results (default: $OUT/gpu_check.json)")
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "MODEL_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    small = a.device == "cpu"  # the smoke test: the same code on a job small enough for a loaded CPU
    for k, gpu, cpu in (("steps", 3, 2), ("prompts", 8, 2), ("group", 8, 4), ("new_tokens", 256, 16)):
        if getattr(a, k) is None:
            setattr(a, k, cpu if small else gpu)
    if a.child:
        cfg, d = a.child
        fn = child_rft if cfg.startswith("rft") else child_trl
        print("RESULT " + json.dumps(fn(d, a, cfg.endswith("-vllm"))), flush=True)
        return

    deadline = time.perf_counter() + a.budget_s
    import torch
    import transformers

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --device cpu for the smoke test)")
    avail = {"trl": has("trl") and has("datasets"), "vllm": has("vllm")}
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for m in ("trl", "vllm"):
        if has(m):
            versions[m] = __import__(m).__version__
    name = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"
    print(f"device: {name}; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"job: {a.prompts} prompts x {a.group} completions x {a.new_tokens} new tokens per step, bf16 compute, "
          f"fp32 master weights, AdamW; median of {a.steps} steps after {a.warmup} warm-up")
    for m, ok in avail.items():
        if not ok:
            print(f"note: {m} does not import here: its configurations are reported as not run")
    rows = []
    for size in a.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            d = build_model_dir(size, Path(tmp) / size, a.device)
            for cfg in a.configs.split(","):
                need = [m for m in ("trl", "vllm") if m in cfg and not avail[m]]
                left = deadline - time.perf_counter()
                if need:
                    r = {"status": f"not run: {' and '.join(need)} not importable"}
                elif left < 30:
                    r = {"status": "skipped: time budget spent"}
                else:
                    r = run_child(cfg, d, a, min(a.child_timeout_s, left))
                rows.append({"size": size, "config": cfg, **r})
                line = rows[-1]
                print(f"  {size} {cfg}: {line['status']}", flush=True)
                if line["status"].startswith(("failed", "timed out")):
                    print("    " + line.get("log", "").strip().replace("\n", "\n    ")[-1200:])
    print()
    print("| size | config | engine | s/step | rollout s | rollout tok/s | peak alloc GiB | device used GiB | status |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tps = r["rollout_tokens"] / r["rollout_s"] if r.get("rollout_s") else None
        r["rollout_tokens_per_s"] = tps
        print(f"| {r['size']} | {r['config']} | {r.get('backend', '-')} | {fmt(r.get('median_step_s'), '.2f')} | "
              f"{fmt(r.get('rollout_s'), '.2f')} | {fmt(tps, '.0f')} | {fmt(r.get('peak_alloc_gib'), '.1f')} | "
              f"{fmt(r.get('device_used_gib'), '.1f')} | {r['status']} |")
    print()
    ratios = []
    for size in a.sizes.split(","):
        got = {r["config"]: r for r in rows if r["size"] == size and r["status"] == "ok"}
        for mine, theirs in (("rft", "trl"), ("rft-vllm", "trl-vllm"), ("rft", "trl-vllm")):
            if mine in got and theirs in got:
                x, y = got[mine], got[theirs]
                ratio = {"size": size, "pair": f"{mine} / {theirs}",
                         "step_time": x["median_step_s"] / y["median_step_s"],
                         "rollout_tokens_per_s": (x["rollout_tokens_per_s"] / y["rollout_tokens_per_s"]
                                                  if x.get("rollout_tokens_per_s") and y.get("rollout_tokens_per_s") else None),
                         "peak_alloc": (x["peak_alloc_gib"] / y["peak_alloc_gib"]
                                        if x.get("peak_alloc_gib") and y.get("peak_alloc_gib") else None)}
                ratios.append(ratio)
                print(f"{size} {ratio['pair']}: step time x{ratio['step_time']:.2f}, rollout tokens/s "
                      f"x{fmt(ratio['rollout_tokens_per_s'], '.2f')}, peak memory x{fmt(ratio['peak_alloc'], '.2f')}")
    if not ratios:
        print("no ratios: fewer than two configurations of one size finished")
    path = a.json or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps({"device": name, "versions": versions, "args": vars(a), "rows": rows,
                                          "ratios": ratios}, indent=1, default=str))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
