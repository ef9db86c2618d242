"""`rft serve`: an OpenAI-compatible HTTP server for any rft model reference.

`create_app(model_ref)` builds the FastAPI app (testable in-process): the local app (`rft.serve.local`) or, for an
http(s) URL, the remote proxy (`rft.serve.remote`); `serve(model_ref, host, port)` runs it with uvicorn
(`rft.serve.app`). The request/response logic lives in `rft.openai_chat` and is shared with batch inference; the
engine is owned by one worker thread that micro-batches requests and follows alias changes
(`rft.serve.worker`). Run it with `rft serve --model alias:prod` and point any OpenAI client at
`http://127.0.0.1:8000/v1`. What every request passes first (Host allowlist, cross-origin refusal, body
limit, token, rate limit) is `rft.serve.guard`.
"""

from rft.serve.app import create_app, is_loopback, serve
from rft.serve.guard import ServeLimits

__all__ = ["ServeLimits", "create_app", "is_loopback", "serve"]
