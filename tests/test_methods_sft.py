"""Supervised fine-tuning (method.type: supervised): the masked token cross-entropy against hand-computed values
and a manual computation on the tiny model, OpenAI's weight 0/1, line-numbered data errors, a whole job without
a grader (validation loss in place of accuracy, gates not applicable), and exact resume after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rft.algo.preference import SFT_LOSSES, sft_loss
from rft.errors import RftError
from rft.train.supervised import examples_logprobs, sft_examples
from tests.clitools import assert_user_error, run_rft

WORDS = ("red", "blue", "green", "gold")


def _model(tiny_model_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_model_dir).float(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _sft_rows():
    return [{"messages": [{"role": "user", "content": f"Say {w}"}, {"role": "assistant", "content": w}], "answer": w}
            for w in WORDS]


def _job_file(tmp_path: Path, model_dir: Path, *, grader: bool = False, steps_epochs: int = 2, mult: float = 10,
              **rft) -> Path:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _sft_rows()))
    sec = {"hyperparameters": {"batch_size": 2, "n_epochs": steps_epochs, "eval_interval": 2,
                               "learning_rate_multiplier": mult}}
    if grader:
        sec["grader"] = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                         "reference": "{{item.answer}}", "operation": "eq"}
    spec = {"model": str(model_dir), "training_file": str(data), "validation_file": str(data), "seed": 1,
            "method": {"type": "supervised", "supervised": sec},
            "rft": {"train": {"dtype": "float32"}, "optimizer": {"lr": 1e-3}, "sampling": {"max_new_tokens": 4},
                    "checkpoint": {"state_interval": 1}, **rft}}
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_token_ce_against_hand_computed_values():
    logp = torch.tensor([[-1.0, -2.0, -7.0], [-0.5, -9.0, -9.0]])  # [2, 3]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # [2, 3]
    # (1 + 2 + 0.5) / 3 target tokens; the masked -7 and -9 do not count
    assert sft_loss("token_ce", logp, mask, 3).item() == pytest.approx(3.5 / 3)
    # normalised by the whole step's tokens: two micro-batches add up to the one-batch loss
    halves = sft_loss("token_ce", logp[:1], mask[:1], 3) + sft_loss("token_ce", logp[1:], mask[1:], 3)
    assert halves.item() == pytest.approx(3.5 / 3)
    with pytest.raises(RftError, match="unknown supervised loss 'token_cee'.*did you mean 'token_ce'"):
        sft_loss("token_cee", logp, mask, 3)
    assert "token_ce" in SFT_LOSSES


def test_loss_is_a_manual_cross_entropy_over_exactly_the_assistant_tokens(tiny_model_dir):
    model, tok = _model(tiny_model_dir)
    row = _sft_rows()[0]
    [(prompt, target)] = sft_examples(tok, row)
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n") and tok.decode(target) == "red<|im_end|>"
    logp, mask = examples_logprobs(model, [(prompt, target)], group=1, pad_id=tok.pad_token_id,
                                   compute_dtype=torch.float32)  # [1, Lc]
    ours = sft_loss("token_ce", logp, mask, len(target))

    ids = torch.tensor([prompt + target])  # [1, L]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()  # [1, L, V]
    full = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)  # [L-1] token k+1
    assistant = torch.zeros_like(full)  # [L-1] 1 where the predicted token is an assistant token
    assistant[len(prompt) - 1:] = 1.0
    manual = -(full * assistant).sum() / assistant.sum()
    assert ours.item() == pytest.approx(manual.item(), rel=1e-5, abs=1e-5)
    # the mask is what makes it so: unmasking one prompt token changes the value
    leaky = assistant.clone()
    leaky[len(prompt) - 2] = 1.0
    assert abs(float(-(full * leaky).sum() / assistant.sum()) - ours.item()) > 1e-3


def test_weight_zero_keeps_an_assistant_message_as_context_only(tiny_model_dir):
    _, tok = _model(tiny_model_dir)
    msgs = [{"role": "user", "content": "Say red"}, {"role": "assistant", "content": "red", "weight": 0},
            {"role": "user", "content": "Say blue"}, {"role": "assistant", "content": "blue"}]
    ex = sft_examples(tok, {"messages": msgs})
    assert [tok.decode(t) for _, t in ex] == ["blue<|im_end|>"]
    assert "red<|im_end|>" in tok.decode(ex[0][0])  # the first answer is in the second one's context
    msgs[1]["weight"] = 1
    assert [tok.decode(t) for _, t in sft_examples(tok, {"messages": msgs})] == ["red<|im_end|>", "blue<|im_end|>"]


def test_a_step_lowers_the_loss_on_its_rows(tiny_model_dir, tmp_path):
    from rft.jobcheck import load_job
    from rft.train.supervised import load_chat_inputs, setup_chat_training, supervised_step

    job = load_job(_job_file(tmp_path, tiny_model_dir, mult=1))  # lr 1e-3
    inputs = load_chat_inputs(job)
    parts = setup_chat_training(job, inputs)
    rows = list(inputs.train_ds.rows[:2])
    losses = [supervised_step(k, rows, parts).metrics["train_loss"] for k in (1, 2, 3)]
    assert losses[2] < losses[1] < losses[0], losses


def test_data_errors_name_file_line_and_field(tmp_path, tiny_model_dir):
    job = _job_file(tmp_path, tiny_model_dir)
    bad = tmp_path / "sft.jsonl"
    rows = _sft_rows()
    rows[1]["messages"] = rows[1]["messages"][:1]  # ends with the user: no answer
    rows[2]["messages"][1]["weight"] = 2
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_rft("train", str(job), "-q")
    assert_user_error(r, f"{bad}:2", "messages[0].role", "the last message must be the assistant's answer",
                      f"{bad}:3", "messages[1].weight", "weight must be 0 or 1")


def test_job_without_grader_reports_validation_loss_and_gates_not_applicable(tmp_path, tiny_model_dir):
    r = run_rft("train", str(_job_file(tmp_path, tiny_model_dir)), "-o", str(tmp_path / "run"), "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["method"]["type"] == "supervised"
    b, f = job["baseline_eval"], job["final_eval"]
    assert b["accuracy"] is None and f["accuracy"] is None
    assert f["valid_loss"] < b["valid_loss"]  # lr 1e-2 on four rows, four steps: it learns them
    assert job["final_verdict"]["applicable"] is False and job["final_verdict"]["passed"] is None
    assert [e["step"] for e in job["evals"]] == [2, 4]
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and all(m["train_tokens"] > 0 for m in metrics)
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Validation loss" in md and "not applicable" in md


def _train_subprocess(job: Path, run_dir: Path, env_extra: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rft.cli.main", "train", str(job), "-o", str(run_dir), "-q", "--json"],
                          env=os.environ | env_extra, capture_output=True, text=True, timeout=300)


def test_kill9_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model_dir):
    """Exact resume: SIGKILL after step 3 (an epoch boundary is at 2), resume, and the final weights and the
    per-step losses equal an uninterrupted run's bit for bit."""
    from rft.registry import Registry
    from rft.train import loop

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ref_job = _job_file(tmp_path / "a", tiny_model_dir, steps_epochs=3)
    p = _train_subprocess(ref_job, tmp_path / "a" / "run", {})
    assert p.returncode == 0, p.stderr[-2000:]
    job = _job_file(tmp_path / "b", tiny_model_dir, steps_epochs=3)
    run = tmp_path / "b" / "run"
    p = _train_subprocess(job, run, {"RFT_FAULT": "after_step:3"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    job_id = json.loads((run / "job.json").read_text())["id"]
    assert Registry().get_job(job_id)["step"] == 3
    assert loop.resume_job(job_id, log=lambda s: None)["status"] == "succeeded"

    def losses(d):
        return [(m["step"], m["train_loss"], m["grad_norm"]) for m in
                (json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines())]

    assert [s for s, _, _ in losses(run)] == [1, 2, 3, 4, 5, 6]
    assert losses(run) == losses(tmp_path / "a" / "run")
    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "final" / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
