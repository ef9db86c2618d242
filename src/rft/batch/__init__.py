"""Batch inference in the OpenAI Batch API format, on a local model or a remote OpenAI-compatible endpoint.

Input: JSONL lines `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`.
Output: `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}` lines in the
output file and failed requests (with the request, every attempt's error and timestamps) in the error file
next to it, `OUT.errors.jsonl`. Lines come in completion order: join them by `custom_id`, never by position.
A finished batch is `completed` (every request succeeded), `completed_with_errors` (some are in the error file),
`failed` (invalid input, or every request failed), `cancelled` or `expired`.

Modules:
- `validate`  every problem of an input file at once, with line and field;
- `config`    the retry policy, price table and executor knobs (pydantic; YAML/JSON file or CLI options);
- `retry`     error classification, backoff with full jitter, Retry-After, deadline, circuit breaker;
- `executors` the local engine (grouped by length, via `rft.openai_chat.run_chat_calls`) and remote (httpx);
- `store`     the batch folder `$RFT_HOME/batches/<id>/`, atomic state, durable appends, torn-line repair;
- `jobs`      the lifecycle: create, run, resume, redrive, cancel, list, show.

How to run: `rft batch run requests.jsonl --model smollm2-135m-instruct --output out.jsonl`, then
`rft batch show <id>`; `rft batch --help` lists the rest.
"""

from rft.batch.config import BatchConfig, PriceTable, RetryPolicy, load_config
from rft.batch.jobs import (cancel_batch, create_batch, idempotency_key, list_batches, redrive_batch, resume_batch,
                            run_batch, show_batch)

__all__ = ["BatchConfig", "PriceTable", "RetryPolicy", "load_config", "cancel_batch", "create_batch",
           "idempotency_key", "list_batches", "redrive_batch", "resume_batch", "run_batch", "show_batch"]
