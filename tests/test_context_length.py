"""max_new_tokens is checked against the model's context window before anything is trained or evaluated: the
tiny test Llama has max_position_embeddings 512, so 600 new tokens are refused with the key and the length, the
job ends `failed` (never `interrupted`), and `rft train` exits 2 with one message."""

from __future__ import annotations

import json

import pytest

from rft.config import check_context_length, parse_job
from rft.errors import RftError
from rft.models import context_length, resolve
from tests.clitools import assert_user_error, run_rft

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
          "operation": "eq"}


def _raw(model_dir, max_new_tokens, eval_tokens=None):
    return {"model": str(model_dir), "training_file": "builtin:arithmetic?n=8",
            "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}},
            "rft": {"sampling": {"n": 2, "max_new_tokens": max_new_tokens},
                    "eval": {"max_new_tokens": eval_tokens, "max_items": 2}, "train": {"max_steps": 1}}}


def test_context_length_read_from_config(tiny_model_dir):
    assert context_length(resolve(str(tiny_model_dir))) == 512


def test_check_names_each_key_that_does_not_fit(tiny_model_dir):
    check_context_length(parse_job(_raw(tiny_model_dir, 511)), 512)  # fits
    with pytest.raises(RftError) as ei:
        check_context_length(parse_job(_raw(tiny_model_dir, 512, eval_tokens=4096)), 512)
    text = str(ei.value)
    assert "rft.sampling.max_new_tokens" in text and "rft.eval.max_new_tokens" in text and "512" in text


def test_rft_train_refuses_before_training(tiny_model_dir, tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(_raw(tiny_model_dir, 600)))
    r = run_rft("train", str(job), "-q", "-o", str(tmp_path / "run"))
    assert_user_error(r, "rft.sampling.max_new_tokens", "context length of 512")
    assert not list((tmp_path / "run").glob("checkpoints/*"))
    r = run_rft("jobs", "list", "--json")
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)
    assert [j["status"] for j in jobs] in ([], ["failed"]), jobs
