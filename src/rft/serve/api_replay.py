"""Replay and explain over HTTP (issue 18): the same library functions as `rft replay` and `rft explain`.

Routes (`replay_router()`, mounted by `rft.serve.app.create_app` on the local app; roles in
`rft.serve.guard.ROUTE_ROLES`: replaying is trainer, reading is viewer):
- `POST /v1/rft/jobs/{job_id}/replay`: body `{"grader": {...OpenAI grader...}}`; re-grades the job's stored
  samples and evaluation items (`rft.review.replay.replay_job`), records the replay, answers its summary (the
  per-item records are in the replay folder, `paths.items`). The grader is checked as training checks one: a
  bad one is a 400 naming the field.
- `GET  /v1/rft/jobs/{job_id}/replays`: the job's replays, oldest first (`rft.registry.replays.list_replays`).
- `GET  /v1/rft/checkpoints/{ckpt_id}/explain`: where the checkpoint regressed (`rft.review.explain.explain`).
Ids are matched exactly (never as a prefix); an unknown job or checkpoint is a 404; errors in OpenAI's shape.
Simplified: a replay runs in the request (a thread off the event loop); it generates nothing, so it takes
seconds for a run of thousands of samples with string graders, longer with judge or python graders.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rft.errors import RftError
from rft.openai_chat import ChatRequestError, parse_json_body
from rft.serve.guard import error_response, read_json_bytes


class _NotFound(RftError):
    """No such job or checkpoint: 404."""


def _job_id(job_id: str) -> str:
    from rft.registry import Registry

    try:
        job = Registry().get_job(job_id)
    except RftError:
        raise _NotFound(f"No such fine-tuning job: {str(job_id)[:80]!r}") from None
    if job["id"] != job_id:
        raise _NotFound(f"No such fine-tuning job: {str(job_id)[:80]!r}")
    return job["id"]


def _replay(job_id: str, body) -> dict:
    from rft.review.replay import replay_job

    if not isinstance(body, dict) or set(body) != {"grader"} or not isinstance(body["grader"], dict):
        raise ChatRequestError("the body is {\"grader\": {...an OpenAI grader object...}}", "grader")
    res = replay_job(_job_id(job_id), body["grader"])
    return {k: v for k, v in res.items() if k != "items"}


def _replays(job_id: str) -> dict:
    from rft.registry import Registry
    from rft.registry.replays import list_replays

    return {"object": "list", "data": list_replays(Registry(), job_id=_job_id(job_id))}


def _explain(ckpt_id: str) -> dict:
    from rft.registry import Registry
    from rft.review.explain import explain

    cid = ckpt_id.removeprefix("ckpt:")
    try:
        row = Registry().get_checkpoint(cid)
    except RftError:
        raise _NotFound(f"No such checkpoint: {str(ckpt_id)[:80]!r}") from None
    if row["id"] != cid:
        raise _NotFound(f"No such checkpoint: {str(ckpt_id)[:80]!r}")
    return explain(f"ckpt:{cid}")


def _json_safe(o):
    """NaN and infinities (an empty mean, an undefined interval) as null: JSON has no such numbers."""
    if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
        return None
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    return o


def replay_router() -> APIRouter:
    router = APIRouter()

    def answer(fn, *args):
        try:
            return JSONResponse(_json_safe(fn(*args)))
        except _NotFound as e:
            return error_response(ChatRequestError(e.message, None, status_code=404))
        except ChatRequestError as e:
            return error_response(e)
        except RftError as e:
            return error_response(ChatRequestError(str(e), None))

    @router.post("/v1/rft/jobs/{job_id}/replay")
    async def replay(job_id: str, request: Request):
        try:
            body = parse_json_body(await read_json_bytes(request))
        except ChatRequestError as e:
            return error_response(e)
        return await run_in_threadpool(answer, _replay, job_id, body)

    @router.get("/v1/rft/jobs/{job_id}/replays")
    def replays(job_id: str):
        return answer(_replays, job_id)

    @router.get("/v1/rft/checkpoints/{ckpt_id}/explain")
    def explain_route(ckpt_id: str):
        return answer(_explain, ckpt_id)

    return router


__all__ = ["replay_router"]
