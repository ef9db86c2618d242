"""OpenAI's graders API on `rft serve`: `POST /v1/fine_tuning/alpha/graders/run` and `.../graders/validate`.

Routes (`make_graders_router(...)`, mounted by `rft.serve.local.create_local_app`):
- `POST /v1/fine_tuning/alpha/graders/run` with `{grader, model_sample, item?}`: the exact dict
  `rft.graders.run.run_grader` returns for `rft grader run` (OpenAI's run response: reward, sub_rewards,
  model_grader_token_usage_per_model, metadata). An invalid grader is a 400 naming every problem.
- `POST /v1/fine_tuning/alpha/graders/validate` with `{grader}`: `{"grader": ...}` as sent on success, else a 400
  in OpenAI's error shape listing the problems (field: message). The check is `rft grader validate`'s: the grader
  is built (schema, templates, formula, python source, endpoint URLs) and closed again.
Grading runs on a threadpool thread (a python grader's sandbox can take seconds), never on the event loop.

Network policy: every request gets a fresh `GraderContext(allow_private_hosts=allowed_hosts)`; `allowed_hosts`
is empty unless the server was configured with some, so endpoint graders pointed at loopback, link-local or
private addresses are refused (SSRF), exactly as `rft grader run` without `--allow-private-host`.
How to run: `rft serve --model ...`, then `client.fine_tuning.alpha.graders.run(grader={...}, model_sample="4")`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rft.errors import RftError
from rft.openai_chat import ChatRequestError, parse_json_body
from rft.serve.guard import error_response, off_loop, read_json_bytes

MAX_PROBLEMS_SHOWN = 20
RUN_FIELDS = ("grader", "model_sample", "item")
VALIDATE_FIELDS = ("grader",)


def _problems_error(e: RftError, param: str = "grader") -> ChatRequestError:
    """An RftError (an invalid grader, a bad sample or item) as OpenAI's 400, every problem named."""
    parts = []
    for p in e.problems[:MAX_PROBLEMS_SHOWN]:
        parts.append(f"{p.field}: {p.message}" if p.field else p.message)
    more = len(e.problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        parts.append(f"... and {more} more")
    field = next((p.field for p in e.problems if p.field), None)
    return ChatRequestError(e.message + (": " + "; ".join(parts) if parts else ""), field or param,
                            code="invalid_grader" if e.problems else None)


def _body(raw: bytes, fields: tuple[str, ...], required: tuple[str, ...]) -> dict:
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise ChatRequestError(f"the request body must be a JSON object with {', '.join(fields)}", None)
    extra = [k for k in body if k not in fields]
    if extra:
        raise ChatRequestError(f"unknown field '{str(extra[0])[:100]}'; this request takes {', '.join(fields)}",
                               str(extra[0])[:100])
    for k in required:
        if k not in body:
            raise ChatRequestError(f"'{k}' is required", k)
    if not isinstance(body["grader"], dict):
        raise ChatRequestError(f"'grader' must be a JSON object, got {type(body['grader']).__name__}", "grader")
    return body


# ------------------------------------------------------------------------------------------ library
def validate_grader_request(spec: Any, *, allowed_hosts: tuple[str, ...] = ()) -> dict:
    """`rft grader validate` on a spec: {"grader": spec} or RftError listing the problems."""
    from rft import graders

    graders.build(spec, context=graders.GraderContext(allow_private_hosts=tuple(allowed_hosts))).close()
    return {"grader": spec}


def run_grader_request(spec: Any, model_sample: Any, item: Any = None, *,
                       allowed_hosts: tuple[str, ...] = ()) -> dict:
    """`rft grader run` on one sample: the graders/run response, or RftError (invalid grader, sample or item)."""
    from rft import graders
    from rft.graders.run import run_grader

    ctx = graders.GraderContext(allow_private_hosts=tuple(allowed_hosts))
    g = graders.build(spec, context=ctx)
    try:
        return run_grader(spec, model_sample, item, grader=g, context=ctx)
    finally:
        g.close()


# ------------------------------------------------------------------------------------------- routes
def make_graders_router(*, allowed_hosts: tuple[str, ...] = ()) -> APIRouter:
    """The graders routes. `allowed_hosts`: private hosts endpoint graders may reach (default none)."""
    router = APIRouter()
    hosts = tuple(allowed_hosts)

    @router.post("/v1/fine_tuning/alpha/graders/run")
    async def graders_run(request: Request):
        try:
            raw = await read_json_bytes(request)
            body = _body(raw, RUN_FIELDS, ("grader", "model_sample"))
            if not isinstance(body["model_sample"], str):
                raise ChatRequestError("'model_sample' must be a string", "model_sample")
            item = body.get("item")
            if item is not None and not isinstance(item, dict):
                raise ChatRequestError(f"'item' must be a JSON object, got {type(item).__name__}", "item")
            try:
                res = await off_loop(len(raw), lambda: run_grader_request(body["grader"], body["model_sample"], item,
                                                                          allowed_hosts=hosts))
            except RftError as e:
                raise _problems_error(e) from None
        except ChatRequestError as e:
            return error_response(e)
        return JSONResponse(res)

    @router.post("/v1/fine_tuning/alpha/graders/validate")
    async def graders_validate(request: Request):
        try:
            raw = await read_json_bytes(request)
            body = _body(raw, VALIDATE_FIELDS, ("grader",))
            try:
                res = await off_loop(len(raw), lambda: validate_grader_request(body["grader"], allowed_hosts=hosts))
            except RftError as e:
                raise _problems_error(e) from None
        except ChatRequestError as e:
            return error_response(e)
        return JSONResponse(res)

    return router


__all__ = ["make_graders_router", "run_grader_request", "validate_grader_request"]
