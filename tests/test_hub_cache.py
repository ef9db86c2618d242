"""Hugging Face hub ids resolve to the local hub cache, offline (rft.models.hub_snapshot).

A fake cache entry is built the way the hub client lays it out: `models--Org--Name/blobs/<sha>` holding the
files, `snapshots/<commit>/<file>` symlinks into blobs/, `refs/main` naming the commit. Checked:
- `Org/Name` resolves to the snapshot (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub), loads, and the
  engine answers; `Org/Name@<commit>` and `@<ref>` pick that snapshot;
- a model not in the cache: one error naming every cache folder looked in and the `hf download` command, exit 2
  from the CLI, and no download attempted;
- broken entries: a snapshot link whose blob is missing, refs/main naming a snapshot that is not there, a
  snapshot without weights;
- the opt-in RFT_ALLOW_DOWNLOAD=1 calls the hub client (a fake here: no network in tests) and uses what it put in
  the cache;
- `rft models list --json` lists the cached model with its engine.
Run: `.venv/bin/python -m pytest -q tests/test_hub_cache.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from clitools import assert_user_error, run_rft
from rft import models
from rft.engine import SamplingParams, load_engine
from rft.errors import RftError

REPO = "TinyOrg/Tiny-Llama-0.1B"
COMMIT = "a" * 40


def make_entry(cache: Path, src: Path, repo: str = REPO, commit: str = COMMIT, ref: str | None = "main") -> Path:
    """A hub-cache entry for the model directory `src`; returns its snapshot folder."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    snap = entry / "snapshots" / commit
    (entry / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        blob = entry / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    if ref:
        (entry / "refs").mkdir(exist_ok=True)
        (entry / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache in HF_HUB_CACHE, and a HOME whose default cache is elsewhere (also empty)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("RFT_ALLOW_DOWNLOAD", raising=False)
    return cache


def test_a_cached_hub_id_resolves_to_its_snapshot_and_serves(hub, tiny_model_dir):
    snap = make_entry(hub, tiny_model_dir)
    r = models.resolve(REPO)
    assert (r.ref, r.path, r.kind) == (REPO, snap, "hub")
    eng = load_engine(REPO)
    assert eng.backend == "fast"
    [[c]] = eng.generate([[{"role": "user", "content": "Say red"}]], SamplingParams(temperature=0, max_new_tokens=4))
    assert c.token_ids


def test_hf_home_and_the_default_cache_are_looked_in(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snap = make_entry(tmp_path / "hf" / "hub", tiny_model_dir)
    assert models.resolve(REPO).path == snap
    monkeypatch.delenv("HF_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    snap2 = make_entry(tmp_path / "home" / ".cache" / "huggingface" / "hub", tiny_model_dir, commit="b" * 40)
    assert models.resolve(REPO).path == snap2


def test_a_revision_picks_its_snapshot(hub, tiny_model_dir):
    make_entry(hub, tiny_model_dir)
    other = make_entry(hub, tiny_model_dir, commit="c" * 40, ref="v2")
    assert models.resolve(f"{REPO}@v2").path == other
    assert models.resolve(f"{REPO}@{'c' * 40}").path == other
    with pytest.raises(RftError, match="has no revision 'v9'"):
        models.resolve(f"{REPO}@v9")


def test_a_missing_model_names_the_caches_and_the_download_command(hub, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(RftError) as e:
        models.resolve("Qwen/Qwen2.5-0.5B-Instruct")
    msg = str(e.value)
    assert str(hub / "models--Qwen--Qwen2.5-0.5B-Instruct") in msg
    assert str(tmp_path / "home" / ".cache" / "huggingface" / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct") in msg
    assert "`hf download Qwen/Qwen2.5-0.5B-Instruct`" in msg and "RFT_ALLOW_DOWNLOAD=1" in msg


def test_the_cli_reports_a_missing_model_in_one_error_line(hub, tmp_path):
    r = run_rft("preflight", "--help")  # the entry point runs at all
    assert r.returncode == 0
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "answer": "x"}) + "\n")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model": "Qwen/Qwen2.5-0.5B-Instruct", "training_file": str(data),
                               "method": {"type": "reinforcement", "reinforcement": {"grader": {
                                   "type": "string_check", "name": "g", "input": "{{sample.output_text}}",
                                   "reference": "{{item.answer}}", "operation": "eq"}}}}))
    r = run_rft("preflight", str(job), env={"HF_HUB_CACHE": str(hub), "HOME": str(tmp_path / "home")})
    assert_user_error(r, "looks like a hub id and is not in the local Hugging Face hub cache")
    assert "hf download Qwen/Qwen2.5-0.5B-Instruct" in r.stderr


def test_a_snapshot_link_to_a_missing_blob_is_a_broken_entry(hub, tiny_model_dir):
    snap = make_entry(hub, tiny_model_dir)
    os.remove(snap / "model.safetensors")
    blob = (snap / "config.json").resolve()
    blob.unlink()
    with pytest.raises(RftError, match=r"is incomplete: config.json points to a missing blob"):
        models.resolve(REPO)


def test_refs_naming_an_absent_snapshot_and_a_snapshot_without_weights_are_refused(hub, tiny_model_dir):
    snap = make_entry(hub, tiny_model_dir)
    (snap.parent.parent / "refs" / "main").write_text("d" * 40)
    with pytest.raises(RftError, match="refs/main names snapshot"):
        models.resolve(REPO)
    (snap.parent.parent / "refs" / "main").write_text(COMMIT)
    os.remove(snap / "model.safetensors")
    with pytest.raises(RftError, match="no config.json or no \\*.safetensors"):
        models.resolve(REPO)


def test_download_only_with_the_opt_in(hub, tiny_model_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, revision=None, cache_dir=None, allow_patterns=None):
        calls.append((repo_id, revision, cache_dir, tuple(allow_patterns)))
        return str(make_entry(Path(cache_dir), tiny_model_dir, repo=repo_id))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    with pytest.raises(RftError, match="looks like a hub id and is not in the local Hugging Face hub cache"):
        models.resolve(REPO)
    assert calls == []
    monkeypatch.setenv("RFT_ALLOW_DOWNLOAD", "1")
    r = models.resolve(REPO)
    assert calls and calls[0][0] == REPO and calls[0][2] == str(hub)
    assert "*.safetensors" in calls[0][3] and not any(p.endswith(".bin") for p in calls[0][3])
    assert r.kind == "hub" and r.path.parent.parent == hub / f"models--{REPO.replace('/', '--')}"
    shutil.rmtree(hub / f"models--{REPO.replace('/', '--')}")

    def offline(*a, **k):
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(RftError, match="downloading it \\(RFT_ALLOW_DOWNLOAD=1\\) failed: OSError: offline mode"):
        models.resolve(REPO)


def test_models_list_shows_the_cached_model_and_its_engine(hub, tiny_model_dir, tmp_path):
    make_entry(hub, tiny_model_dir)
    bad = make_entry(hub, tiny_model_dir, repo="TinyOrg/Broken")
    os.remove(bad / "model.safetensors")
    r = run_rft("models", "list", "--json", env={"HF_HUB_CACHE": str(hub), "HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in json.loads(r.stdout)}
    assert rows[REPO]["kind"] == "hub" and rows[REPO]["status"] == "ready"
    assert (rows[REPO]["engine"], rows[REPO]["reason"]) == ("fast", "llama: Llama family")
    assert rows["TinyOrg/Broken"]["status"] == "broken" and rows["smollm2-135m-instruct"]["engine"] == "fast"
