"""OpenAI's Files API on `rft serve`: upload, list, retrieve, content, delete; and the library calls behind them.

Routes (`make_files_router(...)`, mounted by `rft.serve.local.create_local_app`):
- `POST /v1/files`: multipart form with `file` and `purpose` (`fine-tune`, `batch` or `evals`); the file is
  validated for its purpose before it is stored and answered with OpenAI's `file` object (plus `sha256`). An
  invalid file is a 400 whose message lists its problems by line; nothing is stored.
- `GET /v1/files`: `{"object": "list", "data", "first_id", "last_id", "has_more"}`, newest first (`order=asc`
  for oldest first), `purpose` filter, cursor pagination with `after` (a file id) and `limit` (1..10,000).
- `GET /v1/files/{id}`, `GET /v1/files/{id}/content` (the bytes as `application/octet-stream`, with
  `Content-Disposition: attachment` and `X-Content-Type-Options: nosniff`, so a browser never renders an upload
  as a page), `DELETE /v1/files/{id}` (`{"id", "object": "file", "deleted": true}`).
Errors are OpenAI's shape; an unknown or malformed id is a 404 (ids are checked by `rft.files` before any path is
built from them). The body limit of `POST /v1/files` is the front door's (`rft.serve.guard`); the store enforces
`max_upload_bytes` again while copying.

Purpose validation, a registered function per purpose (`PURPOSE_CHECKS`): `fine-tune` is
`rft.data.validate_fine_tune_file` (RFT, supervised or preference rows), `batch` is `rft.batch.validate`'s check of
an OpenAI batch input (the bodies checked as the local chat endpoint would), `evals` is JSONL of objects.
The library half (`upload_file`, `list_files`, `retrieve_file`, `file_content`, `delete_file`) is what `rft files`
calls too; the registry row and the stored folder are written together (`rft.files.FileStore.create`).
Simplified: `expires_after` is refused (files are kept until deleted: `expires_at` is always null).
How to run: `rft serve --model ...`, then `client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from rft.errors import Problem, Registry as NameRegistry, RftError
from rft.files import DEFAULT_MAX_UPLOAD_BYTES, FileNotFound, FileStore, StoredFile, is_file_id
from rft.openai_chat import ChatRequestError
from rft.registry import Registry
from rft.serve.guard import ServeLimits, error_response, query_limit
from rft.userinput import decode_utf8, parse_json

MAX_LIST = 10_000  # OpenAI's largest page (and its default)
MAX_PROBLEMS_SHOWN = 20
FORM_FIELDS = ("file", "purpose")

# purpose -> check(content_path, filename): raises RftError listing the problems (each with its line)
PURPOSE_CHECKS = NameRegistry("file purpose")


def _raise_problems(filename: str, purpose: str, problems: list[Problem]) -> None:
    if problems:
        raise RftError(f"{filename}: {len(problems)} problem(s) for purpose '{purpose}'", problems=problems)


@PURPOSE_CHECKS.register("fine-tune")
def _check_fine_tune(path: Path, filename: str) -> None:
    from rft.data import validate_fine_tune_file

    _raise_problems(filename, "fine-tune", validate_fine_tune_file(path, name=filename).problems)


@PURPOSE_CHECKS.register("batch")
def _check_batch(path: Path, filename: str) -> None:
    from rft.batch.validate import validate_file

    try:
        validate_file(path, local=True)
    except RftError as e:
        # batch.validate names the staged path; the client knows its file by the name it sent
        problems = [Problem(p.message, file=filename, line=p.line, field=p.field) for p in e.problems]
        message = e.message.replace(str(path), filename)
        raise RftError(message, problems=problems, hint=e.hint) from None


@PURPOSE_CHECKS.register("evals")
def _check_evals(path: Path, filename: str) -> None:
    problems: list[Problem] = []
    rows = 0
    try:
        text = decode_utf8(path.read_bytes(), filename, "evals file")
    except RftError as e:
        raise RftError(e.message) from None
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        rows += 1
        try:
            parse_json(line, filename, "line", line=i, expect=dict)
        except RftError as e:
            problems.append(Problem(e.message.removeprefix(f"{filename}:{i}:").strip(), file=filename, line=i))
    if rows == 0:
        problems.append(Problem("the file has no rows (an evals file is JSONL: one JSON object per line)",
                                file=filename))
    _raise_problems(filename, "evals", problems)


def _file_object(row: dict) -> dict:
    """OpenAI's `file` object for a registry row (plus rft's sha256)."""
    return StoredFile(id=row["id"], bytes=int(row["bytes"]), created_at=float(row["created_at"]),
                      filename=row["filename"], purpose=row["purpose"], sha256=row["sha256"]).to_openai()


def _not_found(file_id: str) -> FileNotFound:
    shown = file_id if is_file_id(file_id) else repr(str(file_id)[:80])
    return FileNotFound(f"No such File object: {shown}", hint="see `rft files list` (or GET /v1/files)")


# ------------------------------------------------------------------------------------------ library
def upload_file(source: BinaryIO | bytes, *, filename: str, purpose: str, store: FileStore | None = None,
                registry: Registry | None = None, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                actor: str | None = None) -> dict:
    """Validate `source` for `purpose`, store it and record it in the registry; OpenAI's `file` object.
    RftError (nothing stored) for an unknown purpose, a file over `max_bytes`, or a file unfit for its purpose."""
    if not isinstance(purpose, str) or not purpose:
        raise RftError(f"'purpose' is required: one of {', '.join(PURPOSE_CHECKS)}")
    check = PURPOSE_CHECKS.get_or_raise(purpose)
    store = store or FileStore()
    registry = registry or Registry()

    def record(f: StoredFile) -> None:
        registry.record_file(f.id, created_at=f.created_at, bytes=f.bytes, filename=f.filename, purpose=f.purpose,
                             sha256=f.sha256, path=str(store.root / f.id), actor=actor)

    stored = store.create(source, filename=filename, purpose=purpose, max_bytes=max_bytes, validate=check,
                          record=record)
    return stored.to_openai()


def list_files(*, purpose: str | None = None, after: str | None = None, limit: int = MAX_LIST,
               order: str = "desc", registry: Registry | None = None) -> dict:
    """OpenAI's list object: {object: "list", data, first_id, last_id, has_more}."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise RftError(f"limit must be between 1 and {MAX_LIST:,}, got {limit!r}")
    rows, more = (registry or Registry()).list_files(purpose=purpose, after=after, limit=limit, order=order)
    data = [_file_object(r) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


def retrieve_file(file_id: str, *, registry: Registry | None = None) -> dict:
    """OpenAI's `file` object, or FileNotFound."""
    row = (registry or Registry()).get_file(file_id) if is_file_id(file_id) else None
    if row is None:
        raise _not_found(file_id)
    return _file_object(row)


def file_content(file_id: str, *, store: FileStore | None = None, registry: Registry | None = None) -> tuple[Path, dict]:
    """(path of the bytes, file object), or FileNotFound."""
    obj = retrieve_file(file_id, registry=registry)
    return (store or FileStore()).content_path(obj["id"]), obj


def delete_file(file_id: str, *, store: FileStore | None = None, registry: Registry | None = None,
                actor: str | None = None) -> dict:
    """Remove the registry row and the stored folder: {id, object: "file", deleted: true}, or FileNotFound."""
    row = (registry or Registry()).delete_file(file_id, actor=actor) if is_file_id(file_id) else None
    if row is None:
        raise _not_found(file_id)
    (store or FileStore()).delete(row["id"])
    return {"id": row["id"], "object": "file", "deleted": True}


# ------------------------------------------------------------------------------------------- routes
def _http_error(e: RftError, param: str | None = None) -> ChatRequestError:
    """An RftError as OpenAI's error: 404 for an unknown file, else 400 with the problems listed by line."""
    if isinstance(e, FileNotFound):
        return ChatRequestError(e.message, "id", status_code=404)
    parts = []
    for p in e.problems[:MAX_PROBLEMS_SHOWN]:
        where = f"line {p.line}" if p.line is not None else ""
        if p.field:
            where += f"{', ' if where else ''}field '{p.field}'"
        parts.append(f"{where}: {p.message}" if where else p.message)
    more = len(e.problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        parts.append(f"... and {more} more")
    message = e.message + (": " + "; ".join(parts) if parts else "")
    code = "invalid_file_format" if e.problems else None
    return ChatRequestError(message, param, status_code=400, code=code)


def make_files_router(*, limits: ServeLimits | None = None, store: FileStore | None = None,
                      registry: Callable[[], Registry] = Registry) -> APIRouter:
    """The `/v1/files` routes. `limits.max_upload_bytes` (when the front door has it; else OpenAI's 512 MiB) caps
    an upload; `store` is the file store (default `$RFT_HOME/files`); `registry()` opens the registry."""
    max_bytes = getattr(limits, "max_upload_bytes", None) or DEFAULT_MAX_UPLOAD_BYTES
    router = APIRouter()

    def the_store() -> FileStore:
        return store or FileStore()

    @router.post("/v1/files")
    async def create_file(request: Request):
        media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if media != "multipart/form-data":
            shown = repr(media[:60]) if media else "none"
            return error_response(ChatRequestError(
                f"upload the file as 'multipart/form-data' with the fields 'file' and 'purpose' (got {shown})",
                None, status_code=415, code="unsupported_media_type"))
        try:
            form = await request.form(max_files=1, max_fields=len(FORM_FIELDS) + 2)
        except Exception as e:  # noqa: BLE001 - starlette's MultiPartException and the parser's errors
            return error_response(ChatRequestError(f"the multipart body could not be read: {str(e)[:200]}", None))
        try:
            extra = [k for k in form.keys() if k not in FORM_FIELDS]
            if any(k.startswith("expires_after") for k in extra):
                return error_response(ChatRequestError(
                    "expires_after is not supported: rft keeps files until they are deleted", "expires_after"))
            if extra:
                return error_response(ChatRequestError(
                    f"unknown form field '{extra[0][:100]}'; an upload has only {', '.join(FORM_FIELDS)}", extra[0][:100]))
            upload, purpose = form.get("file"), form.get("purpose")
            if upload is None or isinstance(upload, str):
                return error_response(ChatRequestError("'file' is required: the file to upload, as a file part "
                                                       "of the multipart form", "file"))
            if not isinstance(purpose, str) or not purpose:
                return error_response(ChatRequestError(
                    f"'purpose' is required: one of {', '.join(PURPOSE_CHECKS)}", "purpose"))
            if purpose not in PURPOSE_CHECKS:
                return error_response(ChatRequestError(
                    f"'{purpose[:60]}' is not a supported purpose; use one of {', '.join(PURPOSE_CHECKS)}", "purpose"))
            try:
                obj = await run_in_threadpool(upload_file, upload.file, filename=upload.filename or "upload",
                                              purpose=purpose, store=the_store(), registry=registry(),
                                              max_bytes=max_bytes)
            except RftError as e:
                return error_response(_http_error(e, "file"))
        finally:
            await form.close()
        return JSONResponse(obj)

    @router.get("/v1/files")
    def get_files(request: Request):
        q = request.query_params
        try:
            limit = query_limit(q, default=MAX_LIST, maximum=MAX_LIST)
            order = q.get("order") or "desc"
            if order not in ("asc", "desc"):
                raise ChatRequestError(f"order must be 'asc' or 'desc', got {order[:40]!r}", "order")
            after = q.get("after") or None
            if after is not None and not is_file_id(after):
                raise ChatRequestError(f"after must be a file id from a previous page, got {after[:80]!r}", "after")
            try:
                return list_files(purpose=q.get("purpose") or None, after=after, limit=limit, order=order,
                                  registry=registry())
            except RftError as e:
                raise _http_error(e, "after") from None
        except ChatRequestError as e:
            return error_response(e)

    @router.get("/v1/files/{file_id}")
    def get_file(file_id: str):
        try:
            return retrieve_file(file_id, registry=registry())
        except RftError as e:
            return error_response(_http_error(e))

    @router.get("/v1/files/{file_id}/content")
    def get_file_content(file_id: str):
        try:
            path, obj = file_content(file_id, store=the_store(), registry=registry())
        except RftError as e:
            return error_response(_http_error(e))
        return FileResponse(path, media_type="application/octet-stream", filename=obj["filename"],
                            content_disposition_type="attachment",
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    @router.delete("/v1/files/{file_id}")
    def remove_file(file_id: str):
        try:
            return delete_file(file_id, store=the_store(), registry=registry())
        except RftError as e:
            return error_response(_http_error(e))

    return router


__all__ = ["PURPOSE_CHECKS", "delete_file", "file_content", "list_files", "make_files_router", "retrieve_file",
           "upload_file"]
