"""The Python API (`rft.api`, exported lazily by `import rft`): the same results the CLI prints, on the tiny
random Llama."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rft
from rft.errors import RftError

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.extracted}}", "reference": "{{item.answer}}",
          "operation": "eq"}


def test_import_rft_is_cheap_and_the_api_names_resolve_lazily():
    code = ("import sys, rft; heavy = [m for m in ('rft.api', 'torch', 'transformers', 'pyarrow', 'rft.train', "
            "'rft.batch', 'sqlalchemy') if m in sys.modules]; print(heavy); "
            "f = rft.evaluate; print(f.__module__, 'rft.api' in sys.modules, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "rft.api True False"]
    # rft.train / rft.batch are subpackages and API functions at once, whichever is imported first
    code = ("import rft.train.loop, rft.batch.jobs, rft; import rft.types; "
            "print(callable(rft.train), callable(rft.batch), rft.train.loop.run_job.__name__, "
            "rft.batch.jobs.create_batch.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "run_job", "create_batch"]
    with pytest.raises(AttributeError):
        rft.no_such_function  # noqa: B018


def test_load_job_overrides_as_strings_or_mapping(tmp_path):
    body = {"training_file": "builtin:arithmetic", "method": {"type": "reinforcement",
                                                                 "reinforcement": {"grader": GRADER}}}
    a = rft.api.load_job(body, ["rft.train.max_steps=3", "rft.optimizer.lr=1e-3"])
    b = rft.api.load_job(body, {"rft.train.max_steps": 3, "rft.optimizer.lr": 1e-3})
    assert a.model_dump() == b.model_dump() and b.rft.train.max_steps == 3 and b.rft.optimizer.lr == 1e-3
    assert "rft" not in body  # the caller's dict is not changed
    p = tmp_path / "job.json"
    p.write_text(json.dumps(body))
    assert rft.api.load_job(p, {"seed": 5}).seed == 5
    with pytest.raises(RftError, match="unknown|did you mean"):
        rft.api.load_job(body, {"rft.sampling.temprature": 0.5})
    with pytest.raises(RftError, match="dotted names"):
        rft.api.load_job(body, {"rft..x": 1})
    with pytest.raises(RftError, match="not one string"):
        rft.api.load_job(body, "rft.train.max_steps=3")


def test_load_generate_chat_grade_and_evaluate(tmp_path, tiny_model_dir):
    m = rft.load(str(tiny_model_dir))
    assert m.kind == "directory" and m.path == Path(tiny_model_dir).resolve()
    out = m.generate(["What is 1 + 1?", [{"role": "user", "content": "Hi"}]], n=2, temperature=1.0,
                     max_new_tokens=3, seed=0)
    assert [len(x) for x in out] == [2, 2] and all(len(c.token_ids) <= 3 for x in out for c in x)
    assert m.chat("What is 1 + 1?", max_new_tokens=3) == m.generate("What is 1 + 1?", max_new_tokens=3)[0][0].text
    with pytest.raises(RftError, match="ending with a user message"):
        m.generate([[{"role": "assistant", "content": "x"}]])

    g = rft.grade(GRADER, "56", {"answer": "56"})
    assert g["reward"] == 0.0 and g["metadata"]["scored"] is False  # no extraction pattern: {{sample.extracted}} is missing
    gf = tmp_path / "g.json"
    gf.write_text(json.dumps({**GRADER, "input": "{{sample.output_text}}"}))
    assert rft.grade(gf, "56", {"answer": "56"})["reward"] == 1.0

    rep = rft.evaluate(m, "builtin:arithmetic", GRADER, limit=4, extract="-?\\d+", max_new_tokens=3,
                       output_dir=tmp_path / "eval")
    assert rep["n"] + round(rep["unscored_frac"] * 4) == 4 and (tmp_path / "eval" / "report.json").exists()
    assert rep["model"] == str(tiny_model_dir) and rep["registry_id"].startswith("eval")
    with pytest.raises(RftError, match="not empty"):
        rft.evaluate(m, "builtin:arithmetic", GRADER, limit=1, output_dir=tmp_path / "eval")


def test_train_then_jobs_checkpoints_lineage_and_batch(tmp_path, tiny_model_dir):
    job = {"model": str(tiny_model_dir), "training_file": "builtin:arithmetic?n=8",
           "validation_file": "builtin:arithmetic?n=4",
           "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}},
           "rft": {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 2, "max_new_tokens": 4},
                   "eval": {"max_items": 4}, "train": {"dtype": "float32"}}}
    lines = []
    res = rft.train(job, {"rft.train.max_steps": 1}, output_dir=tmp_path / "run", log=lines.append)
    assert res["status"] == "succeeded" and res["fine_tuned_model"] == f"ft:{res['model']}:{res['id']}" and lines
    assert [j["id"] for j in rft.jobs()] == [res["id"]]
    assert rft.job(res["id"])["status"] == "succeeded"
    cks = rft.checkpoints(res["id"])
    assert any(f"ckpt:{c['id']}" == res["fine_tuned_model_checkpoint"] for c in cks)
    assert rft.lineage(res["fine_tuned_model"])["job"]["id"] == res["id"]

    reqs = tmp_path / "requests.jsonl"
    reqs.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": {"messages": [{"role": "user", "content": f"{i} + 1?"}],
                                                 "max_tokens": 3}}) + "\n" for i in range(2)))
    b = rft.batch(reqs, model=res["fine_tuned_model"], output=tmp_path / "out.jsonl", max_attempts=1)
    assert b["status"] == "completed" and b["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    with pytest.raises(RftError, match="max_atempts.*did you mean 'max_attempts'"):
        rft.batch(reqs, model=res["fine_tuned_model"], max_atempts=1)
    # a run folder that holds files is refused before anything is recorded
    with pytest.raises(RftError, match="not empty"):
        rft.train(job, {"rft.train.max_steps": 1}, output_dir=tmp_path / "run")
    assert len(rft.jobs()) == 1


def test_datasets_and_load_dataset():
    refs = [d["ref"] for d in rft.datasets()]
    assert refs[0] == "builtin:arithmetic" and "builtin:reasoning_gym/leg_counting" in refs
    assert len(rft.load_dataset("builtin:arithmetic?n=3")) == 3
