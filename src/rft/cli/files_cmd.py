"""`rft files ...`: the uploaded files of OpenAI's Files API, from the command line. Thin: parse, call
`rft.serve.api_files` (the same functions as `POST /v1/files` and friends), print.

`upload PATH --purpose fine-tune|batch|evals` validates and stores a file and prints its id (a `file-...` id works
wherever a job spec or `--data` takes a path); `list`, `show ID`, `content ID [-o OUT]`, `delete ID`.
An invalid upload lists every problem with its line and exits 2, storing nothing.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from rft.cli.output import out, print_json, table

files_app = typer.Typer(no_args_is_help=True, help=(
    "Uploaded files (OpenAI's Files API): upload, list, show, content, delete. A file-... id works wherever a "
    "job spec or --data takes a path."))


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@files_app.command("upload")
def upload_cmd(
    path: Path = typer.Argument(..., help="The file to upload (JSONL)."),
    purpose: str = typer.Option(..., "--purpose", "-p", help="fine-tune, batch or evals: what the file is checked as."),
    as_json: bool = typer.Option(False, "--json", help="Print the file object as JSON."),
):
    """Validate a file for its purpose and store it; print its id."""
    from rft.files import DEFAULT_MAX_UPLOAD_BYTES
    from rft.serve.api_files import upload_file
    from rft.userinput import check_input_path

    p = check_input_path(path, "file to upload", max_bytes=DEFAULT_MAX_UPLOAD_BYTES)
    with open(p, "rb") as f:
        obj = upload_file(f, filename=p.name, purpose=purpose)
    if as_json:
        print_json(obj)
    else:
        out.print(f"{obj['id']}  {escape(obj['filename'])}  {obj['purpose']}  {obj['bytes']:,} bytes  "
                  f"sha256 {obj['sha256'][:16]}", highlight=False, soft_wrap=True)


@files_app.command("list")
def list_cmd(
    purpose: Optional[str] = typer.Option(None, "--purpose", "-p", help="Only files with this purpose."),
    limit: int = typer.Option(100, "--limit", "-n", help="At most this many (newest first)."),
    after: Optional[str] = typer.Option(None, "--after", help="Start after this file id (the previous page's last)."),
    as_json: bool = typer.Option(False, "--json", help="Print OpenAI's list object as JSON."),
):
    """List uploaded files, newest first."""
    from rft.serve.api_files import list_files

    page = list_files(purpose=purpose, after=after, limit=limit)
    if as_json:
        print_json(page)
        return
    t = table("id", "filename", "purpose", "bytes", "created", "sha256", fold=("filename",), no_wrap=("id",))
    for f in page["data"]:
        t.add_row(f["id"], escape(f["filename"]), f["purpose"], f"{f['bytes']:,}", _when(f["created_at"]),
                  f["sha256"][:16])
    out.print(t)
    if page["has_more"]:
        out.print(f"more: rft files list --after {page['last_id']}", highlight=False)


@files_app.command("show")
def show_cmd(file_id: str = typer.Argument(..., help="A file id (file-...)."),
             as_json: bool = typer.Option(False, "--json", help="Print the file object as JSON.")):
    """Show one file's object."""
    from rft.serve.api_files import retrieve_file

    f = retrieve_file(file_id)
    if as_json:
        print_json(f)
        return
    t = table("", "value", fold=("value",), show_header=False)
    for k in ("id", "filename", "purpose", "bytes", "created_at", "sha256", "status"):
        v = _when(f[k]) if k == "created_at" else (f"{f[k]:,}" if k == "bytes" else str(f[k]))
        t.add_row(k, escape(v))
    out.print(t)


@files_app.command("content")
def content_cmd(file_id: str = typer.Argument(..., help="A file id (file-...)."),
                output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                      help="Write the bytes here (default: stdout).")):
    """Write a file's bytes to stdout or to --output."""
    from rft.serve.api_files import file_content
    from rft.userinput import check_output_file

    path, _ = file_content(file_id)
    if output is not None:
        dest = check_output_file(output, "output file")
        import shutil

        shutil.copyfile(path, dest)
        return
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@files_app.command("delete")
def delete_cmd(file_id: str = typer.Argument(..., help="A file id (file-...)."),
               as_json: bool = typer.Option(False, "--json", help="Print the deletion object as JSON.")):
    """Delete a file (its bytes and its registry row; recorded in the audit log)."""
    from rft.serve.api_files import delete_file

    res = delete_file(file_id)
    if as_json:
        print_json(res)
    else:
        out.print(f"deleted {res['id']}", highlight=False)
