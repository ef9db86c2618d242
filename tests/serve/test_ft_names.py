"""`ft:<base>[:<suffix>]:<job id>` model names (rft.models): they resolve to the final checkpoint of a succeeded
job, and only when the whole name is that job's; `list_fine_tuned` lists them. The registry is the test's own
RFT_HOME; jobs and checkpoints are recorded by hand on the tiny model."""

from __future__ import annotations

import pytest

from rft import models
from rft.errors import RftError
from rft.hashing import sha256_file
from rft.models import ResolvedModel, fine_tuned_name, list_fine_tuned
from rft.registry import Registry
from rft.train.checkpoint import save_model_checkpoint

JOB = "ftjob-20260102-030405-abcdef"


def record_job(reg: Registry, tmp_path, model_dir, job_id: str = JOB, *, status: str = "succeeded",
               suffix: str | None = "s1", final: bool = True) -> str | None:
    """A job row of `status` fine-tuning `model_dir`, with a final checkpoint (the tiny model's weights)."""
    reg.create_job(job_id, spec={"suffix": suffix} if suffix else {}, model=str(model_dir), run_dir=str(tmp_path),
                   status=status)
    cid = None
    if final:
        model, tok = models.load(ResolvedModel(str(model_dir), model_dir, "directory"))
        out = tmp_path / f"{job_id}_final"
        save_model_checkpoint(model, tok, out, {"job_id": job_id, "step": 2})
        cid = reg.add_checkpoint(job_id, 2, str(out), sha256_file(out / "manifest.json"), is_final=True)
    reg.update_job(job_id, result={"fine_tuned_model": f"ckpt:{cid}" if cid else None, "final_checkpoint_id": cid},
                   finished_at=1_700_000_000.0)
    return cid


def test_a_succeeded_jobs_name_resolves_to_its_final_checkpoint(tmp_path, tiny_model_dir):
    reg = Registry()
    cid = record_job(reg, tmp_path, tiny_model_dir)
    name = fine_tuned_name(str(tiny_model_dir), "s1", JOB)
    assert name == f"ft:{tiny_model_dir}:s1:{JOB}"
    r = models.resolve(name)
    assert r.ref == name and r.kind == "checkpoint" and r.path == models.resolve(f"ckpt:{cid}").path
    listed = list_fine_tuned()
    assert [(m["id"], m["job_id"], m["checkpoint_id"], m["created"]) for m in listed] == \
        [(name, JOB, cid, 1_700_000_000)]


def test_a_name_without_suffix(tmp_path, tiny_model_dir):
    record_job(Registry(), tmp_path, tiny_model_dir, suffix=None)
    assert models.resolve(f"ft:{tiny_model_dir}:{JOB}").kind == "checkpoint"
    with pytest.raises(RftError, match="suffix does not match"):
        models.resolve(f"ft:{tiny_model_dir}:s1:{JOB}")


@pytest.mark.parametrize("name, needle", [
    ("ft:smollm2-135m-instruct:s1:" + JOB, "fine-tuned '"),  # the wrong base
    ("ft:{base}:s2:" + JOB, "suffix does not match"),
    ("ft:{base}:s1:ftjob-20260102-030405-000000", "no job 'ftjob-20260102-030405-000000'"),
    ("ft:{base}:s1:" + JOB[:-2], "no job"),  # a prefix of the id is not the id
    ("ft:{base}:s1:", "not a fine-tuned model name"),  # no job id
    ("ft:" + JOB, "not a fine-tuned model name"),
    ("ft:", "not a fine-tuned model name"),
])
def test_names_that_are_not_the_jobs_are_refused(tmp_path, tiny_model_dir, name, needle):
    record_job(Registry(), tmp_path, tiny_model_dir)
    with pytest.raises(RftError) as ei:
        models.resolve(name.replace("{base}", str(tiny_model_dir)))
    assert needle in ei.value.message
    if "fine-tuned '" in needle or "suffix" in needle:
        assert f"ft:{tiny_model_dir}:s1:{JOB}" in (ei.value.hint or "")  # the hint gives the right name


@pytest.mark.parametrize("status", ["running", "failed", "cancelled", "paused", "queued"])
def test_a_job_that_did_not_succeed_has_no_model(tmp_path, tiny_model_dir, status):
    record_job(Registry(), tmp_path, tiny_model_dir, status=status)
    with pytest.raises(RftError, match=f"is {status}; only a succeeded job"):
        models.resolve(f"ft:{tiny_model_dir}:s1:{JOB}")
    assert list_fine_tuned() == []


def test_a_succeeded_job_without_a_final_checkpoint(tmp_path, tiny_model_dir):
    record_job(Registry(), tmp_path, tiny_model_dir, final=False)
    with pytest.raises(RftError, match="without a final checkpoint"):
        models.resolve(f"ft:{tiny_model_dir}:s1:{JOB}")
    assert list_fine_tuned() == []


def test_a_tampered_final_checkpoint_is_refused(tmp_path, tiny_model_dir):
    record_job(Registry(), tmp_path, tiny_model_dir)
    w = tmp_path / f"{JOB}_final" / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 1
    w.write_bytes(bytes(raw))
    with pytest.raises(RftError, match="tampered or corrupt"):
        models.resolve(f"ft:{tiny_model_dir}:s1:{JOB}")
