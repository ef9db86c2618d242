"""`rft serve`: parse the options and hand over to `rft.serve.serve` (the library does the work)."""

from __future__ import annotations

from typing import List, Optional

import typer


def serve(
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="The default model, loaded at start and never evicted: smollm2-135m-instruct, a model directory, "
             "ckpt:<id>, alias:<name> (re-resolved per request, so a promote or rollback takes effect without a "
             "restart) or ft:<base>[:<suffix>]:<job id>; or a remote OpenAI-compatible endpoint http(s)://host/v1 "
             "with --remote-model. Without it, every request names its model, loaded on demand."),
    max_models: int = typer.Option(2, "--max-models",
                                   help="Models kept in memory at once (1-64); the least recently used idle one is "
                                        "closed to load another."),
    max_jobs: int = typer.Option(1, "--max-jobs",
                                 help="Fine-tuning jobs the server runs at once (1-64), each in its own process; "
                                      "more queue."),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to bind. Anything but loopback requires RFT_API_TOKEN (32+ characters)."),
    port: int = typer.Option(8000, "--port", help="TCP port (1-65535)."),
    remote_model: Optional[str] = typer.Option(None, "--remote-model", help="With an http(s) --model: the remote model name."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                    help="With an http(s) --model: the environment variable holding the remote's key."),
    max_body_mb: float = typer.Option(4.0, "--max-body-mb",
                                      help="Largest request body in MiB; larger ones get 413 before they are read."),
    allowed_host: Optional[List[str]] = typer.Option(
        None, "--allowed-host",
        help="Also accept this Host header (NAME or NAME:PORT; repeatable; '*' accepts any). Loopback binds "
             "accept only localhost, 127.0.0.1 and [::1] otherwise (DNS rebinding protection)."),
    rate_limit: int = typer.Option(0, "--rate-limit",
                                   help="Requests per minute per token (per client address without a token); "
                                        "0: no limit. Over it: 429 with Retry-After."),
):
    """Serve models over OpenAI's API: POST /v1/chat/completions (streaming, predicted outputs) for any model
    a request names (base, ft:, ckpt:, alias:), GET /v1/models, files, graders, batches and fine-tuning jobs.

    If RFT_API_TOKEN is set, every request must send 'Authorization: Bearer <token>' (401 otherwise);
    binding to a non-loopback host needs a token of at least 32 characters. Requests from other web sites'
    pages (cross-origin) and non-JSON bodies are refused. Plain HTTP: put a TLS proxy in front off-machine.
    Requests are micro-batched on one engine thread per model.
    """
    from rft.serve import serve as run_server

    run_server(model, host=host, port=port, log=lambda s: typer.echo(s, err=True), remote_model=remote_model,
               api_key_env=api_key_env, max_body_mb=max_body_mb, allowed_hosts=tuple(allowed_host or ()),
               rate_limit=rate_limit, max_models=max_models, max_jobs=max_jobs)
