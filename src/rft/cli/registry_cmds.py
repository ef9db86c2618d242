"""`rft jobs`, `rft checkpoints` (list, show, approve, export), `rft promote`, `rft rollback`, `rft aliases`,
`rft lineage`, `rft audit`.

Every list/show command takes --json and prints objects with at least `id` and `status`; the rows and tables come
from `rft.views` (which an HTTP API calls too), this module only parses and prints.
Job and checkpoint ids typed here are checked for shape first (`rft.views.job_ref`, `checkpoint_ref`): a malformed
one is one `error:` line and exit 2; the registry resolves a well-formed one (exactly or by a unique prefix) and
raises RftError for an unknown or ambiguous one, which `rft.cli.main.main` prints the same way.
"""

from __future__ import annotations

import json
import time
from typing import List, Optional

import typer

from rft.cli.output import out, print_json, print_json_line, print_view
from rft.cli.training import run_training
from rft.errors import RftError

jobs_app = typer.Typer(no_args_is_help=True, help="Jobs in the registry: list, inspect, pause, resume, cancel.")
ckpt_app = typer.Typer(no_args_is_help=True, help="Checkpoints: list, show, approve, export.")
aliases_app = typer.Typer(no_args_is_help=True, help="Aliases such as production: names that point at approved checkpoints.")


# ----------------------------------------------------------------------------------------------- jobs
@jobs_app.command("list")
def jobs_list(as_json: bool = typer.Option(False, "--json"), status: Optional[str] = typer.Option(None, "--status"),
              limit: int = typer.Option(50, "--limit")):
    """List jobs, newest first."""
    from rft import views
    from rft.registry import Registry

    rows = [views.job_row(j) for j in Registry().list_jobs(limit=limit, status=status)]
    if as_json:
        return print_json(rows)
    print_view(views.jobs_table(rows), fold=True)


@jobs_app.command("show")
def jobs_show(job: str, as_json: bool = typer.Option(False, "--json")):
    """One job: status, progress, hashes, outcome."""
    from rft import views
    from rft.registry import Registry

    j = views.job_detail(Registry(), job)
    if as_json:
        return print_json(j)
    print_view(views.job_detail_table(j), fold=(1,), show_header=False)


@jobs_app.command("events")
def jobs_events(job: str, as_json: bool = typer.Option(False, "--json"), after: int = typer.Option(0, "--after"),
                follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until the job stops.")):
    """A job's events, oldest first."""
    from rft import views
    from rft.registry import ACTIVE, Registry

    reg = Registry()
    jid = reg.get_job(views.job_ref(job))["id"]
    seq = after
    while True:
        evs = reg.events(jid, after=seq)
        for e in evs:
            seq = e["seq"]
            if as_json:
                print_json_line(views.event_row(e))
            else:
                out.print(views.event_line(e), highlight=False)
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
    from rft import views
    from rft.registry import ACTIVE, Registry

    reg = Registry()
    j = reg.request(views.job_ref(job), action)
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
    from rft.registry import Registry

    Registry().check_owner(job, "resume")  # trainers resume only their own jobs
    from rft import api

    run_training(lambda progress, log: api.resume(job, overrides or [], config=config,
                                                  allow_config_change=allow_config_change, progress=progress, log=log),
                 as_json, quiet)


# ---------------------------------------------------------------------------------------- checkpoints
@ckpt_app.command("list")
def ckpt_list(job: str, as_json: bool = typer.Option(False, "--json"),
              all_: bool = typer.Option(False, "--all", help="Include pruned checkpoints.")):
    """A job's checkpoints: step, validation score with CI, gate verdict, approval and status."""
    from rft import views
    from rft.registry import Registry

    jid, rows = views.checkpoint_rows(Registry(), job, include_pruned=all_)
    if as_json:
        return print_json(rows)
    print_view(views.checkpoints_table(jid, rows))


@ckpt_app.command("show")
def ckpt_show(ckpt: str, as_json: bool = typer.Option(False, "--json")):
    """One checkpoint with its gate verdict (every check and its numbers) and approvals."""
    from rft import views
    from rft.registry import Registry

    view = views.checkpoint_detail(Registry(), ckpt)
    if as_json:
        return print_json(view)
    out.print_json(json.dumps(view, default=str))


@ckpt_app.command("approve")
def ckpt_approve(
    ctx: typer.Context,
    ckpt: str,
    by: Optional[str] = typer.Option(None, "--by", help="Who approves (recorded); only in a registry without users "
                                     "(with users it is the user of RFT_TOKEN)."),
    note: Optional[str] = typer.Option(None, "--note", help="Why (recorded; required)."),
    override: Optional[str] = typer.Option(None, "--override", help="Approve although the gates did not pass; the reason is recorded."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Approve a checkpoint for promotion (refused unless its gates passed, or with --override REASON)."""
    from rft import views
    from rft.registry import Registry

    from rft.cli import permissions

    if by is None and permissions.single_user():
        raise typer.BadParameter("Missing option '--by': say who approves (recorded); with users configured it "
                                 "is the user whose token is in RFT_TOKEN", ctx=ctx, param_hint="'--by'")
    if note is None:  # checked after --by, as click would (both were required options before users existed)
        raise typer.BadParameter("Missing option '--note': say why (recorded)", ctx=ctx, param_hint="'--note'")
    by = permissions.actor(by)
    a = Registry().approve(views.checkpoint_ref(ckpt), by=by, note=note, override=override)
    if as_json:
        return print_json(a)
    out.print(f"approved {a['checkpoint_id']} ({a['id']}) by {by}" + (f" [override: {override}]" if override else ""))


@ckpt_app.command("export")
def ckpt_export(
    ckpt: str = typer.Argument(..., help="Checkpoint: ckpt:<id>, a ckpt-... id, alias:<name> or a checkpoint directory."),
    out_dir: str = typer.Argument(..., help="Folder to write (must not hold files, unless --force)."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that holds files: files of the same "
                               "names are replaced, old weight files removed, nothing else deleted."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Write a checkpoint as a plain transformers directory: merged safetensors weights, config, generation
    config, tokenizer, and a README.md model card with its lineage and evaluation numbers."""
    from rft import api

    res = api.export(ckpt, out_dir, force=force)
    if as_json:
        return print_json(res)
    out.print(f"exported {res['checkpoint'] or res['source']} to {res['path']} ({len(res['files'])} files"
              + ("" if res["lineage"] else "; not in the registry: the model card has no lineage") + ")",
              highlight=False, soft_wrap=True)
    out.print(f"load it with: AutoModelForCausalLM.from_pretrained({json.dumps(res['path'])})", highlight=False,
              soft_wrap=True)


# ------------------------------------------------------------------------------ promote / rollback
def promote(ckpt: str = typer.Argument(..., help="Checkpoint id (ckpt-... or ckpt:ckpt-...)."),
            alias: str = typer.Option(..., "--alias", help="Alias to point at it, e.g. production."),
            by: Optional[str] = typer.Option(None, "--by", help="Who promotes (default: the current user; only in a "
                                             "registry without users)."),
            override: Optional[str] = typer.Option(None, "--override", help="Promote although the alias's policy "
                                                   "refuses (admins; the reason and the broken rules are recorded)."),
            as_json: bool = typer.Option(False, "--json")):
    """Point an alias at an approved checkpoint its policy allows (servers following alias:NAME switch to it)."""
    from rft import views
    from rft.cli import permissions
    from rft.registry import Registry

    a = Registry().promote(views.checkpoint_ref(ckpt), views.alias_ref(alias), by=permissions.actor(by),
                           override=override)
    if as_json:
        return print_json(views.alias_row(a))
    out.print(f"alias:{a['name']} -> {a['checkpoint_id']}")


def rollback(alias: str = typer.Option(..., "--alias", help="Alias to move back to its previous target."),
             by: Optional[str] = typer.Option(None, "--by"), as_json: bool = typer.Option(False, "--json")):
    """Move an alias back to the checkpoint it pointed at before (nothing is deleted)."""
    from rft import views
    from rft.cli import permissions
    from rft.registry import Registry

    a = Registry().rollback(views.alias_ref(alias), by=permissions.actor(by))
    if as_json:
        return print_json(views.alias_row(a))
    out.print(f"alias:{a['name']} -> {a['checkpoint_id']} (rolled back)")


@aliases_app.command("list")
def aliases_list(as_json: bool = typer.Option(False, "--json")):
    """Every alias and its current checkpoint."""
    from rft import views
    from rft.registry import Registry

    rows = views.alias_rows(Registry())
    if as_json:
        return print_json(rows)
    print_view(views.aliases_table(rows))


@aliases_app.command("policy")
def aliases_policy(
    name: str = typer.Argument(..., help="The alias, e.g. production (it need not exist yet)."),
    require_gates: bool = typer.Option(False, "--require-gates", help="The checkpoint's quality gates must have passed."),
    min_approvals: int = typer.Option(0, "--min-approvals", help="Approvals from distinct approvers needed."),
    separation_of_duties: bool = typer.Option(False, "--separation-of-duties",
                                              help="The job's creator cannot approve its checkpoints."),
    min_eval_items: Optional[int] = typer.Option(None, "--min-eval-items", help="Least items the checkpoint was evaluated on."),
    max_grader_disagreement: Optional[float] = typer.Option(
        None, "--max-grader-disagreement", help="Stored; promotions are refused until review (issue 18) can measure it."),
    show: bool = typer.Option(False, "--show", help="Show the policy in force (and its versions with --json)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Set an alias's promotion policy (a new version each time; audited), or --show it."""
    from rft.registry import Registry
    from rft.registry.access import policy_text

    reg = Registry()
    if show:
        cur = reg.policy(name)
        if as_json:
            return print_json({"alias": name.removeprefix("alias:"), "policy": cur,
                               "versions": reg.policy_history(name)})
        if cur is None:
            out.print(f"alias:{name.removeprefix('alias:')} has no promotion policy")
        else:
            out.print(f"alias:{cur['name']} policy v{cur['version']} (by {cur['created_by']}): "
                      f"{policy_text(cur['policy'])}", highlight=False, soft_wrap=True)
        return
    row = reg.set_policy(name, {"require_gates": require_gates, "min_approvals": min_approvals,
                                "separation_of_duties": separation_of_duties, "min_eval_items": min_eval_items,
                                "max_grader_disagreement": max_grader_disagreement})
    if as_json:
        return print_json(row)
    out.print(f"alias:{row['name']} policy v{row['version']}: {policy_text(row['policy'])}", highlight=False,
              soft_wrap=True)


def lineage_cmd(ref: str = typer.Argument(..., help="ckpt:<id>, alias:<name> or a fine-tuned model's ft: name"),
                as_json: bool = typer.Option(False, "--json"),
                no_verify: bool = typer.Option(False, "--no-verify", help="Skip re-hashing the checkpoint files.")):
    """Everything a checkpoint or alias depends on: job, base model, datasets, grader, config, code, evaluations,
    gate verdict, approvals, with every hash; the checkpoint files are re-hashed against the manifest."""
    from rft import api
    from rft.registry.lineage import format_lineage

    d = api.lineage(ref, verify=not no_verify)
    if as_json:
        return print_json(d)
    out.print(format_lineage(d), highlight=False, soft_wrap=True)
    if d["checkpoint"]["verified"] and not d["checkpoint"]["verified"]["ok"]:
        raise RftError("checkpoint verification failed (see above)")


def audit_cmd(subject: Optional[str] = typer.Option(None, "--subject", help="e.g. alias:production or a job id"),
              as_json: bool = typer.Option(False, "--json")):
    """The append-only audit log: who did what, when, before and after."""
    from rft import views
    from rft.registry import Registry

    rows = views.audit_rows(Registry(), subject)
    if as_json:
        return print_json(rows)
    print_view(views.audit_table(rows), fold=True)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(ckpt_app, name="checkpoints")
    app.add_typer(aliases_app, name="aliases")
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("lineage")(lineage_cmd)
    app.command("audit")(audit_cmd)
