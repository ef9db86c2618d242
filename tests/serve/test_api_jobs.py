"""OpenAI's fine-tuning jobs API on `rft serve`: the official `openai` SDK against a live uvicorn server on
127.0.0.1 with the tiny random model. Jobs run in child processes started by the server's scheduler."""

from __future__ import annotations

import time

import pytest

from rft.serve import create_app

openai = pytest.importorskip("openai")

TOKEN = "jobs-test-token-0123456789"
TERMINAL = ("succeeded", "failed", "cancelled")
GRADER = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
          "operation": "like"}
RFT = {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 2, "max_new_tokens": 4},
       "eval": {"max_items": 4}, "train": {"max_steps": 2, "dtype": "float32"}}


def wait_for(client, job_id: str, statuses: tuple[str, ...], limit_s: float = 240.0):
    """Poll until the job reaches one of `statuses` (a deadline bounds the loop; it is not a timing check)."""
    deadline = time.monotonic() + limit_s
    while True:
        j = client.fine_tuning.jobs.retrieve(job_id)
        if j.status in statuses or time.monotonic() > deadline:
            return j
        time.sleep(0.2)


@pytest.fixture
def server(tiny_model_dir, live_server):
    app = create_app(str(tiny_model_dir), token=TOKEN)
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        yield app, client
        client.close()


def create(client, model, **kw):
    return client.fine_tuning.jobs.create(
        model=str(model), training_file="builtin:arithmetic?n=8", validation_file="builtin:arithmetic?n=4",
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {"batch_size": 2}}},
        seed=0, extra_body={"rft": RFT}, **kw)


def test_a_job_runs_in_a_child_process_to_succeeded(server, tiny_model_dir):
    app, client = server
    job = create(client, tiny_model_dir, suffix="t1", metadata={"run": "t1"})
    assert job.object == "fine_tuning.job" and job.id.startswith("ftjob-") and job.status == "queued"
    assert job.metadata == {"run": "t1"} and job.suffix == "t1"
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded", done
    assert done.fine_tuned_model and done.fine_tuned_model.startswith("ckpt:") and done.finished_at is not None
    assert done.model_extra["rft"]["fine_tuned_model_name"] == f"ft:{tiny_model_dir}:t1:{job.id}"

    events = client.fine_tuning.jobs.list_events(job.id, limit=100)
    msgs = [e.message for e in events.data]
    assert events.data[0].object == "fine_tuning.job.event"
    assert "Job queued: it starts when the server's scheduler has a free slot" in msgs
    assert msgs[0] == "The job has successfully completed"  # newest first
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    nxt = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert nxt.data[0].id not in {e.id for e in page.data}

    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert ckpts.data, "no checkpoints"
    c = ckpts.data[0]
    assert c.object == "fine_tuning.job.checkpoint" and c.fine_tuning_job_id == job.id
    assert c.fine_tuned_model_checkpoint == f"ckpt:{c.id}" and c.step_number == 2 and c.metrics.step == 2
    assert done.fine_tuned_model in {x.fine_tuned_model_checkpoint for x in ckpts.data}

    listed = client.fine_tuning.jobs.list()
    assert job.id in [j.id for j in listed.data]


def test_a_bad_body_is_a_400_naming_the_fields(server, tiny_model_dir):
    _, client = server
    with pytest.raises(openai.BadRequestError) as ei:
        client.fine_tuning.jobs.create(
            model=str(tiny_model_dir), training_file="builtin:arithmetic?n=8",
            method={"type": "reinforcement", "reinforcement": {"grader": GRADER}},
            extra_body={"rft": {"train": {"max_stepz": 2}}})
    err = ei.value.body
    assert "max_stepz" in err["message"] and err["param"] and err["type"] == "invalid_request_error"
    assert client.fine_tuning.jobs.list().data == []


def test_cancel_a_queued_job_and_unknown_ids(server, tiny_model_dir):
    app, client = server
    app.state.scheduler.held = True  # nothing starts: the job stays queued
    job = create(client, tiny_model_dir)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    got = client.fine_tuning.jobs.cancel(job.id)
    assert got.status == "cancelled" and got.finished_at is not None
    app.state.scheduler.held = False
    app.state.scheduler.tick()
    assert app.state.scheduler.running_ids() == [] and client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)  # already cancelled

    for bad in ("ftjob-20260101-000000-abcdef", "nope", job.id[:-1]):
        with pytest.raises(openai.NotFoundError) as ei:
            client.fine_tuning.jobs.retrieve(bad)
        assert ei.value.body["param"] == "fine_tuning_job_id"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-20260101-000000-abcdef")


def test_a_child_that_crashes_fails_its_job_and_the_server_lives_on(server, tiny_model_dir):
    app, client = server
    app.state.scheduler.python = "/bin/false"  # the child exits 1 at once, recording nothing
    job = create(client, tiny_model_dir)
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "failed" and done.error.code == "process_exited", done
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id  # the server still answers


def test_a_restarted_server_keeps_queued_jobs_queued(server, tiny_model_dir):
    import os

    from rft.registry import Registry
    from rft.serve.scheduler import read_marker

    app, client = server
    app.state.scheduler.held = True
    job = create(client, tiny_model_dir)
    reg = Registry()
    reg.update_job(job.id, pid=2**22 + 12345)  # owned by a server that is gone
    app.state.scheduler.recover()
    row = reg.get_job(job.id)
    assert row["status"] == "queued" and row["pid"] == os.getpid()
    assert read_marker(row["run_dir"])["pending"] == "train"
    client.fine_tuning.jobs.cancel(job.id)
