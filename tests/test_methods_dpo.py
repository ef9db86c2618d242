"""DPO (method.type: dpo): the sigmoid loss against hand-computed values (and a sign flip), the reference
log-probs against a manual computation on the tiny model, the gradient moving the preferred output's
log-prob up, line-numbered data errors, and a whole job whose validation loss starts at log 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from rft.algo.preference import dpo_loss, sequence_logprob
from rft.errors import RftError
from tests.clitools import assert_user_error, run_rft

WORDS = ("red", "blue", "green", "gold")


def _rows():
    return [{"input": {"messages": [{"role": "user", "content": f"Say {w}"}]},
             "preferred_output": [{"role": "assistant", "content": w}],
             "non_preferred_output": [{"role": "assistant", "content": "no"}], "answer": w} for w in WORDS]


def _job_file(tmp_path: Path, model_dir: Path, rows=None, **hp) -> Path:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (rows or _rows())))
    spec = {"model": str(model_dir), "training_file": str(data), "validation_file": str(data), "seed": 0,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 2, "n_epochs": 1, "beta": 0.5,
                                                                  "learning_rate_multiplier": 1, **hp}}},
            "rft": {"train": {"dtype": "float32"}, "optimizer": {"lr": 1e-3}, "sampling": {"max_new_tokens": 4}}}
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_sigmoid_loss_against_hand_computed_values():
    pi_c, pi_r = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])  # [2]
    ref_c, ref_r = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])  # [2]
    out = dpo_loss("sigmoid", pi_c, pi_r, ref_c, ref_r, beta=0.5)
    # pair 0: 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5 -> log(1 + e^-0.5); pair 1: 0.5 * (-1 - 1) = -1 -> log(1 + e^1)
    want = [math.log1p(math.exp(-0.5)), math.log1p(math.exp(1.0))]
    assert out.losses.tolist() == pytest.approx(want)
    assert out.loss.item() == pytest.approx(sum(want) / 2)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.5])
    assert out.accuracy == 0.5
    # a wrong sign (preferring the rejected output) would give the swapped values
    swapped = dpo_loss("sigmoid", pi_r, pi_c, ref_r, ref_c, beta=0.5)
    assert swapped.losses.tolist() == pytest.approx([math.log1p(math.exp(0.5)), math.log1p(math.exp(-1.0))])
    # equal policy and reference: log 2 whatever the log-probs
    assert dpo_loss("sigmoid", ref_c, ref_r, ref_c, ref_r, beta=3.0).loss.item() == pytest.approx(math.log(2))
    with pytest.raises(RftError, match="unknown preference loss 'sigmod'"):
        dpo_loss("sigmod", pi_c, pi_r, ref_c, ref_r, beta=0.5)
    logp, mask = torch.tensor([[-1.0, -2.0, -4.0]]), torch.tensor([[1.0, 1.0, 0.0]])  # [1, 3]
    assert sequence_logprob(logp, mask).tolist() == [-3.0]


def _parts(tmp_path, tiny_model_dir):
    from rft.jobcheck import load_job
    from rft.train.dpo import with_reference
    from rft.train.supervised import load_chat_inputs, setup_chat_training

    job = load_job(_job_file(tmp_path, tiny_model_dir))
    inputs = load_chat_inputs(job)
    return with_reference(setup_chat_training(job, inputs)), inputs


def _manual_seq_logprob(model, prompt: list[int], target: list[int]) -> float:
    ids = torch.tensor([prompt + target])  # [1, L]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()  # [1, L, V]
    lp = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)  # [L-1]
    return float(lp[len(prompt) - 1:].sum())  # the target tokens only


def test_reference_logprobs_and_loss_equal_a_manual_computation(tmp_path, tiny_model_dir):
    from transformers import LlamaForCausalLM

    from rft.train.dpo import pair_examples, reference_logprobs

    parts, inputs = _parts(tmp_path, tiny_model_dir)
    rows = list(inputs.train_ds.rows[:2])
    ex = [e for r in rows for e in pair_examples(parts.tokenizer, r)]  # [4]
    assert parts.tokenizer.decode(ex[0][1]) == "red<|im_end|>" and parts.tokenizer.decode(ex[1][1]) == "no<|im_end|>"
    ref_c, ref_r = reference_logprobs(parts, ex)  # [2], [2]
    base = LlamaForCausalLM.from_pretrained(tiny_model_dir).float()  # the base model, loaded separately
    manual = [_manual_seq_logprob(base, p, t) for p, t in ex]
    assert ref_c.tolist() == pytest.approx(manual[0::2], abs=1e-4)
    assert ref_r.tolist() == pytest.approx(manual[1::2], abs=1e-4)
    # the loss from manual numbers: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))
    pi = [v + d for v, d in zip(manual, (0.3, -0.2, 0.1, 0.4))]
    out = dpo_loss("sigmoid", torch.tensor(pi[0::2]), torch.tensor(pi[1::2]), ref_c, ref_r, beta=0.5)
    want = [-math.log(1 / (1 + math.exp(-0.5 * (0.3 + 0.2)))), -math.log(1 / (1 + math.exp(-0.5 * (0.1 - 0.4))))]
    assert out.losses.tolist() == pytest.approx(want, abs=1e-4)


def test_the_update_moves_the_preferred_logprob_up(tmp_path, tiny_model_dir):
    from rft.train.dpo import dpo_step, pair_examples, pair_logprobs

    parts, inputs = _parts(tmp_path, tiny_model_dir)
    rows = list(inputs.train_ds.rows[:2])
    ex = [e for r in rows for e in pair_examples(parts.tokenizer, r)]
    with torch.no_grad():
        c0, r0 = pair_logprobs(parts, parts.model, ex)
    m1 = dpo_step(1, rows, parts).metrics
    assert m1["train_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference before any update
    with torch.no_grad():
        c1, r1 = pair_logprobs(parts, parts.model, ex)
    assert (c1 > c0).all(), (c0, c1)  # the preferred outputs became more likely
    assert ((c1 - r1) > (c0 - r0)).all()  # and the margin over the non-preferred grew
    m2 = dpo_step(2, rows, parts).metrics
    assert m2["train_loss"] < m1["train_loss"] and m2["rewards/accuracies"] == 1.0


def test_data_errors_name_file_line_and_field(tmp_path, tiny_model_dir):
    rows = _rows()
    del rows[0]["non_preferred_output"]
    rows[2]["preferred_output"] = [{"role": "user", "content": "x"}]
    rows[3]["input"]["messages"].append({"role": "assistant", "content": "hm"})
    job = _job_file(tmp_path, tiny_model_dir, rows=rows)
    data = tmp_path / "pairs.jsonl"
    r = run_rft("train", str(job), "-q")
    assert_user_error(r, f"{data}:1", "missing required field 'non_preferred_output'",
                      f"{data}:3", "preferred_output[0].role", f"{data}:4", "input.messages[1].role")


def test_job_runs_with_validation_loss_starting_at_log2(tmp_path, tiny_model_dir):
    r = run_rft("train", str(_job_file(tmp_path, tiny_model_dir)), "-o", str(tmp_path / "run"), "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    job = json.loads(r.stdout)
    assert job["status"] == "succeeded" and job["method"] == {
        "type": "dpo", "dpo": {"hyperparameters": {"batch_size": 2, "n_epochs": 1, "beta": 0.5,
                                                   "learning_rate_multiplier": 1.0, "eval_interval": "auto"}}}
    assert job["baseline_eval"]["valid_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert job["final_eval"]["valid_loss"] < job["baseline_eval"]["valid_loss"]
    assert job["final_eval"]["valid_reward_accuracy"] > 0.5
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["beta"] == 0.5 and "rewards/margins" in metrics[0]
