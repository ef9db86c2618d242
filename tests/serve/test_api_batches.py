"""OpenAI's Batch API on `rft serve`: the official `openai` SDK against a live uvicorn server on 127.0.0.1 (a
scripted engine behind the tiny model's reference). The batch runs with `rft batch run`'s runner on a background
thread; its output and error files come back through the Files API."""

from __future__ import annotations

import json
import threading
import time

import pytest

from rft.serve import create_app

openai = pytest.importorskip("openai")

TOKEN = "batches-test-token-0123456789"


def line(cid: str, text: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": text}], "max_tokens": 20}}


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def wait_for(client, batch_id: str, statuses: tuple[str, ...], limit_s: float = 120.0):
    """Poll until the batch reaches one of `statuses` (a deadline bounds the loop; it is not a timing check)."""
    deadline = time.monotonic() + limit_s
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses or time.monotonic() > deadline:
            return b
        time.sleep(0.05)


@pytest.fixture
def engine(scripted):
    return scripted()


@pytest.fixture
def server(tiny_model_dir, engine, live_server):
    app = create_app(str(tiny_model_dir), token=TOKEN, loader=lambda resolved: engine)
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        yield base, client
        client.close()


def test_batch_runs_to_completed_and_the_output_downloads(server):
    _, client = server
    rows = [line(f"req-{i}", f"q{i}") for i in range(7)]
    f = client.files.create(file=("requests.jsonl", jsonl(rows)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={"run": "t1"})
    assert b.object == "batch" and b.input_file_id == f.id and b.id.startswith("batch_")
    assert b.status in ("validating", "in_progress", "finalizing", "completed") and b.metadata == {"run": "t1"}
    done = wait_for(client, b.id, ("completed", "failed", "cancelled", "expired"))
    assert done.status == "completed", done
    assert done.request_counts.total == 7 and done.request_counts.completed == 7 and done.request_counts.failed == 0
    assert done.output_file_id and done.error_file_id is None and done.completed_at is not None
    out = client.files.content(done.output_file_id).content.decode()
    recs = [json.loads(x) for x in out.splitlines()]
    assert sorted(r["custom_id"] for r in recs) == sorted(r["custom_id"] for r in rows)  # each exactly once
    by_id = {r["custom_id"]: r for r in recs}
    assert by_id["req-3"]["response"]["status_code"] == 200
    assert by_id["req-3"]["response"]["body"]["choices"][0]["message"]["content"] == "fake:q3"
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"

    listed = client.batches.list()
    assert [x.id for x in listed.data] == [b.id] and not listed.has_more


def test_failed_requests_give_completed_with_an_error_file(server):
    _, client = server
    rows = [line("ok-1", "a"), line("bad-1", "boom"), line("ok-2", "b")]
    f = client.files.create(file=("requests.jsonl", jsonl(rows)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_for(client, b.id, ("completed", "failed", "cancelled", "expired"))
    assert done.status == "completed" and done.request_counts.failed == 1 and done.request_counts.completed == 2
    assert done.error_file_id and done.output_file_id
    errs = [json.loads(x) for x in client.files.content(done.error_file_id).content.decode().splitlines()]
    assert [e["custom_id"] for e in errs] == ["bad-1"]
    outs = [json.loads(x) for x in client.files.content(done.output_file_id).content.decode().splitlines()]
    assert sorted(o["custom_id"] for o in outs) == ["ok-1", "ok-2"]


def test_cancel_a_running_batch(server, engine):
    _, client = server
    engine.gate = threading.Event()
    try:
        # more requests than one engine group (batch_size 64): the cancel stops the run before the second group
        rows = [line(f"r{i}", f"q{i}") for i in range(70)]
        f = client.files.create(file=("requests.jsonl", jsonl(rows)), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert engine.entered.wait(60)
        c = client.batches.cancel(b.id)
        assert c.id == b.id and c.status == "cancelling"
    finally:
        engine.gate.set()
    done = wait_for(client, b.id, ("cancelled", "completed", "failed"))
    assert done.status == "cancelled" and done.cancelled_at is not None
    rc = done.request_counts
    assert rc.total == 70 and rc.completed + rc.failed == 70 and rc.failed > 0  # the unrun ones: batch_cancelled
    errs = [json.loads(x) for x in client.files.content(done.error_file_id).content.decode().splitlines()]
    outs = [json.loads(x) for x in client.files.content(done.output_file_id).content.decode().splitlines()]
    assert {e["error"]["code"] for e in errs} == {"batch_cancelled"}
    assert sorted(r["custom_id"] for r in errs + outs) == sorted(r["custom_id"] for r in rows)  # each once
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(b.id)


def test_pagination_unknown_ids_and_bad_requests(server):
    _, client = server
    f = client.files.create(file=("requests.jsonl", jsonl([line("a", "x")])), purpose="batch")
    ids = [client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
           for _ in range(3)]
    for i in ids:
        assert wait_for(client, i, ("completed",)).status == "completed"
    page = client.batches.list(limit=2)
    assert [x.id for x in page.data] == ids[::-1][:2] and page.has_more
    page2 = client.batches.list(limit=2, after=ids[1])
    assert [x.id for x in page2.data] == [ids[0]] and not page2.has_more
    assert [x.id for x in client.batches.list(limit=1)] == ids[::-1]  # the SDK's auto-pagination

    for bad in ("batch_20250101000000_deadbeef", "nope", ids[0][:-2]):
        with pytest.raises(openai.NotFoundError) as err:
            client.batches.retrieve(bad)
        assert err.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_20250101000000_deadbeef")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-0123456789abcdef", endpoint="/v1/chat/completions",
                              completion_window="24h")
    ft = client.files.create(file=("t.jsonl", b'{"q": 1}\n'), purpose="evals")
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=ft.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "purpose" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert err.value.body["param"] == "endpoint"
