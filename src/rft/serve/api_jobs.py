"""OpenAI's fine-tuning jobs API on `rft serve`: jobs run by the server's scheduler, in child processes.

Routes (`make_jobs_router(scheduler)`, mounted by `rft.serve.local.create_local_app`):
- `POST /v1/fine_tuning/jobs`: OpenAI's body as it is (model, training_file, validation_file, method, seed,
  suffix, metadata) plus rft's own settings under `rft` (the SDK's `extra_body={"rft": {...}}`), checked by
  `rft.jobcheck.parse_job` (every problem in one 400 naming its fields); `file-...` ids work as paths. The job is
  recorded `queued` (`rft.serve.scheduler.record_queued_job`) and returned as a `fine_tuning.job`. Every
  `method.type` runs: reinforcement, supervised and dpo; the job's `method` echoes the body's.
- `GET /v1/fine_tuning/jobs` (newest first; `after` a job id, `limit` 1..100, default 20; `has_more`),
  `GET .../{id}`, `POST .../{id}/cancel|pause|resume`, `GET .../{id}/events` (`fine_tuning.job.event`, newest
  first, paginated), `GET .../{id}/checkpoints` (`fine_tuning.job.checkpoint` with metrics; its
  `fine_tuned_model_checkpoint` is `ckpt:<id>`, a model reference chat completions accept).
A succeeded job's `fine_tuned_model` is OpenAI's name `ft:<base>[:<suffix>]:<job id>` (`rft.models.fine_tuned_name`),
which chat completions, batches and `rft` commands accept (it resolves to the job's final checkpoint); that
checkpoint's `ckpt:` reference is `rft.fine_tuned_model_checkpoint`.
Statuses are OpenAI's (validating_files, queued, running, succeeded, failed, cancelled) plus rft's paused; an
`interrupted` job (its process died) reads `failed` with error code `interrupted` (resume continues it), or
`queued` once the server's scheduler has taken it over to resume it (after a server restart).
Every job in the registry is listed, whether the CLI or the API started it. Ids are matched exactly (never as a
prefix); an unknown or malformed id is a 404. Errors are OpenAI's shape.
Simplified: a job that succeeded without a final checkpoint (`rft.checkpoint.save_final: false`) has no
`fine_tuned_model`.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rft.config import redact_secrets
from rft.errors import RftError
from rft.models import fine_tuned_name
from rft.openai_chat import ChatRequestError, parse_json_body
from rft.serve.guard import error_response, query_limit, read_json_bytes

JOB_ID_RE = re.compile(r"ftjob-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
MAX_LIST, DEFAULT_LIST = 100, 20
STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused")
MAX_PROBLEMS_SHOWN = 20


class JobNotFound(RftError):
    """No job has this id: 404."""


def _int(t: Any) -> int | None:
    return None if t is None else int(t)


def _row(job_id: Any) -> dict:
    """The registry row of exactly `job_id`, or JobNotFound (checked for shape first; no prefix matches)."""
    from rft.registry import Registry

    shown = job_id if isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id) else repr(str(job_id)[:80])
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise JobNotFound(f"No such fine-tuning job: {shown}")
    try:
        row = Registry().get_job(job_id)
    except RftError:
        raise JobNotFound(f"No such fine-tuning job: {shown}") from None
    if row["id"] != job_id:
        raise JobNotFound(f"No such fine-tuning job: {shown}")
    return row


def _resume_pending(row: dict) -> bool:
    from rft.serve.scheduler import read_marker

    m = read_marker(row.get("run_dir") or "") if row.get("run_dir") else None
    return bool(m and m.get("pending") == "resume")


def _method_echo(method: dict) -> dict:
    """The stored `method` as the body gave it: the sections of other types (stored as null) and unset optional
    fields (a supervised or dpo `grader`, `response_format`) are left out."""
    out = {}
    for k, v in method.items():
        if v is None:
            continue
        out[k] = {kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v
    return out


def job_object(row: dict, *, started: bool = False) -> dict:
    """OpenAI's `fine_tuning.job` for a registry job row; `started`: the scheduler has a process on it now."""
    spec = row.get("spec") or {}
    status, error = row["status"], row.get("error")
    if status == "interrupted":
        # the server's scheduler resumes an interrupted API job it took over: it waits for a slot, as a queued one
        status = "queued" if started or _resume_pending(row) else "failed"
    if status not in ("failed", "cancelled"):
        error = None
    if error is not None:
        error = {"code": str(error.get("code") or "error"), "message": str(error.get("message") or ""),
                 "param": error.get("param")}
    result = row.get("result") or {}
    method = redact_secrets(_method_echo(spec.get("method") or {}))  # secrets in a spec are write-only
    hp = dict(((method.get(method.get("type") or "reinforcement") or {}).get("hyperparameters")) or {})
    suffix = spec.get("suffix")
    ckpt = None
    if row["status"] == "succeeded":
        cid = result.get("final_checkpoint_id")
        fm = result.get("fine_tuned_model")
        ckpt = f"ckpt:{cid}" if cid else (fm if isinstance(fm, str) and fm.startswith("ckpt:") else None)
    return {
        "id": row["id"], "object": "fine_tuning.job", "created_at": int(row["created_at"]), "error": error,
        "fine_tuned_model": fine_tuned_name(row["model"], suffix or None, row["id"]) if ckpt else None,
        "finished_at": _int(row.get("finished_at")) if status in ("succeeded", "failed", "cancelled") else None,
        "hyperparameters": {k: hp.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")},
        "model": row["model"], "organization_id": "org-rft", "result_files": [], "seed": spec.get("seed", 0),
        "status": status,
        "trained_tokens": result.get("trained_tokens") if row["status"] == "succeeded" else None, "training_file": spec.get("training_file"),
        "validation_file": spec.get("validation_file"), "method": method or None, "suffix": suffix,
        "metadata": spec.get("metadata") or None, "estimated_finish": None,
        "integrations": spec.get("integrations") or [],
        "user_provided_suffix": suffix,
        "rft": {"step": row.get("step") or 0, "total_steps": row.get("total_steps"), "run_dir": row.get("run_dir"),
                "registry_status": row["status"],
                "fine_tuned_model_checkpoint": ckpt,
                "final_eval": result.get("final_eval"), "baseline_eval": result.get("baseline_eval"),
                "final_verdict": result.get("final_verdict")},
    }


def event_object(job_id: str, e: dict) -> dict:
    return {"id": f"ftevent-{job_id}-{int(e['seq']):06d}", "object": "fine_tuning.job.event",
            "created_at": int(e["created_at"]), "level": e["level"], "message": e["message"], "type": e["type"],
            "data": e.get("data")}


def checkpoint_object(c: dict, step_metrics: dict) -> dict:
    m = step_metrics.get(c["step"]) or {}
    return {"id": c["id"], "object": "fine_tuning.job.checkpoint", "created_at": int(c["created_at"]),
            "fine_tuned_model_checkpoint": f"ckpt:{c['id']}", "fine_tuning_job_id": c["job_id"],
            "step_number": c["step"],
            "metrics": {"step": float(c["step"]), "train_mean_reward": m.get("reward"),
                        "full_valid_mean_reward": c["val_score"],
                        "full_valid_mean_reward_ci95": [c["val_low"], c["val_high"]]},
            "is_final": bool(c["is_final"])}


def _page(items: list[dict], after: str | None, limit: int, what: str) -> dict:
    start = 0
    if after is not None:
        ids = [x["id"] for x in items]
        if after not in ids:
            raise ChatRequestError(f"after must be {what} id from a previous page, got {str(after)[:80]!r}", "after")
        start = ids.index(after) + 1
    page = items[start:start + limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(items)}


def _problems_message(e: RftError) -> tuple[str, str | None]:
    parts, first = [], None
    for p in e.problems[:MAX_PROBLEMS_SHOWN]:
        first = first or p.field
        parts.append(f"{p.field}: {p.message}" if p.field else p.message)
    more = len(e.problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        parts.append(f"... and {more} more")
    return e.message + (": " + "; ".join(parts) if parts else ""), first


# ------------------------------------------------------------------------------------- the library
class JobsAPI:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def create(self, body: Any) -> dict:
        from rft.jobcheck import parse_job
        from rft.serve.scheduler import record_queued_job

        if not isinstance(body, dict):
            raise ChatRequestError("the request body must be a JSON object (model, training_file, method, ...)", None)
        for k in ("model", "training_file"):
            if k not in body:
                raise ChatRequestError(f"'{k}' is required", k)
        try:
            job = parse_job(dict(body), "request body")
        except RftError as e:
            msg, param = _problems_message(e)
            raise ChatRequestError(msg, param) from None
        row = record_queued_job(job)
        self.scheduler.wake()
        return self._object(row)

    def _object(self, row: dict, running: set | None = None) -> dict:
        running = set(self.scheduler.running_ids()) if running is None else running
        return job_object(row, started=row["id"] in running)

    def list(self, after: str | None, limit: int) -> dict:
        from rft.registry import Registry

        rows = Registry().list_jobs(limit=1_000_000)
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        running = set(self.scheduler.running_ids())
        return _page([self._object(r, running) for r in rows], after, limit, "a job")

    def retrieve(self, job_id: Any) -> dict:
        return self._object(_row(job_id))

    def act(self, job_id: Any, action: str) -> dict:
        row = _row(job_id)
        try:
            from rft.registry.access import authenticated_actor  # the request's user (None without users)

            getattr(self.scheduler, action)(row["id"], actor=authenticated_actor())
        except RftError as e:
            raise ChatRequestError(f"cannot {action} job {row['id']}: {e.message}", None) from None
        return self._object(_row(row["id"]))

    def events(self, job_id: Any, after: str | None, limit: int) -> dict:
        from rft.registry import Registry

        row = _row(job_id)
        evs = [event_object(row["id"], e) for e in Registry().events(row["id"], after=0, limit=10_000_000)]
        return _page(evs[::-1], after, limit, "an event")

    def checkpoints(self, job_id: Any, after: str | None, limit: int) -> dict:
        from rft.registry import Registry

        reg = Registry()
        row = _row(job_id)
        by_step = {int(m.get("step", -1)): m for m in reg.metrics(row["id"])}
        cks = sorted(reg.list_checkpoints(row["id"], include_pruned=False),
                     key=lambda c: (c["step"], c["created_at"]), reverse=True)
        return _page([checkpoint_object(c, by_step) for c in cks], after, limit, "a checkpoint")


# ------------------------------------------------------------------------------------------ routes
def make_jobs_router(scheduler) -> APIRouter:
    router = APIRouter()
    api = JobsAPI(scheduler)

    def answer(fn, *args, **kw):
        try:
            return JSONResponse(fn(*args, **kw))
        except JobNotFound as e:
            return error_response(ChatRequestError(e.message, "fine_tuning_job_id", status_code=404))
        except ChatRequestError as e:
            return error_response(e)
        except RftError as e:
            return error_response(ChatRequestError(e.message, None))

    def paging(request: Request) -> tuple[str | None, int]:
        q = request.query_params
        return q.get("after") or None, query_limit(q, default=DEFAULT_LIST, maximum=MAX_LIST)

    @router.post("/v1/fine_tuning/jobs")
    async def create(request: Request):
        try:
            body = parse_json_body(await read_json_bytes(request))
        except ChatRequestError as e:
            return error_response(e)
        return await run_in_threadpool(answer, api.create, body)

    def paged(request: Request, fn, *args):
        """A paginated list: `after` and `limit` from the query (a 400 when they are bad), then `fn`."""
        try:
            after, limit = paging(request)
        except ChatRequestError as e:
            return error_response(e)
        return answer(fn, *args, after, limit)

    @router.get("/v1/fine_tuning/jobs")
    def list_(request: Request):
        return paged(request, api.list)

    @router.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve(job_id: str):
        return answer(api.retrieve, job_id)

    @router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        return answer(api.act, job_id, "cancel")

    @router.post("/v1/fine_tuning/jobs/{job_id}/pause")
    def pause(job_id: str):
        return answer(api.act, job_id, "pause")

    @router.post("/v1/fine_tuning/jobs/{job_id}/resume")
    def resume(job_id: str):
        return answer(api.act, job_id, "resume")

    @router.get("/v1/fine_tuning/jobs/{job_id}/events")
    def events(job_id: str, request: Request):
        return paged(request, api.events, job_id)

    @router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def checkpoints(job_id: str, request: Request):
        return paged(request, api.checkpoints, job_id)

    return router


__all__ = ["JobsAPI", "checkpoint_object", "event_object", "job_object", "make_jobs_router"]
