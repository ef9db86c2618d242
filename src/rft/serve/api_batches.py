"""OpenAI's Batch API on `rft serve`: create, retrieve, list and cancel batches of chat completions.

Routes (`make_batches_router(service)`, mounted by `rft.serve.local.create_local_app`):
- `POST /v1/batches` `{input_file_id, endpoint: "/v1/chat/completions", completion_window: "24h", metadata?}`:
  the input is a stored file of purpose `batch` (`POST /v1/files`); the batch is created with
  `rft.batch.create_batch` on the model its lines name in `body.model` (as OpenAI's do; one model per batch;
  lines that name none run on the server's default model) and run by `rft.batch.run_batch` (the runner, retry policy and
  exactly-once journal of `rft batch run`) on a background thread, never in the request.
- `GET /v1/batches/{id}`, `GET /v1/batches` (newest first; `after` a batch id, `limit` 1..100, default 20;
  `has_more`), `POST /v1/batches/{id}/cancel`.
The answer is OpenAI's `batch` object. Statuses: validating, in_progress, finalizing, completed, failed,
cancelling, cancelled, expired. rft's `completed_with_errors` is `completed` with `request_counts.failed > 0` and
an `error_file_id`. When the run ends, its output and dead-letter JSONL are stored as files of purpose
`batch_output` (`output_file_id`, `error_file_id`; null when empty), so `client.files.content(id)` downloads
them; until they are stored the batch reads `finalizing` (`cancelling` for a cancelled one), so a client that
sees `completed` always finds the files.
Errors are OpenAI's shape; an unknown or malformed batch id is a 404 (ids are matched exactly, never as a
prefix, and checked before any path is built).

Batches run one at a time on one thread, on the model the batch was pinned to, leased from the server's model
pool (`lease_engine`): a model the server already holds is not loaded twice, its generations run on its
worker thread in turn with chat requests, and it is not evicted while the batch runs. Batches made by the API carry
`input_file_id` in their state; the CLI's batches are not listed here. A server that starts again resumes its
unfinished API batches (`rft.batch.resume_batch`: only requests in neither journal run) and stores the files of
finished ones.
Simplified: `output_expires_after` is refused; only `completion_window: "24h"` and the chat endpoint.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rft.errors import RftError
from rft.files import FileNotFound, FileStore, is_file_id
from rft.openai_chat import ChatRequestError, parse_json_body
from rft.registry import Registry
from rft.serve.guard import error_response, query_limit, read_json_bytes

ENDPOINT = "/v1/chat/completions"
WINDOW = "24h"
OUTPUT_PURPOSE = "batch_output"
CREATE_FIELDS = ("input_file_id", "endpoint", "completion_window", "metadata")
BATCH_ID_RE = re.compile(r"batch_[0-9]{14}_[0-9a-f]{8}")
MAX_LIST, DEFAULT_LIST = 100, 20
RUNNING_STATES = ("validating", "in_progress", "finalizing", "cancelling")
TIMESTAMPS = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
              "expired_at", "cancelling_at", "cancelled_at")


class BatchNotFound(RftError):
    """No API batch has this id: 404."""


def _not_found(batch_id: Any) -> BatchNotFound:
    shown = batch_id if isinstance(batch_id, str) and BATCH_ID_RE.fullmatch(batch_id) else repr(str(batch_id)[:80])
    return BatchNotFound(f"No such Batch object: {shown}")


def _int(t: Any) -> int | None:
    return None if t is None else int(t)


def batch_object(state: dict) -> dict:
    """OpenAI's `batch` object for an rft batch state (the `show_batch` view)."""
    status = state["status"]
    stored = bool(state.get("files_stored"))
    times = {k: _int(state.get(k)) for k in TIMESTAMPS}
    if status == "completed_with_errors":
        status = "completed"
    if status in ("completed", "failed", "expired", "cancelled") and not stored:
        # finished, but the output files are not stored yet: a client must not see `completed` without them
        times.update(completed_at=None, failed_at=None, expired_at=None, cancelled_at=None)
        status = "cancelling" if status == "cancelled" else "finalizing"
    if status == "cancelling" and times["cancelling_at"] is None:
        times["cancelling_at"] = times["created_at"]
    rc = state.get("request_counts") or {}
    errors = state.get("errors")
    if not errors and state.get("stop_reason") and status == "in_progress" and not state.get("running"):
        errors = {"object": "list", "data": [{"code": "stopped", "message": f"the run stopped: {state['stop_reason']}",
                                              "line": None, "param": None}]}
    return {"id": state["id"], "object": "batch", "endpoint": state.get("endpoint") or ENDPOINT, "errors": errors,
            "input_file_id": state.get("input_file_id"), "completion_window": state.get("completion_window") or WINDOW,
            "status": status, "output_file_id": state.get("output_file_id") if stored else None,
            "error_file_id": state.get("error_file_id") if stored else None, **times,
            "request_counts": {"total": int(rc.get("total", 0)), "completed": int(rc.get("completed", 0)),
                               "failed": int(rc.get("failed", 0))},
            "metadata": state.get("metadata") or None, "model": state.get("body_model") or state.get("model"),
            "usage": state.get("usage")}


def check_metadata(metadata: Any) -> dict | None:
    """OpenAI's metadata rules: at most 16 string pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ChatRequestError(f"'metadata' must be an object of strings, got {type(metadata).__name__}", "metadata")
    if len(metadata) > 16:
        raise ChatRequestError(f"'metadata' has {len(metadata)} keys; at most 16 are allowed", "metadata")
    for k, v in metadata.items():
        if len(k) > 64:
            raise ChatRequestError(f"metadata key '{k[:64]}...' is longer than 64 characters", "metadata")
        if not isinstance(v, str) or len(v) > 512:
            raise ChatRequestError(f"metadata['{k[:64]}'] must be a string of at most 512 characters", "metadata")
    return dict(metadata)


def _body_model(path) -> str | None:
    """The first `body.model` string in a batch input file (None when no line names one). Lines that do not parse
    are skipped here: `create_batch` reports every problem with its line number."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                m = json.loads(raw).get("body", {}).get("model")
            except (ValueError, AttributeError, RecursionError):
                continue
            if isinstance(m, str) and m:
                return m
    return None


class BatchService:
    """Creates API batches and runs them one at a time on a background thread.

    `model_ref`: the server's default model (None: none), for input lines that name no `body.model`
    (`create_batch` pins an alias/ckpt to its path). `lease_engine(state)`: a context manager giving the engine
    a batch runs on (the server leases it from its pool; None: the runner loads its own);
    `store()`/`registry()`: the file store and registry (defaults: `$RFT_HOME`). `log(str)`: runner messages.
    """

    def __init__(self, model_ref: str | None, *, lease_engine: Callable[[dict], Any] | None = None,
                 store: Callable[[], FileStore] = FileStore, registry: Callable[[], Registry] = Registry,
                 log: Callable[[str], None] = lambda s: None, recover: bool = True):
        self.model_ref = model_ref
        self.lease_engine = lease_engine
        self.store = store
        self.registry = registry
        self.log = log
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rft-batch")
        self._files_lock = threading.Lock()
        if recover:
            self._pool.submit(self._recover)

    def close(self) -> None:
        """Stop taking batches; a running one is cut short at its next group (it stays resumable)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------ library
    def create(self, input_file_id: Any, *, endpoint: Any = ENDPOINT, completion_window: Any = WINDOW,
               metadata: Any = None) -> dict:
        from rft.batch import create_batch
        from rft.batch.jobs import update_batch_fields
        from rft.serve.api_files import retrieve_file

        if endpoint != ENDPOINT:
            raise ChatRequestError(f"endpoint must be '{ENDPOINT}' (the one endpoint rft batches run), got "
                                   f"{str(endpoint)[:80]!r}", "endpoint")
        if completion_window != WINDOW:
            raise ChatRequestError(f"completion_window must be '{WINDOW}', got {str(completion_window)[:40]!r}",
                                   "completion_window")
        meta = check_metadata(metadata)
        if not isinstance(input_file_id, str) or not input_file_id:
            raise ChatRequestError("'input_file_id' is required: the id of a file uploaded with purpose 'batch'",
                                   "input_file_id")
        try:
            f = retrieve_file(input_file_id, registry=self.registry())
        except FileNotFound as e:
            raise ChatRequestError(e.message, "input_file_id", status_code=404) from None
        if f["purpose"] != "batch":
            raise ChatRequestError(f"file {f['id']} has purpose '{f['purpose']}'; a batch input needs purpose 'batch'",
                                   "input_file_id")
        path = self.store().content_path(f["id"])
        model = _body_model(path) or self.model_ref
        if model is None:
            raise ChatRequestError(f"the requests in {f['id']} name no model (body.model) and this server has no "
                                   "default model (--model)", "input_file_id")
        from rft import models

        try:
            models.resolve(model, prepare=False, verify=False)
        except RftError as e:
            raise ChatRequestError(f"The model '{model[:200]}' named by the batch input does not exist or cannot be "
                                   f"served: {e.message}", "input_file_id", code="model_not_found") from None
        try:
            state = create_batch(path, model=model, completion_window=WINDOW, metadata=meta)
        except RftError as e:
            raise ChatRequestError(e.message.replace(str(path), f["id"]), "input_file_id",
                                   code="invalid_file_format" if e.problems else None) from None
        state = update_batch_fields(state["id"], {"input_file_id": f["id"]})
        self._pool.submit(self._run, state["id"])
        return batch_object(state)

    def _state(self, batch_id: Any) -> dict:
        from rft.batch import show_batch

        if not isinstance(batch_id, str) or not BATCH_ID_RE.fullmatch(batch_id):
            raise _not_found(batch_id)
        try:
            state = show_batch(batch_id)
        except RftError:
            raise _not_found(batch_id) from None
        if state["id"] != batch_id or not state.get("input_file_id"):  # exact ids only; API batches only
            raise _not_found(batch_id)
        return state

    def retrieve(self, batch_id: Any) -> dict:
        return batch_object(self._state(batch_id))

    def list(self, *, after: str | None = None, limit: int = DEFAULT_LIST) -> dict:
        from rft.batch import list_batches

        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise ChatRequestError(f"limit must be between 1 and {MAX_LIST}, got {limit!r}", "limit")
        rows = sorted((s for s in list_batches() if s.get("input_file_id")),
                      key=lambda s: (s.get("created_at") or 0, s["id"]), reverse=True)
        start = 0
        if after is not None:
            ids = [s["id"] for s in rows]
            if after not in ids:
                raise ChatRequestError(f"after must be a batch id from a previous page, got {str(after)[:80]!r}",
                                       "after")
            start = ids.index(after) + 1
        page = [batch_object(s) for s in rows[start:start + limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(rows)}

    def cancel(self, batch_id: Any) -> dict:
        from rft.batch import cancel_batch

        state = self._state(batch_id)
        try:
            cancel_batch(state["id"])
        except RftError as e:
            raise ChatRequestError(f"cannot cancel batch {state['id']}: {e.message}", None) from None
        self._store_outputs(state["id"])  # a batch cancelled before it ran: its files now (a running one: later)
        return self.retrieve(state["id"])

    # --------------------------------------------------------------------------------- the runner
    def _run(self, batch_id: str, resume: bool = False) -> None:
        from rft.batch import resume_batch, run_batch, show_batch

        try:
            with (self.lease_engine(show_batch(batch_id)) if self.lease_engine else nullcontext()) as engine:
                for attempt in range(100):
                    try:
                        (resume_batch if resume else run_batch)(batch_id, engine=engine, log=self.log)
                        break
                    except RftError as e:
                        # a GET probing the lock at the moment the runner takes it: try again
                        if "being run by another process" not in e.message or attempt == 99:
                            raise
                        threading.Event().wait(0.05)
        except Exception as e:  # noqa: BLE001 - the runner thread must survive; the state says where it stopped
            self.log(f"batch {batch_id}: {type(e).__name__}: {e}")
        finally:
            try:
                self._store_outputs(batch_id)
            except Exception as e:  # noqa: BLE001
                self.log(f"batch {batch_id}: storing its output files failed: {type(e).__name__}: {e}")

    def _store_outputs(self, batch_id: str) -> None:
        """Store the output and error JSONL of a finished batch as `batch_output` files, once."""
        from pathlib import Path

        from rft.batch import show_batch
        from rft.batch.jobs import TERMINAL, update_batch_fields

        with self._files_lock:
            state = show_batch(batch_id)
            if state["status"] not in TERMINAL or state.get("files_stored") or state.get("running"):
                return
            store, registry = self.store(), self.registry()
            ids: dict[str, str | None] = {}
            for key, path, suffix in (("output_file_id", state["output_file"], "output"),
                                      ("error_file_id", state["error_file"], "error")):
                p = Path(path)
                if not p.is_file() or p.stat().st_size == 0:
                    ids[key] = None
                    continue

                def record(f, _store=store):
                    registry.record_file(f.id, created_at=f.created_at, bytes=f.bytes, filename=f.filename,
                                         purpose=f.purpose, sha256=f.sha256, path=str(_store.root / f.id))

                with open(p, "rb") as fh:
                    stored = store.create(fh, filename=f"{batch_id}_{suffix}.jsonl", purpose=OUTPUT_PURPOSE,
                                          max_bytes=1 << 62, record=record)
                ids[key] = stored.id
            update_batch_fields(batch_id, {**ids, "files_stored": True})

    def _recover(self) -> None:
        """On start: resume unfinished API batches that no process runs; store the files of finished ones."""
        from rft.batch import list_batches
        from rft.batch.jobs import TERMINAL

        try:
            rows = [s for s in list_batches() if s.get("input_file_id") and not s.get("running")]
        except Exception as e:  # noqa: BLE001
            self.log(f"batches: could not list them to recover: {e}")
            return
        for s in sorted(rows, key=lambda s: s.get("created_at") or 0):
            if s["status"] in TERMINAL:
                if not s.get("files_stored"):
                    self._run(s["id"])  # run_batch returns a finished batch as it is; then its files are stored
            elif s["status"] == "in_progress":
                self._run(s["id"], resume=True)


# ------------------------------------------------------------------------------------------- routes
def make_batches_router(service: BatchService) -> APIRouter:
    router = APIRouter()

    def answer(fn, *args, **kw):
        try:
            return JSONResponse(fn(*args, **kw))
        except BatchNotFound as e:
            return error_response(ChatRequestError(e.message, None, status_code=404))
        except ChatRequestError as e:
            return error_response(e)
        except RftError as e:
            return error_response(ChatRequestError(e.message, None))

    @router.post("/v1/batches")
    async def create(request: Request):
        try:
            body = parse_json_body(await read_json_bytes(request))
            if not isinstance(body, dict):
                raise ChatRequestError("the request body must be a JSON object with input_file_id, endpoint and "
                                       "completion_window", None)
            if "output_expires_after" in body:
                raise ChatRequestError("output_expires_after is not supported: rft keeps files until they are "
                                       "deleted", "output_expires_after")
            extra = [k for k in body if k not in CREATE_FIELDS]
            if extra:
                raise ChatRequestError(f"unknown field '{str(extra[0])[:100]}'; a batch takes "
                                       f"{', '.join(CREATE_FIELDS)}", str(extra[0])[:100])
            for k in ("input_file_id", "endpoint", "completion_window"):
                if k not in body:
                    raise ChatRequestError(f"'{k}' is required", k)
        except ChatRequestError as e:
            return error_response(e)
        return await run_in_threadpool(answer, service.create, body["input_file_id"], endpoint=body["endpoint"],
                                       completion_window=body["completion_window"], metadata=body.get("metadata"))

    @router.get("/v1/batches")
    def list_(request: Request):
        q = request.query_params
        try:
            limit = query_limit(q, default=DEFAULT_LIST, maximum=MAX_LIST)
        except ChatRequestError as e:
            return error_response(e)
        return answer(service.list, after=q.get("after") or None, limit=limit)

    @router.get("/v1/batches/{batch_id}")
    def retrieve(batch_id: str):
        return answer(service.retrieve, batch_id)

    @router.post("/v1/batches/{batch_id}/cancel")
    def cancel(batch_id: str):
        return answer(service.cancel, batch_id)

    return router


__all__ = ["BatchService", "batch_object", "make_batches_router"]
