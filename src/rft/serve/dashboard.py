"""The dashboard of `rft serve`: server-rendered pages at `/` over the same registry and run folders as the CLI.

Pages (GET, no side effects): `/` jobs (status, progress, ETA, baseline vs latest validation score);
`/jobs/{id}` live curves (uPlot, polled from `/jobs/{id}/curves.json`), events, resolved config, checkpoints;
`/jobs/{id}/samples?step=N` the sample browser (filters by reward range and grader error, client-side);
`/checkpoints/{id}` gate verdict with every check and its numbers, approvals, the paired comparison with the
baseline (improved / regressed items side by side) and the actions; `/lineage?ref=ckpt:...|alias:...`;
`/jobs/{id}/review` people's review of the grader (one queued item at a time with pass / fail / score / note,
posted to `POST /jobs/{id}/review`, which stores it with `rft.review.verdicts.submit` as `rft review` does;
the agreement summary and the disagreements); `/batches`, `/batches/{id}` (counts, cost, dead letters); `/models` (base models, fine-tuned models, aliases
with roll back); `/audit`. Actions (POST, each with the CSRF token): approve, promote, roll back, which call
the same registry functions as `rft checkpoints approve` / `rft promote` / `rft rollback`, so `rft audit` shows
them exactly as it shows the CLI's. `/login` and `/logout` manage the session (see `rft.serve.guard.Sessions`). With users in the registry
(`rft users add`), `/login` takes a user's token, the session acts as that user (`rft.serve.guard.Access`
checks each route's role), actions are recorded as that user (the forms' "by" field is ignored), other teams'
jobs and batches are not shown, and a refusal by a role or a promotion policy is a 403 page naming the rule.

Security: autoescaping templates (every value is text); ids from a URL are checked for shape
(`rft.views.job_ref`, `checkpoint_ref`, `alias_ref`, `rft.batch.store.batch_folder`) before the registry or a
path sees them, and files are read only at paths the registry recorded (a step number is an int); static files
are a fixed in-memory table, never a path built from the URL. Pages send a Content-Security-Policy without
inline scripts, `X-Frame-Options: DENY`, `no-store` and `Referrer-Policy: same-origin`. The server token is never put in a page.
Simplified: pages poll (every few seconds) rather than stream; one registry (the default one, as the CLI's);
the lists show the newest 200 jobs, events and batches.
How to run: `rft serve --model ...` and open http://127.0.0.1:8000/; tests: tests/dashboard/.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from rft import views
from rft.config import redact_secrets
from rft.errors import RftError
from rft.models import fine_tuned_name
from rft.registry.access import PermissionDenied, authenticated_actor, visible
from rft.serve.guard import LOGIN_PATH, SESSION_COOKIE, Sessions, session_cookie

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
MAX_FILE_BYTES = 8 * 1024 * 1024  # a samples file or config larger than this is shown truncated
MAX_SAMPLE_ROWS = 2000
POLL_MS = 3000
REVIEW_QUEUE = 50  # items drawn for the review page (rft.review.queue); the page shows one at a time

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # not no-referrer: under it a browser sends `Origin: null` with form posts, which the Guard refuses
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _static_table() -> dict[str, tuple[bytes, str]]:
    """Every file the dashboard serves under /static/, read once: a URL can name only these."""
    root = HERE / "static"
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in _STATIC_TYPES:
            out[p.relative_to(root).as_posix()] = (p.read_bytes(), _STATIC_TYPES[p.suffix])
    return out


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = views.when
    env.filters["duration"] = views.duration
    env.filters["score"] = views.score_text
    env.filters["num"] = lambda x, fmt=".3f": "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) \
        else format(x, fmt)
    env.filters["tojson_compact"] = lambda x: json.dumps(x, default=str, ensure_ascii=False)
    env.filters["pretty"] = lambda x: json.dumps(x, default=str, ensure_ascii=False, indent=2)
    return env


class _Page(Exception):
    """An error page: `status` and the message shown."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _read_capped(path: Path) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    text = data[:MAX_FILE_BYTES].decode("utf-8", "replace")
    return text + ("\n... (truncated)" if len(data) > MAX_FILE_BYTES else "")


def _redacted_yaml(text: str) -> str:
    """A resolved config fit to show: its leading comments, then the YAML with secrets redacted
    (`rft.config.redact_secrets`); a config that does not parse is not shown at all."""
    import yaml

    head = "".join(ln + "\n" for ln in itertools.takewhile(lambda ln: ln.startswith("#"), text.splitlines()))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return head + "# (the config could not be read back; not shown)\n"
    return head + yaml.safe_dump(redact_secrets(data), sort_keys=False, allow_unicode=True)


def _jsonl(path: Path, limit: int) -> list[dict]:
    rows = []
    for line in _read_capped(path).splitlines():
        if len(rows) >= limit:
            break
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a torn last line of a running job
        if isinstance(r, dict):
            rows.append(r)
    return rows


def _sample_steps(run_dir: str | None) -> list[int]:
    if not run_dir:
        return []
    d = Path(run_dir) / "samples"
    steps = []
    if d.is_dir():
        for p in d.glob("step_*.jsonl"):
            m = re.fullmatch(r"step_(\d{1,9})\.jsonl", p.name)
            if m:
                steps.append(int(m.group(1)))
    return sorted(steps)


def _safe_next(value: str | None) -> str:
    """A local path to go to after login: '/' unless it is one of ours (no scheme, no '//', no backslash)."""
    v = value or "/"
    if not v.startswith("/") or v.startswith("//") or "\\" in v or any(ord(c) < 32 for c in v):
        return "/"
    return v


def dashboard_router(registry: Callable | None = None, *, clock: Callable[[], float] = time.time) -> APIRouter:
    """The dashboard's routes. `registry()` opens the registry to read and write (default: `rft.registry.Registry()`,
    the CLI's); `clock()` is the wall clock behind the ETA."""
    if registry is None:
        from rft.registry import Registry as registry  # noqa: N813 - the default factory
    env = _env()
    static = _static_table()
    router = APIRouter(include_in_schema=False)

    def sessions_of(request: Request) -> Sessions:
        s = getattr(request.app.state, "sessions", None)
        if s is None:  # an app without the front door: give it one (no token: pages are open)
            s = request.app.state.sessions = Sessions(None)
        return s

    def render(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        sessions = sessions_of(request)
        sid = sessions.current(request.scope)
        html = env.get_template(name).render(
            csrf=sessions.csrf_token(sid), logged_in=sid != Sessions.ANONYMOUS,
            login_required=sessions.required or authenticated_actor() is not None,
            path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def page(request: Request, name: str, build: Callable[[], dict]) -> HTMLResponse:
        try:
            return render(request, name, **build())
        except _Page as e:
            return render(request, "message.html", status=e.status, title="error", message=e.message)
        except RftError as e:
            return render(request, "message.html", status=404, title="not found", message=str(e))

    async def form_of(request: Request) -> dict[str, str]:
        """An urlencoded form (at most MAX_FORM_BYTES), after the CSRF check: 403 without the right token."""
        media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise _Page(415, "send the form as application/x-www-form-urlencoded")
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise _Page(413, "the form is too large")
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        sessions = sessions_of(request)
        if not sessions.check_csrf(sessions.current(request.scope), fields.get("csrf")):
            raise _Page(403, "missing or invalid CSRF token: reload the page and try again")
        return fields

    async def action(request: Request, do: Callable[[dict], str]) -> Response:
        """A state-changing form: CSRF check, then `do(fields)` (on a thread) -> where to go next (303)."""
        from starlette.concurrency import run_in_threadpool

        try:
            fields = await form_of(request)
            where = await run_in_threadpool(do, fields)
        except _Page as e:
            return render(request, "message.html", status=e.status, title="refused", message=e.message)
        except PermissionDenied as e:  # a role, ownership or promotion-policy rule: the message names it
            return render(request, "message.html", status=403, title="refused", message=str(e))
        except RftError as e:
            return render(request, "message.html", status=400, title="refused", message=str(e))
        return RedirectResponse(where, status_code=303, headers={"Cache-Control": "no-store"})

    def actor(fields: dict) -> str:
        """Who the action is recorded as: the signed-in user; without users, the form's name."""
        return authenticated_actor() or required(fields, "by", "your name")

    def required(fields: dict, name: str, what: str) -> str:
        v = (fields.get(name) or "").strip()
        if not v:
            raise _Page(400, f"{what} is required")
        if len(v) > 500:
            raise _Page(400, f"{what} is longer than 500 characters")
        return v

    # ------------------------------------------------------------------------------------ static, login
    @router.get("/static/{name:path}")
    def static_file(name: str):
        hit = static.get(name)
        if hit is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(hit[0], media_type=hit[1], headers={"X-Content-Type-Options": "nosniff",
                                                             "Cache-Control": "private, max-age=300"})

    @router.get(LOGIN_PATH, response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/"):
        return render(request, "login.html", title="log in", next=_safe_next(next), error=None)

    @router.post(LOGIN_PATH)
    async def login(request: Request):
        sessions = sessions_of(request)
        try:
            fields = await form_of(request)
        except _Page as e:
            return render(request, "message.html", status=e.status, title="refused", message=e.message)
        nxt = _safe_next(fields.get("next"))
        from starlette.concurrency import run_in_threadpool

        reg = registry()
        if await run_in_threadpool(reg.has_users):  # a user's token: the session acts as that user
            p = await run_in_threadpool(reg.authenticate, fields.get("token") or "")
            sid = sessions.login_user(p.name) if p is not None else None
        elif not sessions.required:
            return RedirectResponse(nxt, status_code=303)
        else:
            sid = sessions.login(fields.get("token") or "")
        if sid is None:
            return render(request, "login.html", status=401, title="log in", next=nxt,
                          error="that is not this server's token")
        resp = RedirectResponse(nxt, status_code=303, headers={"Cache-Control": "no-store"})
        resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/", max_age=int(sessions.ttl_s))
        return resp

    @router.post("/logout")
    async def logout(request: Request):
        try:
            await form_of(request)
        except _Page as e:
            return render(request, "message.html", status=e.status, title="refused", message=e.message)
        sessions_of(request).logout(session_cookie(request.scope))
        resp = RedirectResponse(LOGIN_PATH if sessions_of(request).required else "/", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    # ---------------------------------------------------------------------------------------------- jobs
    @router.get("/", response_class=HTMLResponse)
    def jobs_page(request: Request):
        def build():
            reg = registry()
            rows = []
            for j in reg.list_jobs(limit=200):
                rows.append(views.job_overview(j, reg.metrics(j["id"]) if j["status"] == "running" else [],
                                               reg.eval_reports(job_id=j["id"]), now=clock()))
            return {"title": "jobs", "jobs": rows}
        return page(request, "jobs.html", build)

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str):
        def build():
            reg = registry()
            job = reg.get_job(views.job_ref(job_id))
            jid = job["id"]
            ov = views.job_overview(job, reg.metrics(jid), reg.eval_reports(job_id=jid), now=clock())
            _, ckpts = views.checkpoint_rows(reg, jid, include_pruned=True)
            config, config_name = None, None
            run_dir = job.get("run_dir")
            if run_dir and (Path(run_dir) / "resolved_config.yaml").is_file():
                config, config_name = _read_capped(Path(run_dir) / "resolved_config.yaml"), "resolved_config.yaml"
                config = _redacted_yaml(config)
            elif job.get("spec") is not None:
                config, config_name = json.dumps(redact_secrets(job["spec"]), indent=2, default=str), "job spec (registry)"
            events = [views.event_row(e) for e in reg.events(jid, limit=200)]
            return {"title": jid, "job": ov, "checkpoints": ckpts, "config": config, "config_name": config_name,
                    "events": events, "sample_steps": _sample_steps(run_dir), "poll_ms": POLL_MS}
        return page(request, "job.html", build)

    @router.get("/jobs/{job_id}/curves.json")
    def job_curves(request: Request, job_id: str, after: int = 0):
        try:
            reg = registry()
            job = reg.get_job(views.job_ref(job_id))
        except RftError as e:
            return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error", "param": None,
                                           "code": "not_found"}}, status_code=404, headers={"Cache-Control": "no-store"})
        jid = job["id"]
        metric_rows, reports = reg.metrics(jid), reg.eval_reports(job_id=jid)
        ov = views.job_overview(job, metric_rows, reports, now=clock())
        data = views.curves_data(metric_rows, reports)
        data["job"] = {k: ov[k] for k in ("id", "status", "step", "total_steps", "progress", "eta_s")}
        data["events"] = [{"seq": e["seq"], "when": views.when(e["created_at"]), "level": e["level"],
                           "type": e["type"], "message": e["message"]}
                          for e in reg.events(jid, after=max(0, after), limit=200)]
        return JSONResponse(data, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    @router.get("/jobs/{job_id}/samples", response_class=HTMLResponse)
    def samples_page(request: Request, job_id: str, step: int | None = None):
        def build():
            reg = registry()
            job = reg.get_job(views.job_ref(job_id))
            steps = _sample_steps(job.get("run_dir"))
            chosen = step if step is not None else (steps[-1] if steps else None)
            rows: list[dict] = []
            if chosen is not None:
                if chosen not in steps:  # only steps whose file exists: the number never builds another path
                    raise _Page(404, f"job {job['id']} logged no samples at step {chosen}"
                                     f" (steps with samples: {', '.join(map(str, steps)) or 'none'})")
                path = Path(job["run_dir"]) / "samples" / f"step_{chosen:06d}.jsonl"
                rows = views.sample_view(_jsonl(path, MAX_SAMPLE_ROWS))
            return {"title": f"samples of {job['id']}", "job": views.job_row(job), "steps": steps, "step": chosen,
                    "samples": rows, "errors": sorted({r["error"] for r in rows if r["error"]})}
        return page(request, "samples.html", build)

    # ------------------------------------------------------------------------ review (issue 18, rft.review)
    @router.get("/jobs/{job_id}/review", response_class=HTMLResponse)
    def review_page(request: Request, job_id: str, i: int = 0):
        def build():
            from rft.review.verdicts import job_agreement, job_queue

            reg = registry()
            job = reg.get_job(views.job_ref(job_id))
            q = job_queue(reg, job, REVIEW_QUEUE)
            pos = min(max(0, i), len(q["items"]))
            return {"title": f"review of {job['id']}", "job": views.job_row(job), "queue": q, "position": pos,
                    "item": q["items"][pos] if pos < len(q["items"]) else None,
                    "ag": job_agreement(reg, job["id"]), "by": authenticated_actor() or ""}
        return page(request, "review.html", build)

    @router.post("/jobs/{job_id}/review")
    async def review_verdict(request: Request, job_id: str):
        def do(f):
            from rft.review.verdicts import parse_verdict, submit

            reg = registry()
            job = reg.get_job(views.job_ref(job_id))
            kind = f.get("verdict")
            value = (f.get("score") or "").strip() if kind == "score" else kind
            if not value:
                raise _Page(400, "give a score in [0, 1] (or press pass or fail)")
            submit(reg, job, [{"item_key": required(f, "item_key", "the item"), "human_score": parse_verdict(value),
                               "note": (f.get("note") or "").strip() or None}], actor(f))
            pos = int(f["i"]) if (f.get("i") or "").isdigit() else 0
            return f"/jobs/{quote(job['id'])}/review?i={pos}"
        return await action(request, do)

    # --------------------------------------------------------------------------------------- checkpoints
    @router.get("/checkpoints/{ckpt_id}", response_class=HTMLResponse)
    def checkpoint_page(request: Request, ckpt_id: str):
        def build():
            reg = registry()
            c = views.checkpoint_detail(reg, ckpt_id)
            job = views.job_row(reg.get_job(c["job_id"]))
            aliases = [a for a in views.alias_rows(reg) if a["checkpoint_id"] == c["id"]]
            return {"title": c["id"], "c": c, "job": job, "aliases": aliases,
                    "comparison": _comparison(reg, c)}
        return page(request, "checkpoint.html", build)

    @router.post("/checkpoints/{ckpt_id}/approve")
    async def approve(request: Request, ckpt_id: str):
        def do(f):
            reg = registry()
            override = (f.get("override") or "").strip() or None
            a = reg.approve(views.checkpoint_ref(ckpt_id), by=actor(f),
                            note=required(f, "note", "a note"), override=override)
            return f"/checkpoints/{quote(a['checkpoint_id'])}"
        return await action(request, do)

    @router.post("/checkpoints/{ckpt_id}/promote")
    async def promote(request: Request, ckpt_id: str):
        def do(f):
            reg = registry()
            a = reg.promote(views.checkpoint_ref(ckpt_id), views.alias_ref(required(f, "alias", "the alias")),
                            by=actor(f), override=(f.get("override") or "").strip() or None)
            return f"/checkpoints/{quote(a['checkpoint_id'])}"
        return await action(request, do)

    @router.post("/aliases/{alias}/rollback")
    async def rollback(request: Request, alias: str):
        def do(f):
            reg = registry()
            reg.rollback(views.alias_ref(alias), by=actor(f))
            return "/models"
        return await action(request, do)

    @router.get("/lineage", response_class=HTMLResponse)
    def lineage_page(request: Request, ref: str = ""):
        def build():
            from rft.registry.lineage import format_lineage, lineage

            r = ref.strip()
            if r.startswith("alias:"):
                r = "alias:" + views.alias_ref(r)
            elif r.startswith("ckpt:") or r.startswith("ckpt-"):
                r = "ckpt:" + views.checkpoint_ref(r)
            else:
                raise _Page(400, "lineage needs a checkpoint (ckpt:<id>) or an alias (alias:<name>)")
            d = lineage(r, verify=False)  # re-hashing every file is `rft lineage`'s job, not a page load's
            return {"title": f"lineage of {r}", "ref": r, "text": format_lineage(d), "data": d}
        return page(request, "lineage.html", build)

    # ------------------------------------------------------------------------------ batches, models, audit
    @router.get("/batches", response_class=HTMLResponse)
    def batches_page(request: Request):
        def build():
            from rft.batch.jobs import list_batches

            return {"title": "batches", "batches": [b for b in list_batches() if _batch_visible(registry(), b["id"])][:200]}
        return page(request, "batches.html", build)

    @router.get("/batches/{batch_id}", response_class=HTMLResponse)
    def batch_page(request: Request, batch_id: str):
        def build():
            from rft.batch.jobs import show_batch

            b = show_batch(batch_id)  # checks the id's shape before it names a folder
            if not _batch_visible(registry(), b["id"]):
                raise _Page(404, f"no batch '{b['id']}'")
            dead = []
            ef = b.get("error_file")
            if ef and Path(ef).is_file():
                dead = _jsonl(Path(ef), 200)
            return {"title": b["id"], "b": b, "dead": dead}
        return page(request, "batch.html", build)

    @router.get("/models", response_class=HTMLResponse)
    def models_page(request: Request):
        def build():
            reg = registry()
            jobs = reg.list_jobs(limit=200)
            base = sorted({j["model"] for j in jobs if j.get("model")})
            tuned = []
            for j in jobs:
                name = (fine_tuned_name(j["model"], (j.get("spec") or {}).get("suffix"), j["id"])
                        if j["status"] == "succeeded" else None)
                for c in reg.list_checkpoints(j["id"], include_pruned=False):
                    if c["is_final"]:
                        tuned.append({"checkpoint_id": c["id"], "job_id": j["id"], "base": j["model"],
                                      "name": name, "approval": c["approval_status"]})
            return {"title": "models", "base_models": base, "tuned": tuned, "aliases": views.alias_rows(reg)}
        return page(request, "models.html", build)

    @router.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request):
        def build():
            return {"title": "audit log", "rows": list(reversed(views.audit_rows(registry())))[:500]}
        return page(request, "audit.html", build)

    return router


def _batch_visible(reg, batch_id: str) -> bool:
    """Whether the acting user may see a batch: its registry row's team (a batch the registry has no row for
    was run before teams or outside the registry: visible only to users without a team)."""
    row = reg.batch_row(batch_id) if hasattr(reg, "batch_row") else None
    return visible(row if row is not None else {"team": None})


def _comparison(reg, c: dict) -> dict | None:
    """The paired comparison of a checkpoint's validation report with its job's baseline (None when either is
    missing or has no per-item records); {'error': ...} when they cannot be compared."""
    from rft.eval.compare import compare_reports

    mine = [r for r in reg.eval_reports(checkpoint_id=c["id"]) if r["kind"] in ("checkpoint", "final")]
    base = [r for r in reg.eval_reports(job_id=c["job_id"]) if r["kind"] == "baseline"]
    if not mine or not base:
        return None
    a, b = base[-1]["summary"] or {}, mine[-1]["summary"] or {}
    if not a.get("items") or not b.get("items"):
        return None
    try:
        res = compare_reports(a, b)
    except RftError as e:
        return {"error": str(e)}
    return {"n_paired": res.get("n_paired"), "mean_a": res.get("mean_a"), "mean_b": res.get("mean_b"),
            "difference": res.get("mean_difference"), "ci": res.get("difference_ci95"),
            "improved": res.get("improved", [])[:100], "regressed": res.get("regressed", [])[:100],
            "n_improved": len(res.get("improved", [])), "n_regressed": len(res.get("regressed", []))}
