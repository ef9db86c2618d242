"""GRPO step time on one GPU: rft and TRL side by side, on randomly initialised Llama models of the
SmolLM2-135M shape and of about 0.5B parameters (the real weights are too large to carry to a lent GPU machine).

Both frameworks run the same job: P prompts x G completions per step, exactly L new tokens each (EOS is
ignored so every sequence has the same length), a random but seeded reward, lr 1e-6, beta 0, bf16 compute.
Prints per model size and framework: median step time after warm-up, generated tokens per second, peak GPU
memory, and the ratio rft / TRL. TRL runs only if it is importable (`bench/gpu_check.sh` installs it from
wheels carried in bench/wheels/).

    python bench/gpu_check.py [--sizes 135m,500m] [--steps 6] [--warmup 2] [--prompts 4] [--group 8] [--new-tokens 128]
    python bench/gpu_check.py --device cpu --sizes tiny --steps 3 --warmup 1   # smoke test without a GPU
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    # name: (hidden, intermediate, layers, heads, kv_heads, vocab)
    "tiny": (64, 128, 2, 4, 2, 512),
    "135m": (576, 1536, 30, 9, 3, 49152),  # SmolLM2-135M
    "500m": (1024, 4096, 24, 16, 4, 49152),  # ~0.49B with tied embeddings
}


def build_model_dir(size: str, out: Path) -> Path:
    """A random Llama of the given shape and a word-level tokenizer of the same vocabulary, with ChatML."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def prompts(n: int) -> list[list[dict]]:
    rng = random.Random(0)
    return [[{"role": "user", "content": f"What is {rng.randint(0, 9)} {rng.choice('+*-')} {rng.randint(0, 9)}? "
              "Explain step by step."}] for _ in range(n)]


def reward_of(text: str) -> float:
    return (hash(text) % 1000) / 1000.0  # seeded by PYTHONHASHSEED=0 in the child; varied within groups


def child_rft(model_dir: str, a) -> dict:
    import torch

    from rft.config import parse_job, resolve
    from rft.engine.local import LocalEngine
    from rft.models import ResolvedModel, load
    from rft.train.setup import TrainInputs, TrainParts, make_scheduler
    from rft.train.step import step_metrics, train_step
    from rft.types import GradeResult

    class G:
        name, sha256 = "random", "random"

        def grade(self, sample, item):
            return GradeResult(reward_of(sample["output_text"]), name="random")

        def close(self):
            pass

    job = parse_job({"model": model_dir, "training_file": "builtin:arithmetic", "method": {"type": "reinforcement",
                     "reinforcement": {"grader": {"type": "string_check", "name": "x", "input": "a", "reference": "a",
                                                  "operation": "eq"}}},
                     "rft": {"sampling": {"n": a.group, "max_new_tokens": a.new_tokens},
                             "optimizer": {"lr": 1e-6}, "algorithm": {"beta": 0.0}, "train": {"dtype": "bfloat16"}}})
    dev = a.device
    model, tok = load(ResolvedModel(model_dir, Path(model_dir), "directory"), dtype=torch.float32, device=dev)
    model.train()
    engine = LocalEngine(model, tok, compute_dtype=torch.bfloat16)
    engine.eos = {-1}  # fixed lengths
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-6, foreach=True)
    total = a.warmup + a.steps
    ps = prompts(a.prompts * total)
    # sampling.n = a.group, so the resolved completions per prompt are a.group
    inputs = TrainInputs(values=resolve(job, a.prompts * total), train_ds=None, val_ds=None, guard_ds=None, grader=G(),
                         guard_grader=None, model_ref=ResolvedModel(model_dir, Path(model_dir), "directory"),
                         compute_dtype=torch.bfloat16)
    parts = TrainParts(job=job, inputs=inputs, model=model, tokenizer=tok, params=params, optimizer=opt,
                       scheduler=make_scheduler(opt, job, total), reference=None, engine=engine)
    times, toks = [], []
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(1, total + 1):
        rows = [{"messages": m} for m in ps[(step - 1) * a.prompts: step * a.prompts]]
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = train_step(step, rows, parts)
        if dev == "cuda":
            torch.cuda.synchronize()
        if step > a.warmup:
            times.append(time.perf_counter() - t0)
            toks.append(step_metrics(res, "random")["completions/mean_length"] * a.prompts * a.group)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None
    return {"median_step_s": statistics.median(times), "gen_tokens_per_step": statistics.mean(toks),
            "peak_gpu_mb": peak}


def child_trl(model_dir: str, a) -> dict:
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

    stamps = []

    class T(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    cfg = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.prompts * a.group,
                     num_generations=a.group, max_completion_length=a.new_tokens, learning_rate=1e-6, beta=0.0,
                     loss_type="dapo", bf16=a.device == "cuda", use_cpu=a.device == "cpu", max_steps=total,
                     logging_steps=1, save_strategy="no", report_to=[], seed=0, temperature=1.0,
                     generation_kwargs={"min_new_tokens": a.new_tokens}, shuffle_dataset=False)
    tr = GRPOTrainer(model=model, reward_funcs=rf, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[T()])
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tr.train()
    ends = [t0] + stamps
    times = [ends[i + 1] - ends[i] for i in range(len(ends) - 1)][a.warmup:]
    peak = torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda" else None
    return {"median_step_s": statistics.median(times), "gen_tokens_per_step": a.prompts * a.group * a.new_tokens,
            "peak_gpu_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="135m,500m")
    ap.add_argument("--frameworks", default="rft,trl")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "MODEL_DIR"))
    a = ap.parse_args()
    if a.child:
        fw, d = a.child
        out = child_rft(d, a) if fw == "rft" else child_trl(d, a)
        print("RESULT " + json.dumps(out), flush=True)
        return
    import torch

    print(f"device: {torch.cuda.get_device_name(0) if a.device == 'cuda' else 'cpu'}; {a.prompts} prompts x "
          f"{a.group} completions x {a.new_tokens} tokens per step; median of {a.steps} steps after {a.warmup} warm-up")
    base = [sys.argv[0]] + [x for x in sys.argv[1:]]
    for size in a.sizes.split(","):
        d = build_model_dir(size, Path(tempfile.mkdtemp()) / size)
        res = {}
        for fw in a.frameworks.split(","):
            cmd = [sys.executable] + base + ["--child", fw, str(d)]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "PYTHONHASHSEED": "0"})
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not line:
                print(f"{size} {fw}: failed (exit {p.returncode})\n{p.stderr[-1500:]}")
                continue
            r = json.loads(line[0][7:])
            res[fw] = r
            peak = f"{r['peak_gpu_mb']:.0f} MB" if r["peak_gpu_mb"] else "-"
            print(f"{size:>5} {fw:>4}: {r['median_step_s']:.3f} s/step, "
                  f"{r['gen_tokens_per_step'] / r['median_step_s']:.0f} generated tokens/s, peak GPU memory {peak}", flush=True)
        if "rft" in res and "trl" in res:
            print(f"{size:>5} rft / TRL step time: x{res['rft']['median_step_s'] / res['trl']['median_step_s']:.2f}")


if __name__ == "__main__":
    main()
