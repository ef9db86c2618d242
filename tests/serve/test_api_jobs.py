"""OpenAI's fine-tuning jobs API on `rft serve`: the official `openai` SDK against a live uvicorn server on
127.0.0.1 with the tiny random model. Jobs run in child processes started by the server's scheduler."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rft.serve import create_app

openai = pytest.importorskip("openai")

TOKEN = "jobs-test-token-0123456789"
TERMINAL = ("succeeded", "failed", "cancelled")
GRADER = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}", "reference": "e",
          "operation": "like"}
RFT = {"extraction": {"pattern": "-?\\d+"}, "sampling": {"n": 2, "max_new_tokens": 4},
       "eval": {"max_items": 4}, "train": {"max_steps": 2, "dtype": "float32"},
       "learnability": {"enabled": False}}  # the random tiny model passes nothing: train anyway


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
    assert done.fine_tuned_model == f"ft:{tiny_model_dir}:t1:{job.id}" and done.finished_at is not None
    final_ckpt = done.model_extra["rft"]["fine_tuned_model_checkpoint"]
    assert final_ckpt.startswith("ckpt:")

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
    assert final_ckpt in {x.fine_tuned_model_checkpoint for x in ckpts.data}

    listed = client.fine_tuning.jobs.list()
    assert job.id in [j.id for j in listed.data]

    # the fine-tuned model answers under its ft: name, loaded on demand next to the server's default model
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    r = client.chat.completions.create(model=done.fine_tuned_model, messages=[{"role": "user", "content": "2+2"}],
                                       max_tokens=4, temperature=0)
    assert r.model == done.fine_tuned_model and r.choices[0].message.role == "assistant"
    assert app.state.pool.loads == 2  # the default model and the fine-tuned one


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


# A job long enough to be caught mid-run: 8 items x 3 epochs / 2 per step = 12 steps (about a second each on 2
# busy cores), a training state after every step, no evaluation between, no monitor.
LONG_RFT = {**RFT, "train": {"dtype": "float32"}, "checkpoint": {"state_interval": 1, "at_eval": False},
            "monitor": {"enabled": False}}


LONG_STEPS = 12


def create_long(client, model):
    return client.fine_tuning.jobs.create(
        model=str(model), training_file="builtin:arithmetic?n=8", validation_file="builtin:arithmetic?n=4",
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
            "batch_size": 2, "n_epochs": 3, "eval_interval": 100}}},
        seed=0, extra_body={"rft": LONG_RFT})


def wait_for_step(client, job_id: str, step: int, limit_s: float = 240.0):
    """Poll until the running job has reached `step` (a deadline bounds the loop; it is not a timing check)."""
    deadline = time.monotonic() + limit_s
    while True:
        j = client.fine_tuning.jobs.retrieve(job_id)
        if (j.status == "running" and j.model_extra["rft"]["step"] >= step) or j.status in TERMINAL \
                or time.monotonic() > deadline:
            return j
        time.sleep(0.05)


def test_pause_and_resume_a_running_job(server, tiny_model_dir):
    app, client = server
    job = create_long(client, tiny_model_dir)
    j = wait_for_step(client, job.id, 2)
    assert j.status == "running", j
    assert client.fine_tuning.jobs.pause(job.id).id == job.id  # honoured at the next step boundary
    paused = wait_for(client, job.id, ("paused",) + TERMINAL)
    assert paused.status == "paused", paused
    at = paused.model_extra["rft"]["step"]
    assert 2 <= at < paused.model_extra["rft"]["total_steps"] == LONG_STEPS  # caught mid-run
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)  # not running
    # the scheduler refuses a resume until it has reaped the paused child (its next tick)
    deadline = time.monotonic() + 60
    while job.id in app.state.scheduler.running_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.fine_tuning.jobs.resume(job.id).id == job.id
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded", done
    assert done.model_extra["rft"]["step"] == LONG_STEPS and done.fine_tuned_model.endswith(f":{job.id}")
    msgs = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert f"Resuming job (was paused at step {at})" in msgs


def test_a_server_restarted_in_the_middle_of_a_job_finishes_it(tiny_model_dir, live_server):
    """The server and the job's child die together (as with kill -9 of both); a new server on the same registry
    takes the job over and resumes it from its last training state."""
    app = create_app(str(tiny_model_dir), token=TOKEN)
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        job = create_long(client, tiny_model_dir)
        j = wait_for_step(client, job.id, 3)
        assert j.status == "running", j
        proc = app.state.scheduler._procs[job.id]
        client.close()
    os.killpg(proc.pid, signal.SIGKILL)  # the first server is gone; now its job's process dies too
    proc.wait(30)

    app2 = create_app(str(tiny_model_dir), token=TOKEN)
    with live_server(app2) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        # taken over: it reads queued (waiting to resume) or running, never failed, to a client polling for an end
        assert client.fine_tuning.jobs.retrieve(job.id).status in ("queued", "running", "succeeded")
        done = wait_for(client, job.id, TERMINAL)
        assert done.status == "succeeded", done
        assert done.model_extra["rft"]["step"] == LONG_STEPS
        msgs = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert any(m.startswith("The server restarted; the job resumes") for m in msgs)
        resumed = [m for m in msgs if m.startswith("Resuming job (was interrupted at step ")]
        assert resumed and int(resumed[0].split("step ")[1].rstrip(")")) >= 3  # not from step 0
        client.close()
