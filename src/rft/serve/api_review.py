"""People's review of a job's grader over HTTP (issue 18): the same library functions as `rft review`.

Routes (`review_router()`, mounted by `rft.serve.app.create_app` on the local app; roles in
`rft.serve.guard.ROUTE_ROLES`: reading is viewer, posting verdicts trainer):
- `GET  /v1/rft/jobs/{job_id}/review/queue?n=20&seed=0`: the next n items to review (`rft.review.queue`: a
  seeded stratified draw; items already reviewed left out), each with prompt, completion, grader score and
  error, reference fields and why it was drawn. `n` is 1..500.
- `POST /v1/rft/jobs/{job_id}/review/verdicts`: body `{"verdicts": [{"item_key": "train:3:5", "verdict": "pass"
  | "fail" | 0.7, "note": "..."}]}` (or one such object on its own); stored all or none, as the acting user
  (the bearer token's user; without users, `RFT_ACTOR` or the server's OS user). Answers the stored rows and the
  new agreement.
- `GET  /v1/rft/jobs/{job_id}/review/agreement[?grader_sha256=...]`: accuracy and Cohen's kappa with 95% CIs,
  overall and per grader version, the disagreements (`rft.review.agreement`).
Ids are matched exactly (never as a prefix); an unknown job is a 404; bad input a 400 naming what is wrong,
in OpenAI's error shape. At most MAX_VERDICTS verdicts per request.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rft.errors import RftError
from rft.openai_chat import ChatRequestError, parse_json_body
from rft.serve.guard import error_response, read_json_bytes

MAX_VERDICTS = 1000
MAX_QUEUE = 500


class _NotFound(RftError):
    """No such job: 404."""


def _job(job_id: str) -> dict:
    from rft.registry import Registry

    reg = Registry()
    try:
        job = reg.get_job(job_id)
    except RftError:
        raise _NotFound(f"No such fine-tuning job: {str(job_id)[:80]!r}") from None
    if job["id"] != job_id:
        raise _NotFound(f"No such fine-tuning job: {str(job_id)[:80]!r}")
    return job


def _int(q, name: str, default: int, lo: int, hi: int) -> int:
    text = q.get(name)
    try:
        v = default if text is None else int(text)
    except ValueError:
        raise ChatRequestError(f"{name} must be an integer between {lo} and {hi}", name) from None
    if not lo <= v <= hi:
        raise ChatRequestError(f"{name} must be between {lo} and {hi}, got {v}", name)
    return v


def _queue(job_id: str, n: int, seed: int) -> dict:
    from rft.registry import Registry
    from rft.review.verdicts import job_queue

    return job_queue(Registry(), _job(job_id), n, seed=seed)


def _agreement(job_id: str, grader_sha256: str | None) -> dict:
    from rft.registry import Registry
    from rft.review.verdicts import job_agreement

    return job_agreement(Registry(), _job(job_id)["id"], grader_sha256=grader_sha256)


def _submit(job_id: str, body) -> dict:
    from rft.registry import Registry, default_actor
    from rft.review.verdicts import job_agreement, submit

    if isinstance(body, dict) and "verdicts" in body:
        extra = sorted(set(body) - {"verdicts"})
        if extra:
            raise ChatRequestError(f"unknown field '{extra[0]}': the body is {{\"verdicts\": [...]}}", extra[0])
        entries = body["verdicts"]
    else:
        entries = [body]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ChatRequestError("verdicts must be a non-empty list of objects {item_key, verdict, note}", "verdicts")
    if len(entries) > MAX_VERDICTS:
        raise ChatRequestError(f"at most {MAX_VERDICTS} verdicts per request, got {len(entries)}", "verdicts")
    for i, e in enumerate(entries):
        extra = sorted(set(e) - {"item_key", "verdict", "human_score", "score", "note"})
        if extra:
            raise ChatRequestError(f"verdicts[{i}]: unknown field '{extra[0]}' (item_key, verdict, note)",
                                   f"verdicts[{i}].{extra[0]}")
        if "verdict" not in e and ("score" in e or "human_score" in e):
            e = dict(e, verdict=e.get("score", e.get("human_score")))
            e.pop("score", None)
            e.pop("human_score", None)
            entries[i] = e
        if e.get("note") is not None and not isinstance(e["note"], str):
            raise ChatRequestError(f"verdicts[{i}].note must be a string", f"verdicts[{i}].note")
    reg = Registry()
    job = _job(job_id)
    rows = submit(reg, job, [{k: v for k, v in e.items() if k in ("item_key", "verdict", "note")} for e in entries],
                  default_actor())
    return {"object": "list", "data": rows, "agreement": job_agreement(reg, job["id"])["overall"]}


def review_router() -> APIRouter:
    router = APIRouter()

    def answer(fn, *args):
        try:
            return JSONResponse(fn(*args))
        except _NotFound as e:
            return error_response(ChatRequestError(e.message, "job_id", status_code=404))
        except ChatRequestError as e:
            return error_response(e)
        except RftError as e:
            return error_response(ChatRequestError(str(e), None))

    @router.get("/v1/rft/jobs/{job_id}/review/queue")
    def queue(job_id: str, request: Request):
        try:
            n = _int(request.query_params, "n", 20, 1, MAX_QUEUE)
            seed = _int(request.query_params, "seed", 0, 0, 2**31 - 1)
        except ChatRequestError as e:
            return error_response(e)
        return answer(_queue, job_id, n, seed)

    @router.post("/v1/rft/jobs/{job_id}/review/verdicts")
    async def verdicts(job_id: str, request: Request):
        try:
            body = parse_json_body(await read_json_bytes(request))
        except ChatRequestError as e:
            return error_response(e)
        return await run_in_threadpool(answer, _submit, job_id, body)

    @router.get("/v1/rft/jobs/{job_id}/review/agreement")
    def agreement(job_id: str, request: Request):
        sha = request.query_params.get("grader_sha256") or None
        return answer(_agreement, job_id, sha)

    return router


__all__ = ["review_router"]
