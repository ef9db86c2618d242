"""Overlapped rollouts (issue 16, `rft.train.overlap_rollouts`): step k+1 is sampled while step k trains, one
step off-policy; the loss's old log-probs are those of the policy that sampled (never recomputed under the new
weights); staleness is logged; a job runs to the end and resumes exactly after kill -9.

Run: .venv/bin/python -m pytest -q tests/test_overlap.py
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from jobspecs import fuzzy_job_file

STEPS = 4


def _job(tmp_path: Path, model_dir: Path, **train) -> Path:
    return fuzzy_job_file(tmp_path, model_dir, lr=1e-2, train={"dtype": "float32", "overlap_rollouts": True, **train})


def test_old_logprobs_are_the_sampling_policys_not_recomputed(tmp_path, tiny_model_dir, monkeypatch):
    """Step 2's samples were drawn by the starting weights while step 1 trained: its loss's old log-probs are
    the rollout's (they match the starting policy's log-probs of those tokens) and differ from the log-probs
    under the weights being trained (which a recomputation would have used)."""
    from rft import algo
    from rft.config import load_job
    from rft.train.cursor import DataCursor
    from rft.train.policy import build_batch, completion_logprobs
    from rft.train.setup import setup_training
    from rft.train.step import StepRunner

    parts = setup_training(load_job(_job(tmp_path, tiny_model_dir)))
    v0 = copy.deepcopy(parts.model)
    seen = []
    real = algo.policy_loss

    def spy(name, logp, old, *a, **kw):
        seen.append((logp.detach().clone(), old.detach().clone()))
        return real(name, logp, old, *a, **kw)

    monkeypatch.setattr(algo, "policy_loss", spy)
    cursor = DataCursor(len(parts.inputs.train_ds), parts.job.seed)
    with StepRunner(parts, cursor, state_every=100, total=3) as runner:
        r1 = runner.next(1)
        assert r1.update.updates == 1 and r1.staleness == 0
        seen.clear()
        r2 = runner.next(2)
    assert r2.staleness == 1
    logp, old = seen[0]  # [B, Lc] the first micro-batch of step 2 (the whole step here)
    b = build_batch(r2.prompt_ids, [(list(c.token_ids), list(c.logprobs)) for c in r2.completions],
                    r2.advantages.advantages.reshape(-1), pad_id=parts.tokenizer.pad_token_id, group=r2.group)
    m = b.comp_mask.bool()  # [B, Lc]
    assert torch.equal(old[m], b.old_logp[m])  # exactly the log-probs recorded when sampled
    with torch.no_grad():
        lp0, _ = completion_logprobs(v0, b, temperature=1.0, compute_dtype=torch.float32)  # [B, Lc]
    assert torch.allclose(old[m], lp0[m], atol=1e-4)  # ... which are the starting policy's
    assert (old[m] - logp[m]).abs().max() > 1e-3  # ... not the trained weights' (what a recompute gives)
    assert runner.pending is None  # closed: nothing left in flight


def _train(job: Path, run: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rft.cli.main", "train", str(job), "-o", str(run), "-q"],
                          env=os.environ | (env or {}), capture_output=True, text=True, timeout=600)


def test_overlapped_job_runs_to_the_end_and_resumes_exactly(tmp_path, tiny_model_dir):
    """Uninterrupted vs killed (-9) after step 3 and resumed from the state of step 2: the same per-step metrics
    and the same final weights, bit for bit (the pipeline drains at state saves). Staleness: steps that used a
    prefetched rollout are one update behind."""
    from rft.train import loop

    job = _job(tmp_path, tiny_model_dir)
    a, b = tmp_path / "a", tmp_path / "b"
    r = _train(job, a)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _train(job, b, {"RFT_FAULT": "after_step:3"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    res = loop.resume_job(json.loads((b / "job.json").read_text())["id"], log=lambda s: None)
    assert res["status"] == "succeeded"

    def metrics(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in m.items() if not k.startswith("time/") and "per_second" not in k and "latency" not in k}
                for m in rows]
    ma, mb = metrics(a), metrics(b)
    assert [m["rollout/staleness"] for m in ma] == [0, 1, 0, 1]  # state saved at step 2: step 3 sampled fresh
    assert ma == mb
    pa = load_file(str(a / "checkpoints" / "final" / "model.safetensors"))
    pb = load_file(str(b / "checkpoints" / "final" / "model.safetensors"))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(m["grad_norm"] > 0 for m in ma)
