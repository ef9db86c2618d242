"""Scaling out (issue 16): rollout throughput on one process vs 1 and 2 Ray rollout workers, step time with
overlapped rollouts off and on, and the weight broadcast (Ray object store vs a torch.distributed gloo
broadcast) for a model of the embedded model's size, printed side by side.

    .venv/bin/python bench/scale.py [--size small] [--steps 4] [--rounds 3] [--json]
    python bench/scale.py --device cuda --gpus 2 --size smollm --no-broadcast      (a GPU machine, Ray installed)

Models are random Llamas with a character tokenizer (no download): `tiny` (the tests' 4-layer, hidden 64),
`small` (4 layers, hidden 256) and `smollm` (SmolLM2-135M's shape: 30 layers, hidden 576, 135M parameters;
used for the broadcast whatever --size says). Random models never emit EOS, so every completion runs to
max_new_tokens: tokens/s are comparable across rows. A local Ray instance is started and stopped here.
On `--device cuda` the one-process rows run on the driver's GPU and the Ray rollout workers ask for GPUs
(`--gpus` in all: 1 worker gets min(1, gpus), 2 workers gpus/2 each, so `--gpus 1` shares one GPU by halves).
What bounds the numbers on a small machine: Ray workers and the driver share the same cores, so 2 workers
only help when cores are idle; overlap only helps when sampling and training can use different cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the char tokenizer of the tests

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "smollm": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                   num_key_value_heads=3),
}


def make_model(size: str, out: Path) -> Path:
    from conftest import char_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    vocab = len(tok) if size != "smollm" else 49152  # the embedded model's vocabulary size (its weights' share)
    cfg = LlamaConfig(vocab_size=max(vocab, len(tok)), max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **SIZES[size])
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def make_job(tmp: Path, model_dir: Path, *, prompts: int, G: int, tokens: int, steps: int, **rft):
    from rft.config import load_job

    data = tmp / "data.jsonl"
    words = ["red", "blue", "green", "gold", "pink", "grey", "teal", "navy"]
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}"}], "answer": w}) + "\n"
                            for w in words))
    spec = {"model": str(model_dir), "training_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": {"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
                           "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"},
                "hyperparameters": {"batch_size": prompts, "n_epochs": 100}}},
            "rft": {"sampling": {"n": G, "max_new_tokens": tokens, "temperature": 1.0},
                    "train": {"dtype": "float32", "max_steps": steps}, "learnability": {"enabled": False},
                    "optimizer": {"lr": 1e-3}, **rft}}
    p = tmp / "job.json"
    p.write_text(json.dumps(spec))
    return load_job(p)


def with_cluster(parts, **cluster):
    from rft.config import ClusterConfig

    job = parts.job.model_copy(deep=True)
    job.rft.cluster = ClusterConfig(**(job.rft.cluster.model_dump() | cluster))
    return dataclasses.replace(parts, job=job)


def rollout_throughput(parts, rounds: int, gpus: float = 0.0) -> dict:
    """Completion tokens/s of a step's rollout: one process, 1 Ray worker, 2 Ray workers. The sources take
    turns round by round (a shared machine's load drifts; interleaving gives each the same share); median."""
    import statistics

    from rft.train.distributed.cluster import RayRollouts
    from rft.train.step import LocalRollouts

    rows = list(parts.inputs.train_ds.rows)[: parts.values.prompts_per_step]
    srcs = {"one process": LocalRollouts(parts)}
    for w in (1, 2):
        g = min(1.0, gpus) if w == 1 else gpus / w  # per worker
        p = with_cluster(parts, enabled=True, rollout_workers=w, grader_workers=0,
                         rollout={"num_cpus": 1, "num_gpus": g})
        srcs[f"ray, {w} rollout worker{'s' if w > 1 else ''}"] = RayRollouts(p, {}, None)
    rates: dict[str, list[float]] = {k: [] for k in srcs}
    try:
        for src in srcs.values():
            src.start(rows, 1).result()  # warm-up (and the actors' first call)
        for r in range(rounds):
            for k, src in srcs.items():
                t0 = time.perf_counter()
                ro = src.start(rows, 100 + r).result()
                rates[k].append(sum(len(c.token_ids) for c in ro.completions) / (time.perf_counter() - t0))
    finally:
        for src in srcs.values():
            src.close()
    return {k: statistics.median(v) for k, v in rates.items()}


def step_times(tmp: Path, model_dir: Path, args) -> dict:
    """Median wall time per step (steps 2..N) with overlapped rollouts off and on, one process each, the two
    runs taking turns step by step (the same machine load for both; an overlapped step's time runs until its
    prefetched rollout is done)."""
    import statistics

    from rft.train.cursor import DataCursor
    from rft.train.setup import setup_training
    from rft.train.step import StepRunner

    runs = {}
    for overlap in (False, True):
        job = make_job(tmp, model_dir, prompts=args.prompts, G=args.group, tokens=args.tokens, steps=args.steps,
                       train={"dtype": "float32", "max_steps": args.steps, "overlap_rollouts": overlap,
                              "device": args.device})
        parts = setup_training(job)
        runner = StepRunner(parts, DataCursor(len(parts.inputs.train_ds), job.seed), state_every=10_000,
                            total=args.steps + 1)
        runs["overlap on" if overlap else "overlap off"] = (parts, runner, {"step": [], "sampling": [], "training": []})
    try:
        for step in range(1, args.steps + 1):
            for parts, runner, rec in runs.values():
                t0 = time.perf_counter()
                st = runner.next(step)
                if runner.pending is not None:
                    # the next step's rollout runs on: wait for it here and count it, so it does not run for free
                    # during the other run's step (this is the pipelined step time: max(training, sampling))
                    runner.pending.future.result()
                if step > 1:
                    rec["step"].append(time.perf_counter() - t0)
                    rec["sampling"].append(st.t_sampling)
                    rec["training"].append(st.t_training)
    finally:
        for parts, runner, _ in runs.values():
            runner.close()
            parts.inputs.close()
    return {k: {f"{n}_s": statistics.median(v) if v else float("nan") for n, v in rec.items()}
            for k, (_, _, rec) in runs.items()}


class _Rank:
    """A Ray actor for the broadcast comparison: loads weights from the object store, or joins a gloo group."""

    def __init__(self, n: int):
        self.buf = torch.empty(n)

    def load(self, state) -> int:
        return len(state)

    def join(self, init: str, rank: int, world: int) -> None:
        import datetime

        import torch.distributed as dist

        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=300))

    def bcast(self) -> float:
        import torch.distributed as dist

        dist.broadcast(self.buf, src=0)
        return float(self.buf[0])


def broadcast(model_dir: Path, rounds: int) -> dict:
    """Seconds to get the trainable weights of `model_dir` to 2 workers: object store vs gloo broadcast."""
    import ray
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from rft.train.distributed.cluster import _free_port

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    n = sum(t.numel() for t in state.values())
    Rank = ray.remote(num_cpus=0.5)(_Rank)
    ranks = [Rank.remote(n) for _ in range(2)]
    out = {"parameters": n, "MiB": n * 4 / 2**20}
    ray.get([r.load.remote({}) for r in ranks])
    t = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ref = ray.put(state)
        ray.get([r.load.remote(ref) for r in ranks])
        t.append(time.perf_counter() - t0)
        del ref
    out["object store s"] = min(t)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    init = f"tcp://127.0.0.1:{_free_port('127.0.0.1')}"
    joins = [r.join.remote(init, k + 1, 3) for k, r in enumerate(ranks)]
    dist.init_process_group("gloo", init_method=init, rank=0, world_size=3)
    ray.get(joins)
    t = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        flat = torch.cat([v.reshape(-1) for v in state.values()])  # [n] one buffer, as a real sync would
        futs = [r.bcast.remote() for r in ranks]
        dist.broadcast(flat, src=0)
        ray.get(futs)
        t.append(time.perf_counter() - t0)
    out["gloo broadcast s"] = min(t)
    dist.destroy_process_group()
    for r in ranks:
        ray.kill(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-broadcast", action="store_true", help="skip the broadcast comparison (135M parameters)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the driver's trainer and engine")
    ap.add_argument("--gpus", type=float, default=0.0, help="GPUs for the Ray rollout workers in all (cuda)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    from rft.train.setup import setup_training

    tmp = Path(tempfile.mkdtemp(prefix="rft-scale-"))
    os.environ.setdefault("RFT_HOME", str(tmp / "home"))
    model_dir = make_model(args.size, tmp / args.size)
    res: dict = {"size": args.size, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "device": args.device, "gpus": args.gpus}
    res["step"] = step_times(tmp, model_dir, args)
    gpu_kw = {"num_gpus": torch.cuda.device_count()} if args.device == "cuda" else {}
    ray.init(address="local", num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", logging_level="WARNING", **gpu_kw)
    try:
        parts = setup_training(make_job(tmp, model_dir, prompts=args.prompts, G=args.group, tokens=args.tokens,
                                        steps=args.steps, train={"dtype": "float32", "max_steps": args.steps,
                                                                 "device": args.device}))
        res["rollout_tokens_per_s"] = rollout_throughput(parts, args.rounds, args.gpus)
        parts.inputs.close()
        if not args.no_broadcast:
            res["broadcast"] = broadcast(make_model("smollm", tmp / "smollm"), args.rounds)
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"model {args.size}, {args.prompts} prompts x {args.group} completions x {args.tokens} tokens; "
          f"{res['cpus']} CPUs, {res['torch_threads']} torch threads; {args.device}"
          + (f", {args.gpus:g} GPU(s) for the Ray workers" if args.device == "cuda" else ""))
    base = res["rollout_tokens_per_s"]["one process"]
    print("\nrollout throughput (completion tokens/s, median of rounds, sources interleaved)")
    for k, v in res["rollout_tokens_per_s"].items():
        print(f"  {k:<28} {v:9.1f}   {v / base:5.2f}x")
    off = res["step"]["overlap off"]["step_s"]
    print("\nstep time (median of steps 2..N, s, runs interleaved)  sampling   training")
    for k, v in res["step"].items():
        print(f"  {k:<28} {v['step_s']:9.2f}   {off / v['step_s']:5.2f}x   {v['sampling_s']:8.2f}   {v['training_s']:8.2f}")
    if "broadcast" in res:
        b = res["broadcast"]
        print(f"\nweights to 2 workers ({b['parameters'] / 1e6:.0f}M parameters, {b['MiB']:.0f} MiB fp32, best of rounds)")
        print(f"  ray object store             {b['object store s']:9.3f} s")
        print(f"  torch.distributed gloo       {b['gloo broadcast s']:9.3f} s")


if __name__ == "__main__":
    main()
