"""The migration story end to end: client code written for OpenAI's hosted fine-tuning, unchanged apart from
`base_url` and `api_key`, against `rft serve` started through the installed `rft` entry point on 127.0.0.1.

One test walks the README's "Migrating from OpenAI" path with the official `openai` SDK and the tiny random model:
upload training and validation files, create a reinforcement job with a grader, poll it to `succeeded`, list its
events and checkpoints, chat with its `fine_tuned_model`, run a grader, run a batch from an uploaded file and
download its output. Then a second, longer job is caught mid-run and the machine "restarts": the server and the
job's own process are both killed (SIGKILL, as a power cut or an OOM-killed container would), a new server starts
on the same registry, and the job resumes from its last training state and finishes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from rft.registry import Registry
from tests.clitools import RFT_EXE

TOKEN = "e2e-migration-token-0123456789abcdef"
TERMINAL = ("succeeded", "failed", "cancelled")
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
SMALL = {"sampling": {"n": 2, "max_new_tokens": 4}, "eval": {"max_items": 4}, "train": {"dtype": "float32"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`rft serve` in its own process group on 127.0.0.1, with a token; its log goes to a file."""

    def __init__(self, model_dir: Path, log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, RFT_API_TOKEN=TOKEN)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([RFT_EXE, "serve", "--model", str(model_dir), "--port", str(self.port)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 180  # bounds the wait for start-up; not a timing assertion
        while True:
            assert self.proc.poll() is None, f"rft serve exited with {self.proc.returncode}: {log_path.read_text()}"
            try:
                if httpx.get(f"{self.base}/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"rft serve did not start: {log_path.read_text()}"
            time.sleep(0.2)
        self.client = openai.OpenAI(base_url=f"{self.base}/v1", api_key=TOKEN, max_retries=0, timeout=120)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()


def rows(ops: list[tuple[int, str, int]]) -> bytes:
    out = []
    for a, op, b in ops:
        ans = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append({"messages": [{"role": "user", "content": f"What is {a} {op} {b}? Answer with just the number."}],
                    "answer": str(ans)})
    return "".join(json.dumps(r) + "\n" for r in out).encode()


def poll(client, job_id: str, until, limit_s: float = 300.0):
    """Retrieve the job until `until(job)` holds (a deadline bounds the loop; it is not a timing check)."""
    deadline = time.monotonic() + limit_s
    while True:
        j = client.fine_tuning.jobs.retrieve(job_id)
        if until(j) or time.monotonic() > deadline:
            return j
        time.sleep(0.25)


def create_job(client, model_dir, train_id, val_id, *, steps: int, suffix: str, rft_extra: dict | None = None):
    extra = json.loads(json.dumps(SMALL))
    extra["train"]["max_steps"] = steps
    for k, v in (rft_extra or {}).items():
        extra.setdefault(k, {}).update(v)
    return client.fine_tuning.jobs.create(
        model=str(model_dir), training_file=train_id, validation_file=val_id, suffix=suffix, seed=0,
        method={"type": "reinforcement",
                "reinforcement": {"grader": GRADER, "hyperparameters": {"batch_size": 2, "eval_interval": 2}}},
        extra_body={"rft": extra})


def test_openai_client_code_runs_unchanged_against_rft_serve(tiny_model_dir, tmp_path):
    logs = tmp_path / "serve.log"
    srv = Server(tiny_model_dir, logs)
    try:
        client = srv.client
        # -- files ------------------------------------------------------------------------------------
        train = client.files.create(file=("train.jsonl", rows([(a, "+", b) for a in range(4) for b in range(4)])),
                                    purpose="fine-tune")
        val = client.files.create(file=("val.jsonl", rows([(a, "*", b) for a in range(2) for b in range(3)])),
                                  purpose="fine-tune")
        assert train.object == "file" and train.id.startswith("file-") and train.bytes > 0
        assert {f.id for f in client.files.list().data} >= {train.id, val.id}

        # -- a reinforcement job, polled to succeeded -----------------------------------------------------
        job = create_job(client, tiny_model_dir, train.id, val.id, steps=2, suffix="e2e")
        assert job.status in ("validating_files", "queued", "running")
        done = poll(client, job.id, lambda j: j.status in TERMINAL)
        assert done.status == "succeeded", (done, logs.read_text()[-3000:])
        assert done.fine_tuned_model and done.trained_tokens and done.finished_at
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        assert events[0].message == "The job has successfully completed"
        assert any(e.type == "metrics" for e in events)
        ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert ckpts and all(c.fine_tuning_job_id == job.id for c in ckpts)
        assert ckpts[0].metrics.step == 2

        # -- chat with the fine-tuned model by the name the job reported ---------------------------------
        chat = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=5, temperature=0,
                                              messages=[{"role": "user", "content": "What is 2 + 2?"}])
        assert chat.object == "chat.completion" and chat.model == done.fine_tuned_model
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1

        # -- a grader run, as OpenAI's graders API --------------------------------------------------------
        g = client.fine_tuning.alpha.graders.run(grader=GRADER, model_sample="4", item={"answer": "4"})
        assert g.reward == 1.0
        g0 = client.fine_tuning.alpha.graders.run(grader=GRADER, model_sample="5", item={"answer": "4"})
        assert g0.reward == 0.0

        # -- a batch from an uploaded file, its output downloaded -----------------------------------------
        reqs = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": done.fine_tuned_model, "max_tokens": 4,
                          "messages": [{"role": "user", "content": f"What is {i} + 1?"}]}} for i in range(3)]
        bf = client.files.create(file=("batch.jsonl", "".join(json.dumps(r) + "\n" for r in reqs).encode()),
                                 purpose="batch")
        b = client.batches.create(input_file_id=bf.id, endpoint="/v1/chat/completions", completion_window="24h")
        deadline = time.monotonic() + 300
        while b.status not in ("completed", "failed", "cancelled", "expired") and time.monotonic() < deadline:
            time.sleep(0.25)
            b = client.batches.retrieve(b.id)
        assert b.status == "completed" and b.request_counts.completed == 3, b
        out = [json.loads(x) for x in client.files.content(b.output_file_id).content.decode().splitlines()]
        assert sorted(r["custom_id"] for r in out) == ["q0", "q1", "q2"]
        assert all(r["response"]["status_code"] == 200 for r in out)

        # -- a second job; the machine "restarts" in the middle of it -------------------------------------
        job2 = create_job(client, tiny_model_dir, train.id, val.id, steps=8, suffix="restart",
                          rft_extra={"checkpoint": {"state_interval": 1}})

        def mid_run(j) -> bool:
            if j.status in TERMINAL:
                return True
            evs = client.fine_tuning.jobs.list_events(j.id, limit=100).data
            return any(e.message.startswith("Training state saved at step") for e in evs)

        j2 = poll(client, job2.id, mid_run)
        assert j2.status == "running", (j2, logs.read_text()[-3000:])
        pid = Registry().get_job(job2.id)["pid"]  # the child process training the job
        assert pid and pid != srv.proc.pid, pid
        srv.kill()
        os.kill(int(pid), signal.SIGKILL)  # the job's own process dies with the "machine"
        time.sleep(0.5)

        srv = Server(tiny_model_dir, logs)  # same RFT_HOME, same registry
        client = srv.client
        done2 = poll(client, job2.id, lambda j: j.status in TERMINAL)
        assert done2.status == "succeeded", (done2, logs.read_text()[-3000:])
        msgs = [e.message for e in client.fine_tuning.jobs.list_events(job2.id, limit=100).data]
        assert any("server restarted" in m.lower() for m in msgs), msgs[:20]
        assert any(m.lower().startswith("resum") for m in msgs), msgs[:20]
        ck2 = client.fine_tuning.jobs.checkpoints.list(job2.id).data
        assert max(c.step_number for c in ck2) == 8
        # the first job and its model are still there for the new server
        assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
    finally:
        srv.stop()
