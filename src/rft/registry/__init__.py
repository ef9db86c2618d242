"""The registry: one store for jobs, events, metrics, datasets, graders, checkpoints, evaluation reports, gate
verdicts, approvals, aliases, uploaded files (their rows; the bytes are in `rft.files`) and an append-only audit log.

`Registry()` opens the database at RFT_DATABASE_URL (default sqlite:///$RFT_HOME/rft.db). Every method is one
short transaction. Transitions that a person makes (approve, promote, rollback, cancel, pause, resume,
config changes on resume) write an audit row: who, when, before, after and the verdict relied on.

Users, roles, tokens and promotion policies are `rft.registry.access` (mixed into `Registry`): the acting user
(`default_actor()`: the authenticated user, else RFT_ACTOR or the OS user) is recorded as the creator of new
jobs, files and batches and in audit rows; team members see only their team's rows; trainers pause and cancel
only their own jobs; `promote` enforces the alias's policy (admins may override with a recorded reason).

Job statuses: validating_files -> queued -> running -> succeeded | failed | cancelled, plus paused and
interrupted (the process died without recording an outcome, e.g. SIGKILL; found by checking its pid).

The registry is a store: it returns rows (dicts) and views, and imports nothing of rft above the ground floor.
`ckpt:`/`alias:` references become model directories in `rft.models` (which asks `checkpoint_for_ref` for the
row) and checkpoint files are verified by `rft.hashing.verify_checkpoint`.
How to run: `python -c "from rft.registry import Registry; print(Registry().list_jobs(limit=5))"`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

import sqlalchemy as sa

from rft.errors import RftError, did_you_mean
from rft.registry import db
from rft.registry.access import (PermissionDenied, PolicyRefused, Principal, UsersMixin, authenticated_actor,
                                 check_policy,
                                 current_principal, default_actor, owner_fields, policy_text, require_owner,
                                 visible, visible_team)
from rft.registry.db import (alias_history, aliases, approvals, audit, batches, checkpoints, datasets, eval_reports,
                             events, files, gate_verdicts, graders, jobs, metrics)

ACTIVE = ("validating_files", "queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
RESUMABLE = ("paused", "interrupted", "failed")


def _now() -> float:
    return time.time()


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _proc_start(pid: int) -> str | None:
    """Process start time (clock ticks since boot) from /proc: tells a live job from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.exists("/proc"):
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return start is None or fields[19] == start


def _owner() -> dict:
    """The running process as the job's owner: pid, and host#start-time so a reused pid is not mistaken for it."""
    pid = os.getpid()
    start = _proc_start(pid)
    host = socket.gethostname() + (f"#{start}" if start else "")
    return {"pid": pid, "host": host, "heartbeat_at": _now()}


def _row(r) -> dict:
    return dict(r._mapping) if r is not None else None


class Registry(UsersMixin):
    def __init__(self, url: str | None = None):
        self.engine = db.get_engine(url)

    # ------------------------------------------------------------------------------------------ jobs
    def create_job(self, job_id: str, *, spec: dict, model: str, run_dir: str, status: str = "validating_files",
                   **fields) -> dict:
        now = _now()
        values = dict(id=job_id, status=status, created_at=now, updated_at=now, model=model, spec=spec,
                      run_dir=str(run_dir), step=0, **_owner(), **owner_fields())
        values.update(fields)
        with self.engine.begin() as c:
            c.execute(jobs.insert().values(**values))
            if authenticated_actor():  # with users, who started which job is part of the audit trail
                self._audit(c, values["created_by"], "job.create", job_id, None,
                            {"status": status, "model": model, "team": values.get("team")})
        return self.get_job(job_id)

    def claim_job(self, job_id: str, **fields) -> None:
        """This process now runs the job (a resume in a new process)."""
        self.update_job(job_id, **_owner(), **fields)

    def update_job(self, job_id: str, **fields) -> None:
        fields["updated_at"] = _now()
        with self.engine.begin() as c:
            c.execute(jobs.update().where(jobs.c.id == job_id).values(**fields))

    def heartbeat(self, job_id: str, step: int) -> str | None:
        """Record progress; return and clear a pending request ("pause" | "cancel") from another process."""
        with self.engine.begin() as c:
            req = c.execute(sa.select(jobs.c.requested).where(jobs.c.id == job_id)).scalar()
            c.execute(jobs.update().where(jobs.c.id == job_id).values(
                step=step, heartbeat_at=_now(), updated_at=_now(), requested=None))
        return req

    def _reconcile(self, row: dict) -> dict:
        """A job recorded as active whose process is gone on this host was interrupted (kill -9, OOM, power)."""
        if row["status"] not in ACTIVE:
            return row
        host, _, start = (row.get("host") or "").partition("#")
        if host != socket.gethostname():
            return row  # another machine: only its own heartbeat can tell
        if _alive(row.get("pid"), start or None):
            return row
        err = {"code": "interrupted", "message": f"the process running this job (pid {row.get('pid')}) exited without "
               f"recording an outcome (killed?) at step {row.get('step')}; continue it with `rft jobs resume {row['id']}`"}
        with self.engine.begin() as c:
            n = c.execute(jobs.update().where((jobs.c.id == row["id"]) & (jobs.c.status == row["status"]))
                          .values(status="interrupted", error=err, updated_at=_now())).rowcount
        if n:
            self.add_event(row["id"], "error", "status", f"Job interrupted: {err['message']}")
            row = row | {"status": "interrupted", "error": err}
        return row

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def _resolve(self, column, given: str, kind: str, hint: str, where=None) -> str:
        """The id (or alias name) equal to `given`, else the only one that starts with it. Compared as plain
        strings (substr), never with SQL LIKE: a user's '%' or '_' matches only itself. `where`: a condition
        the row must also meet (team visibility), so other rows neither match nor show in messages."""
        given = str(given).strip()
        if not given:
            raise RftError(f"no {kind} given (an empty {kind} id)", hint=hint)
        cond = where if where is not None else sa.true()
        with self.engine.connect() as c:
            if c.execute(sa.select(column).where((column == given) & cond)).first() is not None:
                return given
            cands = c.execute(sa.select(column).where((sa.func.substr(column, 1, len(given)) == given) & cond)
                              .order_by(column).limit(11)).scalars().all()
            recent = [] if cands else c.execute(sa.select(column).where(cond).limit(2000)).scalars().all()
        if len(cands) == 1:
            return cands[0]
        if cands:
            more = ", ..." if len(cands) > 10 else ""
            raise RftError(f"{kind} id '{given}' is ambiguous: it starts {'more than 10' if more else len(cands)} "
                           f"{kind} ids: {', '.join(cands[:10])}{more}", hint=f"give more characters; {hint}")
        close = did_you_mean(given, recent)
        raise RftError(f"no {kind} '{given}' in the registry ({self._where()}){close}", hint=hint)

    @staticmethod
    def _team_cond(table):
        team = visible_team()
        return None if team is None else (table.c.team == team)

    def get_job(self, job_id: str) -> dict:
        """The job (exact id or unique prefix); one of another team is "no job" to a team member."""
        jid = self._resolve(jobs.c.id, job_id, "job", "see `rft jobs list`", self._team_cond(jobs))
        with self.engine.connect() as c:
            r = _row(c.execute(sa.select(jobs).where(jobs.c.id == jid)).first())
        if r is None:  # removed between the two reads
            raise RftError(f"no job '{job_id}' in the registry ({self._where()})", hint="see `rft jobs list`")
        return self._reconcile(r)

    def list_jobs(self, limit: int = 50, status: str | None = None) -> list[dict]:
        q = sa.select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if status:
            q = q.where(jobs.c.status == status)
        if self._team_cond(jobs) is not None:
            q = q.where(self._team_cond(jobs))
        with self.engine.connect() as c:
            rows = [_row(r) for r in c.execute(q)]
        return [self._reconcile(r) for r in rows]

    def request(self, job_id: str, action: str, actor: str | None = None) -> dict:
        """Ask a running job to pause or cancel at its next step boundary; cancel a stopped job at once."""
        job = self.get_job(job_id)
        require_owner(job, action)
        st = job["status"]
        if action == "pause":
            if st not in ACTIVE:
                raise RftError(f"job {job['id']} is {st}; only a running job can be paused")
        elif action == "cancel":
            if st in TERMINAL:
                raise RftError(f"job {job['id']} is already {st}")
            if st not in ACTIVE:  # paused / interrupted: nothing runs, cancel now
                self.update_job(job["id"], status="cancelled", finished_at=_now())
                self.add_event(job["id"], "warn", "status", "Job cancelled")
                self.audit(actor or default_actor(), "job.cancel", job["id"], {"status": st}, {"status": "cancelled"})
                return self.get_job(job["id"])
        else:
            raise RftError(f"unknown job action '{action}'")
        self.update_job(job["id"], requested=action)
        self.audit(actor or default_actor(), f"job.{action}.request", job["id"], {"status": st}, {"requested": action})
        return self.get_job(job["id"])

    def check_owner(self, job_id: str, action: str) -> dict:
        """The job, if the acting user may `action` it (trainers: only their own), else PermissionDenied."""
        job = self.get_job(job_id)
        require_owner(job, action)
        return job

    # ---------------------------------------------------------------------------------------- events
    def add_event(self, job_id: str, level: str, type: str, message: str, data=None) -> int:
        with self.engine.begin() as c:
            r = c.execute(events.insert().values(job_id=job_id, created_at=_now(), level=level, type=type,
                                                 message=message, data=_jsonable(data)))
            return int(r.inserted_primary_key[0])

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict]:
        q = sa.select(events).where((events.c.job_id == job_id) & (events.c.seq > after)).order_by(events.c.seq).limit(limit)
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]

    def add_metrics(self, job_id: str, step: int, data: dict) -> None:
        with self.engine.begin() as c:
            c.execute(metrics.delete().where((metrics.c.job_id == job_id) & (metrics.c.step == step)))
            c.execute(metrics.insert().values(job_id=job_id, step=step, data=_jsonable(data)))

    def truncate_metrics(self, job_id: str, after_step: int) -> None:
        """On resume: steps after the checkpoint are re-run, so their old rows go."""
        with self.engine.begin() as c:
            c.execute(metrics.delete().where((metrics.c.job_id == job_id) & (metrics.c.step > after_step)))

    def metrics(self, job_id: str) -> list[dict]:
        with self.engine.connect() as c:
            return [r.data for r in c.execute(sa.select(metrics.c.data).where(metrics.c.job_id == job_id)
                                              .order_by(metrics.c.step))]

    # ------------------------------------------------------------------------------------- artifacts
    def record_dataset(self, sha256: str, source: str, rows: int | None) -> None:
        with self.engine.begin() as c:
            if c.execute(sa.select(datasets.c.sha256).where(datasets.c.sha256 == sha256)).first() is None:
                c.execute(datasets.insert().values(sha256=sha256, source=source, rows=rows, first_seen=_now()))

    def record_grader(self, sha256: str, type: str | None, spec: dict) -> None:
        with self.engine.begin() as c:
            if c.execute(sa.select(graders.c.sha256).where(graders.c.sha256 == sha256)).first() is None:
                c.execute(graders.insert().values(sha256=sha256, type=type, spec=spec, first_seen=_now()))

    def grader(self, sha256: str) -> dict | None:
        with self.engine.connect() as c:
            return _row(c.execute(sa.select(graders).where(graders.c.sha256 == sha256)).first())

    # ----------------------------------------------------------------------------------- checkpoints
    def add_checkpoint(self, job_id: str, step: int, path: str, manifest_sha256: str, *, is_final: bool = False,
                       val: dict | None = None, eval_report_id: str | None = None) -> str:
        cid = _id("ckpt")
        val = val or {}
        with self.engine.begin() as c:
            c.execute(checkpoints.insert().values(
                id=cid, job_id=job_id, step=step, path=str(path), manifest_sha256=manifest_sha256, created_at=_now(),
                status="active", is_final=is_final, val_score=val.get("mean"), val_low=val.get("low"),
                val_high=val.get("high"), eval_report_id=eval_report_id, approval_status="none"))
        return cid

    def get_checkpoint(self, ckpt_id: str) -> dict:
        cid = self._resolve(checkpoints.c.id, str(ckpt_id).removeprefix("ckpt:"), "checkpoint",
                            "see `rft checkpoints list JOB`")
        with self.engine.connect() as c:
            r = _row(c.execute(sa.select(checkpoints).where(checkpoints.c.id == cid)).first())
            team = c.execute(sa.select(jobs.c.team).where(jobs.c.id == r["job_id"])).scalar() if r else None
        if r is None or not visible({"team": team}):
            raise RftError(f"no checkpoint '{ckpt_id}' in the registry", hint="see `rft checkpoints list JOB`")
        return r

    def list_checkpoints(self, job_id: str, include_pruned: bool = True) -> list[dict]:
        q = sa.select(checkpoints).where(checkpoints.c.job_id == job_id).order_by(checkpoints.c.step, checkpoints.c.created_at)
        if not include_pruned:
            q = q.where(checkpoints.c.status == "active")
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]

    def checkpoint_for_ref(self, ref: str) -> dict:
        """The checkpoint row that `ckpt:<id>` or `alias:<name>` names (ids by exact or unique prefix), or
        RftError when there is none or its files are gone. Reads the registry only: verifying the files against
        the row's manifest hash is `rft.hashing.verify_checkpoint`'s job, resolving to a model `rft.models`'."""
        if ref.startswith("alias:"):
            ck = self.get_checkpoint(self.alias(ref)["checkpoint_id"])
        else:
            ck = self.get_checkpoint(ref.removeprefix("ckpt:"))
        path = Path(ck["path"])
        if ck["status"] != "active" or not path.exists():
            raise RftError(f"checkpoint {ck['id']} ({ref}) has no files at {path} (status {ck['status']})")
        return ck

    def update_checkpoint(self, ckpt_id: str, **fields) -> None:
        with self.engine.begin() as c:
            c.execute(checkpoints.update().where(checkpoints.c.id == ckpt_id).values(**fields))

    def pinned_checkpoints(self) -> set[str]:
        """Checkpoints an alias points at or ever pointed at (rollback targets): never pruned."""
        with self.engine.connect() as c:
            a = set(c.execute(sa.select(aliases.c.checkpoint_id)).scalars())
            h = set(c.execute(sa.select(alias_history.c.checkpoint_id)).scalars())
        return a | h

    # ------------------------------------------------------------------------------- eval & verdicts
    def add_eval_report(self, kind: str, summary: dict, *, job_id=None, checkpoint_id=None, model_ref=None,
                        data_sha256=None, grader_sha256=None, path=None) -> str:
        rid = _id("eval")
        with self.engine.begin() as c:
            c.execute(eval_reports.insert().values(
                id=rid, created_at=_now(), job_id=job_id, checkpoint_id=checkpoint_id, model_ref=model_ref, kind=kind,
                data_sha256=data_sha256, grader_sha256=grader_sha256, summary=_jsonable(summary),
                path=str(path) if path else None))
        return rid

    def eval_reports(self, *, job_id=None, checkpoint_id=None) -> list[dict]:
        q = sa.select(eval_reports).order_by(eval_reports.c.created_at)
        if job_id:
            q = q.where(eval_reports.c.job_id == job_id)
        if checkpoint_id:
            q = q.where(eval_reports.c.checkpoint_id == checkpoint_id)
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]

    def add_verdict(self, checkpoint_id: str, verdict: dict) -> str:
        vid = _id("verdict")
        with self.engine.begin() as c:
            c.execute(gate_verdicts.insert().values(id=vid, created_at=_now(), checkpoint_id=checkpoint_id,
                                                    passed=bool(verdict.get("passed")), verdict=_jsonable(verdict)))
            c.execute(checkpoints.update().where(checkpoints.c.id == checkpoint_id).values(verdict_id=vid))
        return vid

    def verdict(self, verdict_id: str | None) -> dict | None:
        if not verdict_id:
            return None
        with self.engine.connect() as c:
            return _row(c.execute(sa.select(gate_verdicts).where(gate_verdicts.c.id == verdict_id)).first())

    # -------------------------------------------------------------- approvals, promotion, rollback
    def approve(self, ckpt_id: str, *, by: str | None = None, note: str | None = None,
                override: str | None = None) -> dict:
        """Record `by`'s approval of a checkpoint (refused unless its gates passed, or with `override`). Several
        approvers may approve the same checkpoint (promotion policies count distinct approvers); the same one
        twice is refused, and so is the job's creator where any alias's policy requires separation of duties."""
        by = by or default_actor()
        ck = self.get_checkpoint(ckpt_id)
        v = self.verdict(ck["verdict_id"])
        if ck["status"] != "active":
            raise RftError(f"checkpoint {ck['id']} is {ck['status']} (its files were removed); it cannot be approved")
        if (v is None or not v["passed"]) and not override:
            why = "has no gate verdict (the job defines no gates or it was not evaluated)" if v is None else \
                "failed its quality gates: " + "; ".join(
                    f"{x['name']} {x.get('value')} vs {x.get('threshold')}" for x in v["verdict"].get("checks", [])
                    if not x.get("passed"))
            raise RftError(f"checkpoint {ck['id']} {why}; approval refused",
                           hint="re-run with --override REASON to approve anyway (the reason is recorded)")
        earlier = self.approvals(ck["id"])
        if any(a["by"] == by for a in earlier) or (ck["approval_status"] == "approved" and not earlier):
            raise RftError(f"checkpoint {ck['id']} is already approved" + (f" by {by}" if earlier else ""))
        with self.engine.connect() as c:
            creator = c.execute(sa.select(jobs.c.created_by).where(jobs.c.id == ck["job_id"])).scalar()
        sod = self.separation_required()
        if sod and creator and creator == by:
            raise PolicyRefused(f"separation of duties: {by} created job {ck['job_id']} and cannot approve its "
                                f"checkpoint {ck['id']} (required by the policy of alias "
                                f"{', '.join('alias:' + a for a in sod)})", hint="another approver must approve it")
        aid = _id("approval")
        with self.engine.begin() as c:
            c.execute(approvals.insert().values(id=aid, created_at=_now(), checkpoint_id=ck["id"], by=by, note=note,
                                                override_reason=override, verdict_id=ck["verdict_id"]))
            c.execute(checkpoints.update().where(checkpoints.c.id == ck["id"]).values(approval_status="approved"))
            self._audit(c, by, "checkpoint.approve", ck["id"], {"approval_status": ck["approval_status"],
                                                                 "approvers": sorted(a["by"] for a in earlier)},
                        {"approval_status": "approved", "approval_id": aid,
                         "approvers": sorted({a["by"] for a in earlier} | {by})}, ck["verdict_id"],
                        {"note": note, "override_reason": override, "gates_passed": bool(v and v["passed"])})
        return {"id": aid, "checkpoint_id": ck["id"], "status": "approved", "by": by, "note": note,
                "override_reason": override, "verdict_id": ck["verdict_id"],
                "approvers": sorted({a["by"] for a in earlier} | {by})}

    def approvals(self, ckpt_id: str) -> list[dict]:
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(sa.select(approvals).where(approvals.c.checkpoint_id == ckpt_id))]

    def promote(self, ckpt_id: str, alias: str, *, by: str | None = None, override: str | None = None) -> dict:
        """Point `alias` at an approved checkpoint, if the alias's promotion policy allows it (PolicyRefused
        naming each broken rule otherwise). `override` (a reason; admins only) promotes despite the policy
        and is recorded with the rules it broke. The CLI, the HTTP API and the dashboard all promote here."""
        by = by or default_actor()
        ck = self.get_checkpoint(ckpt_id)
        if ck["approval_status"] != "approved":
            raise RftError(f"checkpoint {ck['id']} is not approved; only approved checkpoints can be promoted",
                           hint=f"rft checkpoints approve {ck['id']} --note TEXT")
        if ck["status"] != "active":
            raise RftError(f"checkpoint {ck['id']} is {ck['status']}; it cannot be promoted")
        _check_alias_name(alias)
        override = (override or "").strip() or None
        pol = self.policy(alias)
        broken: list[str] = []
        if pol is not None:
            job = self.get_job(ck["job_id"])
            from rft.registry.reviews import list_verdicts  # issue 18: max_grader_disagreement is measured

            broken = check_policy(pol["policy"], checkpoint=ck, job=job, verdict=self.verdict(ck["verdict_id"]),
                                  approvals=self.approvals(ck["id"]), reports=self.eval_reports(checkpoint_id=ck["id"]),
                                  review_verdicts=list_verdicts(self, job["id"]))
        if override:
            p = current_principal()
            if p is not None and not p.can("admin"):
                raise PermissionDenied(f"only an admin may override a promotion policy (user '{p.name}' is "
                                       f"{p.role})")
            if not broken:
                override = None  # nothing to override: not recorded as one
        if broken and not override:
            raise PolicyRefused(f"promotion of {ck['id']} to alias '{alias}' refused by its policy (version "
                                f"{pol['version']}): " + "; ".join(broken),
                                hint="satisfy the rule(s), or an admin may promote with --override REASON "
                                     "(recorded); see `rft aliases policy " + alias + " --show`")
        with self.engine.begin() as c:
            cur = _row(c.execute(sa.select(aliases).where(aliases.c.name == alias)).first())
            if cur and cur["checkpoint_id"] == ck["id"]:
                raise RftError(f"alias '{alias}' already points at {ck['id']}")
            if cur:
                n = c.execute(aliases.update().where((aliases.c.name == alias) & (aliases.c.version == cur["version"]))
                              .values(checkpoint_id=ck["id"], updated_at=_now(), version=cur["version"] + 1)).rowcount
                if n != 1:
                    raise RftError(f"alias '{alias}' moved while promoting; try again")
            else:
                c.execute(aliases.insert().values(name=alias, checkpoint_id=ck["id"], updated_at=_now(), version=1))
            c.execute(alias_history.insert().values(name=alias, checkpoint_id=ck["id"], created_at=_now(), state="live"))
            detail = None
            if pol is not None:
                detail = {"policy_version": pol["version"], "policy": policy_text(pol["policy"])}
                if override:
                    detail |= {"override_reason": override, "broken_rules": broken}
            self._audit(c, by, "alias.promote", f"alias:{alias}", {"checkpoint_id": cur["checkpoint_id"] if cur else None},
                        {"checkpoint_id": ck["id"]}, ck["verdict_id"], detail)
        return self.alias(alias)

    def rollback(self, alias: str, *, by: str | None = None) -> dict:
        """Move the alias back to the target it had before its current one. Nothing is deleted."""
        by = by or default_actor()
        alias = self._alias_name(alias)
        with self.engine.begin() as c:
            cur = _row(c.execute(sa.select(aliases).where(aliases.c.name == alias)).first())
            if cur is None:
                raise RftError(f"no alias '{alias}'")
            live = [_row(r) for r in c.execute(sa.select(alias_history).where(
                (alias_history.c.name == alias) & (alias_history.c.state == "live")).order_by(alias_history.c.seq.desc()))]
            if len(live) < 2:
                raise RftError(f"alias '{alias}' has no earlier target to roll back to")
            prev = live[1]
            c.execute(alias_history.update().where(alias_history.c.seq == live[0]["seq"]).values(state="rolled_back"))
            n = c.execute(aliases.update().where((aliases.c.name == alias) & (aliases.c.version == cur["version"]))
                          .values(checkpoint_id=prev["checkpoint_id"], updated_at=_now(), version=cur["version"] + 1)).rowcount
            if n != 1:
                raise RftError(f"alias '{alias}' moved during rollback; try again")
            vid = c.execute(sa.select(checkpoints.c.verdict_id).where(checkpoints.c.id == prev["checkpoint_id"])).scalar()
            self._audit(c, by, "alias.rollback", f"alias:{alias}", {"checkpoint_id": cur["checkpoint_id"]},
                        {"checkpoint_id": prev["checkpoint_id"]}, vid, None)
        return self.alias(alias)

    def _alias_name(self, name: str) -> str:
        with self.engine.connect() as c:
            known = c.execute(sa.select(aliases.c.name).order_by(aliases.c.name).limit(20)).scalars().all()
        hint = ("known aliases: " + ", ".join(known)) if known else \
            "promote an approved checkpoint with `rft promote CKPT --alias NAME`"
        return self._resolve(aliases.c.name, str(name).removeprefix("alias:"), "alias", hint)

    def alias(self, name: str) -> dict:
        n = self._alias_name(name)
        with self.engine.connect() as c:
            r = _row(c.execute(sa.select(aliases).where(aliases.c.name == n)).first())
        if r is None:
            raise RftError(f"no alias '{name}'")
        return r

    def list_aliases(self) -> list[dict]:
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(sa.select(aliases).order_by(aliases.c.name))]

    # ------------------------------------------------------------------------------------- batches
    def record_batch(self, state: dict) -> None:
        """Upsert a batch's state (called on every state write of `rft.batch`)."""
        st = _jsonable(state)
        row = dict(status=st.get("status") or "unknown", created_at=st.get("created_at"), updated_at=_now(),
                   model=st.get("model"), input_file=st.get("input_file"), output_file=st.get("output_file"),
                   error_file=st.get("error_file"), request_counts=st.get("request_counts"), usage=st.get("usage"),
                   cost=st.get("cost"), state=st)
        with self.engine.begin() as c:
            n = c.execute(batches.update().where(batches.c.id == st["id"]).values(**row)).rowcount
            if n == 0:
                c.execute(batches.insert().values(id=st["id"], **row, **owner_fields()))

    def batches(self) -> list[dict]:
        """The batches the acting user may see (their team's, or all), newest first."""
        q = sa.select(batches).order_by(batches.c.created_at.desc())
        if self._team_cond(batches) is not None:
            q = q.where(self._team_cond(batches))
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]

    def batch_row(self, batch_id: str) -> dict | None:
        """The registry's row of one batch (exact id), or None."""
        with self.engine.connect() as c:
            return _row(c.execute(sa.select(batches).where(batches.c.id == str(batch_id))).first())

    # --------------------------------------------------------------------------------------- files
    def record_file(self, file_id: str, *, created_at: float, bytes: int, filename: str, purpose: str, sha256: str,
                    path: str, actor: str | None = None) -> dict:
        """Record an uploaded file (`rft.files.FileStore.create` calls this before moving it into place)."""
        with self.engine.begin() as c:
            c.execute(files.insert().values(id=file_id, created_at=created_at, bytes=bytes, filename=filename,
                                            purpose=purpose, sha256=sha256, path=str(path), **owner_fields()))
            self._audit(c, actor or default_actor(), "file.upload", file_id, None,
                        {"filename": filename, "purpose": purpose, "bytes": bytes, "sha256": sha256})
        return self.get_file(file_id)

    def get_file(self, file_id: str) -> dict | None:
        """The file's row, or None (also for another team's file). Ids are compared exactly (never by prefix:
        a file id is a capability)."""
        with self.engine.connect() as c:
            r = _row(c.execute(sa.select(files).where(files.c.id == str(file_id))).first())
        return r if visible(r) else None

    def list_files(self, *, purpose: str | None = None, after: str | None = None, limit: int = 10_000,
                   order: str = "desc") -> tuple[list[dict], bool]:
        """(rows, has_more): files by creation time (`order` "desc": newest first, or "asc"), those with
        `purpose` only, starting after the file `after` (a cursor: the last id of the previous page)."""
        if order not in ("asc", "desc"):
            raise RftError(f"order must be 'asc' or 'desc', got {order!r}")
        desc = order == "desc"
        q = sa.select(files)
        if purpose:
            q = q.where(files.c.purpose == purpose)
        if self._team_cond(files) is not None:
            q = q.where(self._team_cond(files))
        with self.engine.connect() as c:
            if after:
                cur = c.execute(sa.select(files.c.created_at, files.c.id).where(files.c.id == after)).first()
                if cur is None:
                    raise RftError(f"no file '{after}' to list after (the cursor must be a file id from a "
                                   "previous page)")
                t, i = cur
                if desc:
                    q = q.where((files.c.created_at < t) | ((files.c.created_at == t) & (files.c.id < i)))
                else:
                    q = q.where((files.c.created_at > t) | ((files.c.created_at == t) & (files.c.id > i)))
            keys = (files.c.created_at.desc(), files.c.id.desc()) if desc else (files.c.created_at, files.c.id)
            rows = [_row(r) for r in c.execute(q.order_by(*keys).limit(limit + 1))]
        return rows[:limit], len(rows) > limit

    def delete_file(self, file_id: str, *, actor: str | None = None) -> dict | None:
        """Remove the file's row (the caller removes its bytes); the removed row, or None if there was none."""
        with self.engine.begin() as c:
            row = _row(c.execute(sa.select(files).where(files.c.id == str(file_id))).first())
            if row is None or not visible(row):
                return None
            c.execute(files.delete().where(files.c.id == row["id"]))
            self._audit(c, actor or default_actor(), "file.delete", row["id"],
                        {"filename": row["filename"], "purpose": row["purpose"], "sha256": row["sha256"]}, None)
        return row

    # -------------------------------------------------------------------------------------- audit
    def _audit(self, c, actor, action, subject, before, after, verdict_id=None, detail=None) -> None:
        c.execute(audit.insert().values(at=_now(), actor=actor, action=action, subject=subject, before=_jsonable(before),
                                        after=_jsonable(after), verdict_id=verdict_id, detail=_jsonable(detail)))

    def audit(self, actor, action, subject, before=None, after=None, verdict_id=None, detail=None) -> None:
        with self.engine.begin() as c:
            self._audit(c, actor, action, subject, before, after, verdict_id, detail)

    def audit_log(self, subject: str | None = None) -> list[dict]:
        """The audit rows (of `subject`), oldest first; a team member sees only the actions of their team's users."""
        q = sa.select(audit).order_by(audit.c.seq)
        if subject:
            q = q.where(audit.c.subject == subject)
        team = visible_team()
        if team is not None:
            from rft.registry.db import users

            q = q.where(audit.c.actor.in_(sa.select(users.c.name).where(users.c.team == team)))
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(q)]


def _check_alias_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise RftError(f"alias name '{name}' is not valid: use letters, digits, '.', '_' or '-' (at most 64)")


def _jsonable(o):
    if o is None:
        return None
    return json.loads(json.dumps(o, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
