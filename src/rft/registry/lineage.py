"""Lineage: everything a checkpoint or alias depends on, with every hash, from the registry alone.

What: `lineage(ref)` is the view behind `rft lineage REF` (the job, base model, data and grader hashes, the
resolved config's hash, evaluations with the grader that judged each, graders replayed over the job's samples
since (`rft replay`, both hashes), the gate verdict, approvals, the alias history), with the checkpoint's
files re-verified against the registry's manifest hash (`rft.hashing.verify_checkpoint`); `format_lineage`
renders it as text; `code_version()` is the code stamp a job records for it.
Simplified: the code stamp is the git commit of the source tree (and whether it was dirty) when rft runs from a
checkout, else the package version: an installed wheel's own edits are not seen.
How to run: `rft lineage alias:production`, or `python -c "from rft.registry.lineage import code_version as c; print(c())"`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import rft
from rft.errors import RftError
from rft.hashing import verify_checkpoint
from rft.registry import Registry


def code_version() -> str:
    """`git:<commit>[+dirty]` of the source checkout rft runs from, else `rft==<version>`."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            flag = "+dirty" if dirty.stdout.strip() else ""
            return f"git:{commit.stdout.strip()[:12]}{flag}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"rft=={rft.__version__}"


def lineage(ref: str, *, verify: bool = True) -> dict:
    reg = Registry()
    alias = None
    if ref.startswith("alias:"):
        a = reg.alias(ref)
        alias = {"name": a["name"], "checkpoint_id": a["checkpoint_id"], "updated_at": a["updated_at"],
                 "history": [r for r in reg.audit_log(subject=f"alias:{a['name']}")]}
        ck = reg.get_checkpoint(a["checkpoint_id"])
    elif ref.startswith("ckpt:") or ref.startswith("ckpt-"):
        ck = reg.get_checkpoint(ref.removeprefix("ckpt:"))
    else:
        raise RftError(f"lineage needs a checkpoint (ckpt:<id>) or an alias (alias:<name>), not '{ref}'")
    job = reg.get_job(ck["job_id"])
    verified = None
    if verify:
        try:
            reg.checkpoint_for_ref(f"ckpt:{ck['id']}")
            verify_checkpoint(ck["path"], recorded_manifest_sha256=ck["manifest_sha256"],
                              name=f"checkpoint {ck['id']} at {ck['path']}")
            verified = {"ok": True, "message": "every file matches its manifest and the manifest matches the registry"}
        except RftError as e:
            verified = {"ok": False, "message": str(e)}
    g = reg.grader(job["grader_sha256"]) if job.get("grader_sha256") else None
    verdict = reg.verdict(ck["verdict_id"])
    return {
        "id": ck["id"],
        "status": ck["status"],
        "ref": ref,
        "alias": alias,
        "checkpoint": {"id": ck["id"], "step": ck["step"], "path": ck["path"], "manifest_sha256": ck["manifest_sha256"],
                       "is_final": ck["is_final"], "approval_status": ck["approval_status"],
                       "validation_score": ck["val_score"], "validation_ci95": [ck["val_low"], ck["val_high"]],
                       "verified": verified},
        "job": {"id": job["id"], "status": job["status"], "created_at": job["created_at"], "run_dir": job["run_dir"]},
        "base_model": {"ref": job["model"], "sha256": job.get("base_model_sha256")},
        "datasets": {
            "training": {"file": job.get("training_file"), "sha256": job.get("training_file_sha256")},
            "validation": {"file": job.get("validation_file"), "sha256": job.get("validation_file_sha256")},
            "guard": {"file": job.get("guard_file"), "sha256": job.get("guard_file_sha256")} if job.get("guard_file") else None,
        },
        "graders": [{"type": g["type"] if g else None, "sha256": job.get("grader_sha256"),
                     "name": (g["spec"] or {}).get("name") if g else None, "role": "trained with"}],
        "replays": _replays(reg, job["id"]),
        "config": {"sha256": job.get("config_sha256"), "resolved": job.get("resolved_config")},
        "code_version": job.get("code_version"),
        "evaluations": [{"id": r["id"], "kind": r["kind"], "accuracy": (r["summary"] or {}).get("accuracy"),
                         "accuracy_ci95": (r["summary"] or {}).get("accuracy_ci95"), "data_sha256": r["data_sha256"],
                         "grader_sha256": r["grader_sha256"], "checkpoint_id": r["checkpoint_id"]}
                        for r in reg.eval_reports(job_id=job["id"])
                        if r["checkpoint_id"] in (None, ck["id"])],
        "gate_verdict": {"id": verdict["id"], "passed": verdict["passed"], "checks": verdict["verdict"].get("checks")}
        if verdict else None,
        "approvals": [{"id": a["id"], "by": a["by"], "note": a["note"], "override_reason": a["override_reason"],
                       "created_at": a["created_at"], "verdict_id": a["verdict_id"]} for a in reg.approvals(ck["id"])],
    }


def _replays(reg, job_id: str) -> list[dict]:
    """The graders replayed over the job's stored samples since (rft replay), each with both grader hashes."""
    from rft.registry.replays import list_replays

    out = []
    for r in list_replays(reg, job_id=job_id):
        summ = r.get("summary") or {}
        new = (summ.get("graders") or {}).get("new") or {}
        flips = summ.get("flips") or {}
        out.append({"id": r["id"], "created_at": r["created_at"], "created_by": r["created_by"],
                    "old_grader_sha256": r["old_grader_sha256"], "new_grader_sha256": r["new_grader_sha256"],
                    "new_grader": {"type": new.get("type"), "name": new.get("name"), "source": new.get("source")},
                    "pass_to_fail": flips.get("pass_to_fail"), "fail_to_pass": flips.get("fail_to_pass"),
                    "n": flips.get("n"), "path": r["path"]})
    return out


def format_lineage(d: dict) -> str:
    """Plain-text rendering, one fact per line, hashes in full."""
    ck = d["checkpoint"]
    lines = []
    if d["alias"]:
        lines.append(f"alias           {d['alias']['name']} -> {ck['id']}")
    v = ck["verified"]
    lines += [
        f"checkpoint      {ck['id']} (step {ck['step']}, {d['status']}, approval: {ck['approval_status']})",
        f"  path          {ck['path']}",
        f"  manifest      sha256:{ck['manifest_sha256']}",
        f"  verified      {'not checked (--no-verify)' if v is None else ('yes' if v['ok'] else 'NO') + ': ' + v['message']}",
        f"job             {d['job']['id']} ({d['job']['status']})  run dir {d['job']['run_dir']}",
        f"base model      {d['base_model']['ref']}  sha256:{d['base_model']['sha256']}",
    ]
    for name, ds in d["datasets"].items():
        if ds:
            lines.append(f"{name + ' data':<16}{ds['file']}  sha256:{ds['sha256']}")
    for g in d["graders"]:
        lines.append(f"grader          {g['type']} {g['name'] or ''}  sha256:{g['sha256']}"
                     + (f"  ({g['role']})" if g.get("role") else ""))
    lines.append(f"config          sha256:{d['config']['sha256']}")
    lines.append(f"code version    {d['code_version']}")
    for e in d["evaluations"]:
        ci = e["accuracy_ci95"] or [None, None]
        acc = f"{e['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if e["accuracy"] is not None and ci[0] is not None else str(e["accuracy"])
        lines.append(f"evaluation      {e['id']} {e['kind']:<14} accuracy {acc}  data sha256:{e['data_sha256']}"
                     + (f"  judged with grader sha256:{e['grader_sha256']}" if e.get("grader_sha256") else ""))
    for r in d.get("replays") or []:
        ng = r["new_grader"]
        lines.append(f"replay          {r['id']} grader sha256:{r['old_grader_sha256']} -> {ng.get('type')} "
                     f"{ng.get('name') or ''} sha256:{r['new_grader_sha256']}: {r['pass_to_fail']} pass->fail, "
                     f"{r['fail_to_pass']} fail->pass of {r['n']} items  {r['path'] or ''}")
    gv = d["gate_verdict"]
    if gv:
        lines.append(f"gates           {'passed' if gv['passed'] else 'FAILED'} ({gv['id']})")
        for c in gv["checks"] or []:
            lines.append(f"  {'ok  ' if c.get('passed') else 'FAIL'} {c.get('name')}: {c.get('value')} vs {c.get('threshold')}")
    else:
        lines.append("gates          (no verdict)")
    for a in d["approvals"]:
        extra = f" OVERRIDE: {a['override_reason']}" if a["override_reason"] else ""
        lines.append(f"approval        {a['id']} by {a['by']}: {a['note'] or ''}{extra}")
    if d["alias"]:
        for h in d["alias"]["history"]:
            lines.append(f"alias history   {h['action']} by {h['actor']}: {(h['before'] or {}).get('checkpoint_id')} -> "
                         f"{(h['after'] or {}).get('checkpoint_id')}")
    return "\n".join(lines)
