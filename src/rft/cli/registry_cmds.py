"""`rft jobs`, `rft checkpoints`, `rft promote`, `rft rollback`, `rft aliases`, `rft lineage`, `rft audit`.

Every list/show command takes --json and prints objects with at least `id` and `status`.
Job and checkpoint ids typed here are checked for shape first (`_job_ref`, `_ckpt_ref`): a malformed one is one
`error:` line and exit 2 before the registry is opened; the registry resolves a well-formed one (exactly or by a
unique prefix) and raises RftError for an unknown or ambiguous one, which `rft.cli.main.main` prints the same way.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from rft.errors import RftError

jobs_app = typer.Typer(no_args_is_help=True, help="Jobs in the registry: list, inspect, pause, resume, cancel.")
ckpt_app = typer.Typer(no_args_is_help=True, help="Checkpoints: list, show, approve.")
aliases_app = typer.Typer(no_args_is_help=True, help="Aliases such as production: names that point at approved checkpoints.")

out = Console()
err = Console(stderr=True)


# rft makes every id: ftjob-20250101-120000-1a2b3c, ckpt-1a2b3c4d; a prefix of one has the same letters.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the registry's rule for alias names


def _checked(value: str, pattern: re.Pattern, what: str, rule: str, hint: str) -> str:
    v = value.strip()
    if not pattern.fullmatch(v):
        shown = json.dumps(value, ensure_ascii=False)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise RftError(f"{shown} is not a valid {what}: {rule}", hint=hint)
    return v


def _job_ref(value: str) -> str:
    return _checked(value, _ID, "job id", "ids are letters, digits and '-', like ftjob-20250101-120000-1a2b3c",
                    "see `rft jobs list`")


def _ckpt_ref(value: str) -> str:
    return _checked(value.strip().removeprefix("ckpt:"), _ID, "checkpoint id",
                    "ids are letters, digits and '-', like ckpt-1a2b3c4d (a ckpt: prefix is allowed)",
                    "see `rft checkpoints list JOB`")


def _alias_ref(value: str) -> str:
    return _checked(value.strip().removeprefix("alias:"), _ALIAS, "alias name",
                    "use letters, digits, '.', '_' or '-' (at most 64)", "see `rft aliases list`")


def _json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _t(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _job_view(j: dict) -> dict:
    keys = ("id", "status", "model", "step", "total_steps", "created_at", "updated_at", "finished_at", "run_dir",
            "pid", "config_sha256", "training_file", "training_file_sha256", "validation_file",
            "validation_file_sha256", "grader_sha256", "base_model_sha256", "code_version", "error", "result")
    return {k: j.get(k) for k in keys}


# ----------------------------------------------------------------------------------------------- jobs
@jobs_app.command("list")
def jobs_list(as_json: bool = typer.Option(False, "--json"), status: Optional[str] = typer.Option(None, "--status"),
              limit: int = typer.Option(50, "--limit")):
    """List jobs, newest first."""
    from rft.registry import Registry

    rows = [_job_view(j) for j in Registry().list_jobs(limit=limit, status=status)]
    if as_json:
        return _json(rows)
    t = Table(title="jobs")
    for c in ("id", "status", "step", "model", "created", "run dir"):
        t.add_column(c, overflow="fold")
    for j in rows:
        t.add_row(j["id"], j["status"], f"{j['step']}/{j['total_steps'] or '?'}", j["model"], _t(j["created_at"]), j["run_dir"])
    out.print(t)


@jobs_app.command("show")
def jobs_show(job: str, as_json: bool = typer.Option(False, "--json")):
    """One job: status, progress, hashes, outcome."""
    from rft.registry import Registry

    reg = Registry()
    j = _job_view(reg.get_job(_job_ref(job)))
    j["checkpoints"] = [{"id": c["id"], "step": c["step"], "status": c["status"]} for c in reg.list_checkpoints(j["id"])]
    if as_json:
        return _json(j)
    t = Table(title=f"job {j['id']}", show_header=False)
    t.add_column("")
    t.add_column("", overflow="fold")
    for k, v in j.items():
        if k in ("created_at", "updated_at", "finished_at"):
            v = _t(v)
        t.add_row(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    out.print(t)


@jobs_app.command("events")
def jobs_events(job: str, as_json: bool = typer.Option(False, "--json"), after: int = typer.Option(0, "--after"),
                follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job stops.")):
    """A job's events, oldest first."""
    from rft.registry import ACTIVE, Registry

    reg = Registry()
    jid = reg.get_job(_job_ref(job))["id"]
    seq = after
    while True:
        evs = reg.events(jid, after=seq)
        for e in evs:
            seq = e["seq"]
            if as_json:
                sys.stdout.write(json.dumps({"id": e["seq"], "status": e["level"], **e}, default=str) + "\n")
            else:
                out.print(f"{_t(e['created_at'])}  {e['level']:<5} {e['message']}", highlight=False)
        if not follow or (not evs and reg.get_job(jid)["status"] not in ACTIVE):
            break
        time.sleep(1.0)


@jobs_app.command("pause")
def jobs_pause(job: str, wait: bool = typer.Option(False, "--wait", help="Wait until the job has saved and stopped.")):
    """Ask a running job to save its state and stop at the next step boundary."""
    _request(job, "pause", wait)


@jobs_app.command("cancel")
def jobs_cancel(job: str, wait: bool = typer.Option(False, "--wait")):
    """Cancel a job (a running job stops at the next step boundary)."""
    _request(job, "cancel", wait)


def _request(job: str, action: str, wait: bool) -> None:
    from rft.registry import ACTIVE, Registry

    reg = Registry()
    j = reg.request(_job_ref(job), action)
    if j["status"] in ACTIVE:
        out.print(f"{action} requested for {j['id']}; it takes effect at the end of the current step")
        if wait:
            while reg.get_job(j["id"])["status"] in ACTIVE:
                time.sleep(0.5)
    j = reg.get_job(j["id"])
    out.print(f"job {j['id']}: {j['status']}")


@jobs_app.command("resume")
def jobs_resume(
    job: str,
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides (a config change: needs --allow-config-change)"),
    config: Optional[str] = typer.Option(None, "--config", help="A changed job spec to continue with."),
    allow_config_change: bool = typer.Option(False, "--allow-config-change",
                                             help="Resume although the config, data, grader or model changed (the diff is recorded)."),
    as_json: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Continue a paused or interrupted job from its last complete checkpoint."""
    from rft.cli.main import _run_training
    from rft.train.loop import resume_job

    _run_training(lambda progress, log: resume_job(_job_ref(job), config_path=config, overrides=overrides or [],
                                                   allow_config_change=allow_config_change, progress=progress, log=log),
                  as_json, quiet)


# ---------------------------------------------------------------------------------------- checkpoints
def _ckpt_view(c: dict, reg) -> dict:
    v = reg.verdict(c["verdict_id"])
    gate = None if v is None else ("passed" if v["passed"] else "failed")
    return {"id": c["id"], "status": c["status"], "job_id": c["job_id"], "step": c["step"], "is_final": c["is_final"],
            "validation_score": c["val_score"], "validation_ci95": [c["val_low"], c["val_high"]], "gates": gate,
            "verdict_id": c["verdict_id"], "approval_status": c["approval_status"], "path": c["path"],
            "manifest_sha256": c["manifest_sha256"]}


@ckpt_app.command("list")
def ckpt_list(job: str, as_json: bool = typer.Option(False, "--json"),
              all_: bool = typer.Option(False, "--all", help="Include pruned checkpoints.")):
    """A job's checkpoints: step, validation score with CI, gate verdict, approval and status."""
    from rft.registry import Registry

    reg = Registry()
    jid = reg.get_job(_job_ref(job))["id"]
    rows = [_ckpt_view(c, reg) for c in reg.list_checkpoints(jid, include_pruned=all_)]
    if as_json:
        return _json(rows)
    t = Table(title=f"checkpoints of {jid}")
    for c in ("id", "step", "validation (95% CI)", "gates", "approval", "status"):
        t.add_column(c)
    for r in rows:
        lo, hi = r["validation_ci95"]
        val = "-" if r["validation_score"] is None else f"{r['validation_score']:.3f} [{lo:.3f}, {hi:.3f}]"
        t.add_row(r["id"], f"{r['step']}{' (final)' if r['is_final'] else ''}", val, r["gates"] or "-",
                  r["approval_status"], r["status"])
    out.print(t)


@ckpt_app.command("show")
def ckpt_show(ckpt: str, as_json: bool = typer.Option(False, "--json")):
    """One checkpoint with its gate verdict (every check and its numbers) and approvals."""
    from rft.registry import Registry

    reg = Registry()
    c = reg.get_checkpoint(_ckpt_ref(ckpt))
    view = _ckpt_view(c, reg)
    v = reg.verdict(c["verdict_id"])
    view["verdict"] = v["verdict"] if v else None
    view["approvals"] = reg.approvals(c["id"])
    if as_json:
        return _json(view)
    out.print_json(json.dumps(view, default=str))


@ckpt_app.command("approve")
def ckpt_approve(
    ckpt: str,
    by: str = typer.Option(..., "--by", help="Who approves (recorded)."),
    note: str = typer.Option(..., "--note", help="Why (recorded)."),
    override: Optional[str] = typer.Option(None, "--override", help="Approve although the gates did not pass; the reason is recorded."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Approve a checkpoint for promotion (refused unless its gates passed, or with --override REASON)."""
    from rft.registry import Registry

    a = Registry().approve(_ckpt_ref(ckpt), by=by, note=note, override=override)
    if as_json:
        return _json(a)
    out.print(f"approved {a['checkpoint_id']} ({a['id']}) by {by}" + (f" [override: {override}]" if override else ""))


# ------------------------------------------------------------------------------ promote / rollback
def promote(ckpt: str = typer.Argument(..., help="Checkpoint id (ckpt-... or ckpt:ckpt-...)."),
            alias: str = typer.Option(..., "--alias", help="Alias to point at it, e.g. production."),
            by: Optional[str] = typer.Option(None, "--by", help="Who promotes (default: the current user)."),
            as_json: bool = typer.Option(False, "--json")):
    """Point an alias at an approved checkpoint (servers following alias:NAME switch to it)."""
    from rft.registry import Registry, default_actor

    a = Registry().promote(_ckpt_ref(ckpt), _alias_ref(alias), by=by or default_actor())
    if as_json:
        return _json({"id": a["name"], "status": "live", **a})
    out.print(f"alias:{a['name']} -> {a['checkpoint_id']}")


def rollback(alias: str = typer.Option(..., "--alias", help="Alias to move back to its previous target."),
             by: Optional[str] = typer.Option(None, "--by"), as_json: bool = typer.Option(False, "--json")):
    """Move an alias back to the checkpoint it pointed at before (nothing is deleted)."""
    from rft.registry import Registry, default_actor

    a = Registry().rollback(_alias_ref(alias), by=by or default_actor())
    if as_json:
        return _json({"id": a["name"], "status": "live", **a})
    out.print(f"alias:{a['name']} -> {a['checkpoint_id']} (rolled back)")


@aliases_app.command("list")
def aliases_list(as_json: bool = typer.Option(False, "--json")):
    """Every alias and its current checkpoint."""
    from rft.registry import Registry

    rows = [{"id": a["name"], "status": "live", "checkpoint_id": a["checkpoint_id"], "updated_at": a["updated_at"],
             "version": a["version"]} for a in Registry().list_aliases()]
    if as_json:
        return _json(rows)
    t = Table(title="aliases")
    for c in ("alias", "checkpoint", "updated", "moves"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["id"], r["checkpoint_id"], _t(r["updated_at"]), str(r["version"]))
    out.print(t)


def lineage_cmd(ref: str = typer.Argument(..., help="ckpt:<id> or alias:<name>"),
                as_json: bool = typer.Option(False, "--json"),
                no_verify: bool = typer.Option(False, "--no-verify", help="Skip re-hashing the checkpoint files.")):
    """Everything a checkpoint or alias depends on: job, base model, datasets, grader, config, code, evaluations,
    gate verdict, approvals, with every hash; the checkpoint files are re-hashed against the manifest."""
    from rft.registry.lineage import format_lineage, lineage

    d = lineage(ref, verify=not no_verify)
    if as_json:
        return _json(d)
    out.print(format_lineage(d), highlight=False, soft_wrap=True)
    if d["checkpoint"]["verified"] and not d["checkpoint"]["verified"]["ok"]:
        raise RftError("checkpoint verification failed (see above)")


def audit_cmd(subject: Optional[str] = typer.Option(None, "--subject", help="e.g. alias:production or a job id"),
              as_json: bool = typer.Option(False, "--json")):
    """The append-only audit log: who did what, when, before and after."""
    from rft.registry import Registry

    rows = [{"id": r["seq"], "status": r["action"], **r} for r in Registry().audit_log(subject)]
    if as_json:
        return _json(rows)
    t = Table(title="audit log")
    for c in ("when", "actor", "action", "subject", "before", "after"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(_t(r["at"]), r["actor"], r["action"], r["subject"], json.dumps(r["before"]), json.dumps(r["after"]))
    out.print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(ckpt_app, name="checkpoints")
    app.add_typer(aliases_app, name="aliases")
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("lineage")(lineage_cmd)
    app.command("audit")(audit_cmd)
