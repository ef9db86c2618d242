"""OpenAI's graders API on `rft serve` (`/v1/fine_tuning/alpha/graders/run` and `/validate`): the official
`openai` SDK against a live uvicorn server on 127.0.0.1; the answers are what `rft grader run/validate` give."""

from __future__ import annotations

import httpx
import pytest

from rft.graders.run import run_grader
from rft.serve import create_app

openai = pytest.importorskip("openai")

TOKEN = "graders-test-token-0123456789"
STRING_CHECK = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"}


@pytest.fixture
def server(tiny_model_dir, scripted, live_server):
    app = create_app(str(tiny_model_dir), token=TOKEN, loader=lambda resolved: scripted())
    with live_server(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        yield base, client
        client.close()


def test_run_matches_the_cli_code_path(server):
    base, client = server
    res = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="4", item={"answer": "4"})
    assert res.reward == 1.0 and res.metadata.name == "exact" and res.metadata.type == "string_check"
    assert res.metadata.errors.other_error is False
    miss = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="5", item={"answer": "4"})
    assert miss.reward == 0.0
    want = run_grader(STRING_CHECK, "4", {"answer": "4"})
    got = httpx.post(f"{base}/v1/fine_tuning/alpha/graders/run", headers={"Authorization": f"Bearer {TOKEN}"},
                     json={"grader": STRING_CHECK, "model_sample": "4", "item": {"answer": "4"}}).json()
    for d in (want, got):
        d["metadata"].pop("execution_time")
        d["metadata"].pop("latency_s")
    assert got == want


def test_validate_ok_and_bad_grader_is_a_400_naming_the_problem(server):
    base, client = server
    ok = client.fine_tuning.alpha.graders.validate(grader=STRING_CHECK)
    assert ok.grader.type == "string_check"
    bad = dict(STRING_CHECK, operation="almost")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.validate(grader=bad)
    assert err.value.status_code == 400 and "operation" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.run(grader={"type": "nope"}, model_sample="4")
    assert "type" in err.value.body["message"]
    r = httpx.post(f"{base}/v1/fine_tuning/alpha/graders/run", headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"grader": STRING_CHECK})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model_sample"


def test_endpoint_grader_to_a_private_address_is_refused(server):
    _, client = server
    grader = {"type": "endpoint", "name": "ep", "url": "http://127.0.0.1:9/grade"}
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.validate(grader=grader)
    assert err.value.status_code == 400


def test_python_grader_runs_off_the_loop(server):
    _, client = server
    grader = {"type": "python", "name": "py",
              "source": "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"}
    res = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="4", item={"answer": "4"})
    assert res.reward == 1.0
