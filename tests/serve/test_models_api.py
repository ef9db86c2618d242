"""Many models behind one server: `/v1/models` lists the base models, fine-tuned `ft:` models and aliases;
chat completions load any of them on demand (the official `openai` SDK on a live loopback server started with
no default model); `rft serve --max-models` is checked like every other option."""

from __future__ import annotations

import httpx
import pytest

from rft.registry import Registry
from rft.serve import create_app
from tests.clitools import assert_user_error, run_rft
from tests.serve.test_ft_names import JOB, record_job

openai = pytest.importorskip("openai")

TOKEN = "models-test-token-0123456789"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def registry_models(tmp_path, tiny_model_dir):
    """A succeeded job (suffix s1) with its final checkpoint promoted to alias:prod, and a running job."""
    reg = Registry()
    cid = record_job(reg, tmp_path, tiny_model_dir)
    reg.add_verdict(cid, {"passed": True, "checks": []})
    reg.approve(cid, by="ann", note="ok")
    reg.promote(cid, "prod", by="ann")
    record_job(reg, tmp_path, tiny_model_dir, "ftjob-20260102-030405-bbbbbb", status="running", final=False)
    return {"ft": f"ft:{tiny_model_dir}:s1:{JOB}", "ckpt": f"ckpt:{cid}",
            "running": f"ft:{tiny_model_dir}:s1:ftjob-20260102-030405-bbbbbb"}


@pytest.fixture
def client(registry_models, live_server):
    app = create_app(None, token=TOKEN, max_models=2)  # no default model: every request names one
    with live_server(app) as base:
        c = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        c.app = app
        yield c
        c.close()


def test_models_lists_base_fine_tuned_and_aliases(client, registry_models):
    listed = {m.id: m for m in client.models.list()}
    ft = registry_models["ft"]
    assert set(listed) == {"smollm2-135m-instruct", ft, "alias:prod"}  # a running job has no model yet
    assert all(m.object == "model" and isinstance(m.created, int) for m in listed.values())
    assert listed["smollm2-135m-instruct"].owned_by == "rft" and listed[ft].owned_by == "user"
    assert listed[ft].created == 1_700_000_000  # the job's finish time
    got = client.models.retrieve(ft)
    assert got.id == ft and got.model_extra["rft"]["checkpoint"] == registry_models["ckpt"]
    assert client.models.retrieve("alias:prod").id == "alias:prod"
    with pytest.raises(openai.NotFoundError) as ei:
        client.models.retrieve("gpt-4o")
    assert ei.value.body["code"] == "model_not_found"
    health = httpx.get(str(client.base_url).replace("/v1/", "/health"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert health.json() == {"status": "ok", "model": None}


def test_chat_with_an_ft_name_and_its_other_names_on_one_engine(client, registry_models):
    ft = registry_models["ft"]
    r = client.chat.completions.create(model=ft, messages=HI, max_tokens=4, temperature=0)
    assert r.model == ft and r.object == "chat.completion" and r.usage.completion_tokens >= 1
    text = r.choices[0].message.content
    for other in ("alias:prod", registry_models["ckpt"]):  # the same checkpoint: the loaded worker answers
        again = client.chat.completions.create(model=other, messages=HI, max_tokens=4, temperature=0)
        assert again.model == other and again.choices[0].message.content == text
    pool = client.app.state.pool
    assert pool.loads == 1
    chunks = list(client.chat.completions.create(model=ft, messages=HI, max_tokens=4, temperature=0, stream=True))
    assert chunks[0].model == ft and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [m["leases"] for m in pool.loaded()] == [0]  # every request and stream gave its lease back


def test_chat_errors_name_the_model(client, registry_models, tiny_model_dir):
    for bad in ("gpt-4o", registry_models["running"], f"ft:smollm2-135m-instruct:s1:{JOB}"):
        with pytest.raises(openai.NotFoundError) as ei:
            client.chat.completions.create(model=bad, messages=HI, max_tokens=2)
        err = ei.value.body
        assert err["code"] == "model_not_found" and err["param"] == "model" and bad in err["message"]
    assert "is running; only a succeeded job" in _err(client, registry_models["running"])
    with pytest.raises(openai.BadRequestError) as ei:  # no model and no default model
        client.post("/chat/completions", body={"messages": HI}, cast_to=object)
    assert ei.value.body["param"] == "model"
    # a local directory is a model too, loaded on demand
    r = client.chat.completions.create(model=str(tiny_model_dir), messages=HI, max_tokens=2)
    assert r.model == str(tiny_model_dir)


def _err(client, model: str) -> str:
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model=model, messages=HI, max_tokens=2)
    return ei.value.body["message"]


@pytest.mark.parametrize("value, needle", [("0", "--max-models must be between 1 and 64"),
                                           ("-3", "--max-models must be between 1 and 64"),
                                           ("65", "--max-models must be between 1 and 64"),
                                           ("two", "Invalid value for '--max-models'")])
def test_bad_max_models_is_a_usage_error(value, needle):
    # checked before any model is loaded or port bound (port 1 would be refused later otherwise)
    assert_user_error(run_rft("serve", "--max-models", value, "--port", "1", timeout=120), needle)


@pytest.mark.parametrize("value, needle", [("0", "--max-jobs must be between 1 and 64"),
                                           ("65", "--max-jobs must be between 1 and 64"),
                                           ("x", "Invalid value for '--max-jobs'")])
def test_bad_max_jobs_is_a_usage_error(value, needle):
    assert_user_error(run_rft("serve", "--max-jobs", value, "--port", "1", timeout=120), needle)


def test_max_jobs_reaches_the_scheduler(tiny_model_dir):
    from rft.serve import create_app

    for kw, want in (({"max_jobs": 3}, 3), ({}, 1)):
        app = create_app(str(tiny_model_dir), **kw)
        try:
            assert app.state.scheduler.max_running == want
        finally:
            app.state.pool.close()
