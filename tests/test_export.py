"""`rft checkpoints export` / `rft.export`: a plain transformers directory that loads as is and computes the same
logits as rft on the checkpoint, for a LoRA and a full checkpoint of the tiny random Llama; the model card holds
the lineage and the evaluation numbers; a non-empty folder is refused unless --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rft
from tests.clitools import assert_user_error, run_rft

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.extracted}}", "reference": "{{item.answer}}",
          "operation": "eq"}


def _train(tmp_path: Path, tiny_model_dir: Path, lora: bool) -> dict:
    job = {"model": str(tiny_model_dir), "training_file": "builtin:arithmetic?n=8",
           "validation_file": "builtin:arithmetic?n=4",
           "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}},
           "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 2, "max_new_tokens": 4},
                   "eval": {"max_items": 4}, "train": {"max_steps": 1, "dtype": "float32"},
                   # a large learning rate: the trained weights must differ from the base for the test to mean much
                   "optimizer": {"lr": 0.05}}}
    over = {"rft.lora.enabled": True, "rft.lora.rank": 4, "rft.lora.alpha": 8} if lora else {}
    return rft.train(job, over, output_dir=tmp_path / "run")


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


def _check_export(tmp_path: Path, tiny_model_dir: Path, lora: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rft import models
    from rft.engine import SamplingParams, load_engine
    from rft.engine.local import render_prompt

    job = _train(tmp_path, tiny_model_dir, lora)
    ref = job["fine_tuned_model"]  # the ft:<base>:<job id> name resolves to the final checkpoint
    assert ref.startswith("ft:") and job["fine_tuned_model_checkpoint"].startswith("ckpt:")
    out = tmp_path / "exported"
    res = rft.export(ref, out)
    assert res["lineage"] and res["checkpoint"] == job["fine_tuned_model_checkpoint"].removeprefix("ckpt:")
    r = run_rft("lineage", ref, "--json", "--no-verify")  # the ft: name works for `rft lineage` too
    assert r.returncode == 0 and json.loads(r.stdout)["checkpoint"]["id"] == res["checkpoint"], r.stderr
    names = set(p.name for p in out.iterdir())
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "README.md", "rft_lineage.json"} <= names, names
    assert not names & {"manifest.json", "rft_checkpoint.json", "adapter"}, names  # rft's own files stay behind
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    assert "adapter_config.json" not in names  # merged: no peft needed to load it

    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    ours, our_tok = models.load(models.resolve(ref))
    msgs = [{"role": "user", "content": "What is 7 * 8? Answer with just the number."}]
    ids = torch.tensor([render_prompt(our_tok, msgs)])
    assert render_prompt(tok, msgs) == ids[0].tolist()  # the same tokenizer and chat template
    assert torch.equal(_logits(exported, ids), _logits(ours, ids))  # bit for bit: the same weights

    # rft's own engine (the fast decoder, fp32) on the checkpoint: its sampled tokens' log-probabilities are the
    # exported model's log-softmax at the same positions
    engine = load_engine(ref, compute_dtype=torch.float32)
    comp = engine.generate([msgs], SamplingParams(n=1, temperature=1.0, max_new_tokens=6, seed=3))[0][0]
    full = torch.tensor([ids[0].tolist() + list(comp.token_ids)])
    logp = torch.log_softmax(_logits(exported, full)[0, ids.shape[1] - 1: -1], dim=-1)
    expected = logp[torch.arange(len(comp.token_ids)), torch.tensor(comp.token_ids)]
    assert torch.allclose(expected, torch.tensor(comp.logprobs, dtype=torch.float32), atol=1e-4), \
        (expected, comp.logprobs)

    if lora:  # the training changed the weights: the export is not the base model
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        assert not torch.equal(_logits(base, ids), _logits(exported, ids))

    card = (out / "README.md").read_text()
    lin = json.loads((out / "rft_lineage.json").read_text())
    assert lin["checkpoint"]["id"] == res["checkpoint"]
    for needle in (res["checkpoint"], job["id"], lin["base_model"]["sha256"], lin["config"]["sha256"],
                   lin["datasets"]["training"]["sha256"], lin["graders"][0]["sha256"], lin["checkpoint"]["manifest_sha256"],
                   "## Evaluation", "95% CI"):
        assert needle and needle in card, needle
    score = job["final_eval"]["accuracy"]
    assert f"{score:.4f}" in card  # the final validation accuracy is in the card
    assert any(e["kind"] for e in lin["evaluations"])
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen.get("eos_token_id") == json.loads((out / "config.json").read_text()).get("eos_token_id")


def test_export_lora_checkpoint_loads_in_transformers_with_the_same_logits(tmp_path, tiny_model_dir):
    _check_export(tmp_path, tiny_model_dir, lora=True)


def test_export_full_checkpoint_loads_in_transformers_with_the_same_logits(tmp_path, tiny_model_dir):
    _check_export(tmp_path, tiny_model_dir, lora=False)


def test_cli_export_refuses_a_non_empty_folder_unless_force(tmp_path, tiny_model_dir):
    # a directory that the registry does not know exports too, with a card that says so
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run_rft("checkpoints", "export", str(tiny_model_dir), str(out))
    assert_user_error(r, "already exists and is not empty")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing changed
    (out / "model-00001-of-00002.safetensors").write_text("old shard")
    r = run_rft("checkpoints", "export", str(tiny_model_dir), str(out), "--force", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["lineage"] is False and res["path"] == str(out)
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and "model-00001-of-00002.safetensors" not in names  # old weights never mix in
    assert "model.safetensors" in names and "README.md" in names
    assert "not known" in (out / "README.md").read_text()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # loads as is


@pytest.mark.parametrize("ref, needle", [("ckpt:ckpt-doesnotexist", "ckpt-doesnotexist"),
                                         ("/no/such/dir", "does not exist")])
def test_cli_export_unknown_checkpoint_is_a_user_error(tmp_path, ref, needle):
    r = run_rft("checkpoints", "export", ref, str(tmp_path / "x"))
    assert_user_error(r, needle)
    assert not (tmp_path / "x").exists()


def test_cli_export_into_a_file_is_refused(tmp_path, tiny_model_dir):
    f = tmp_path / "file"
    f.write_text("x")
    for extra in ((), ("--force",)):
        assert_user_error(run_rft("checkpoints", "export", str(tiny_model_dir), str(f), *extra), "is a file")
    assert f.read_text() == "x"
