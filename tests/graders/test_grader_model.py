"""score_model and label_model with a scripted judge; the remote judge against a local HTTP server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rft.graders import GraderContext, HttpClient, Judges, build, make_sample, validate
from rft.graders.judges import JudgeReply, JudgeServerError, parse_remote
from rft.graders.score_model import parse_label, parse_score

SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "gpt-4o-2024-08-06",
    "input": [
        {"role": "system", "content": "You grade answers."},
        {"role": "user", "content": "Question: {{item.question}}\nReference: {{item.ref.text}}\nAnswer: {{sample.output_text}}"},
    ],
}
ITEM = {"question": "Capital of France?", "ref": {"text": "Paris"}}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"result": 0.8}', 0.8),
        ('{"steps": [{"description": "d", "conclusion": "c"}], "result": 0.25}', 0.25),
        ('Here is my grade:\n```json\n{"result": 0.6}\n```', 0.6),
        ('The answer is right. {"result": 1} Done.', 1.0),
        ("0.7", 0.7),
        ("  1  ", 1.0),
        ('{"result": 1.5}', 1.0),  # clamped to the default range [0, 1]
        ('{"result": -2}', 0.0),
    ],
)
def test_score_model_parses_and_clamps(scripted_judge, reply, expected, grader_context):
    scripted_judge(reply)
    r = build(SCORE, context=grader_context).grade(make_sample("Paris"), ITEM)
    assert r.score == pytest.approx(expected) and r.error is None


@pytest.mark.parametrize(
    "reply, kind",
    [
        ("Looks good to me!", "model_grader_parse_error"),
        ('{"score": 0.5}', "model_grader_parse_error"),
        ('{"result": "high"}', "model_grader_parse_error"),
        ('{"result": true}', "model_grader_parse_error"),
        ("", "model_grader_parse_error"),
        ("I'm sorry, but I can't help with grading this content.", "model_grader_refusal_error"),
        (JudgeReply("", refusal="content policy"), "model_grader_refusal_error"),
        (JudgeServerError("connection refused"), "model_grader_server_error"),
        (RuntimeError("CUDA out of memory"), "model_grader_server_error"),
    ],
)
def test_score_model_errors_are_unscored(scripted_judge, reply, kind, grader_context):
    scripted_judge(reply)
    r = build(SCORE, context=grader_context).grade(make_sample("Paris"), ITEM)
    assert r.score is None and r.error == kind and r.details


def test_refusal_heuristic_only_applies_when_nothing_parses(scripted_judge, grader_context):
    scripted_judge('I cannot be sure, but {"result": 0.4}')
    assert build(SCORE, context=grader_context).grade(make_sample("x"), ITEM).score == pytest.approx(0.4)


def test_range_and_prompt(scripted_judge, grader_context):
    judge = scripted_judge('{"result": 7}', '{"result": 42}')
    g = build({**SCORE, "range": [1, 10], "sampling_params": {"temperature": 0.3, "seed": 7, "max_completions_tokens": 64}}, context=grader_context)
    assert g.grade(make_sample("Paris"), ITEM).score == 7.0
    assert g.grade(make_sample("Paris"), ITEM).score == 10.0  # clamped to the range
    messages, params = judge.calls[0]
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("You grade answers.")
    assert '{"result": <number>}' in messages[0]["content"] and "from 1 to 10" in messages[0]["content"]
    assert messages[1]["content"] == "Question: Capital of France?\nReference: Paris\nAnswer: Paris"
    assert (params.temperature, params.seed, params.max_tokens) == (0.3, 7, 64)
    assert g.usage == {"gpt-4o-2024-08-06": {"prompt_tokens": 22, "completion_tokens": 10, "total_tokens": 32}}


def test_developer_role_content_parts_and_missing_variables(scripted_judge, grader_context):
    judge = scripted_judge('{"result": 1}')
    spec = {**SCORE, "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be strict about {{item.question}}"}]},
        {"role": "user", "content": "{{sample.output_text}}"},
    ]}
    assert build(spec, context=grader_context).grade(make_sample("Paris"), ITEM).score == 1.0
    assert judge.calls[0][0][0]["role"] == "system"
    assert judge.calls[0][0][0]["content"].startswith("Be strict about Capital of France?")
    r = build({**SCORE, "input": [{"role": "user", "content": "{{item.nope}}"}]}, context=grader_context).grade(make_sample("x"), ITEM)
    assert r.error == "invalid_variable_error" and len(judge.calls) == 1  # the judge was never asked


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"range": [1, 0]}, "range must be [min, max]"),
        ({"range": [0]}, "range must be [min, max]"),
        ({"input": []}, "non-empty list of messages"),
        ({"input": [{"role": "robot", "content": "x"}]}, "role must be one of"),
        ({"input": [{"role": "user", "content": "{{items.x}}"}]}, "bad template variable"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "text-only"),
        ({"sampling_params": {"temprature": 1}}, "did you mean 'temperature'"),
        ({"sampling_params": {"top_p": 2}}, "must be in (0, 1]"),
        ({"api_key_env": "RFT_TEST_SURELY_UNSET_VAR"}, "is not set"),
        ({"pass_threshold": "x"}, "pass_threshold must be a number"),
    ],
)
def test_score_model_validation(patch, fragment):
    msgs = [p.message for p in validate({**SCORE, **patch})]
    assert any(fragment in m for m in msgs), msgs


def test_doc_sampling_params_validate():
    spec = {**SCORE, "sampling_params": {"temperature": 1, "top_p": 1, "seed": 42, "max_completions_tokens": 32768,
                                         "reasoning_effort": "medium"}, "pass_threshold": 0.5, "range": [0, 1]}
    assert validate(spec) == []


# --- label_model ----------------------------------------------------------------------------------------------

LABEL = {
    "type": "label_model",
    "name": "sentiment",
    "model": "gpt-4o-mini-2024-07-18",
    "input": [{"role": "user", "content": "Classify the sentiment of: {{sample.output_text}}"}],
    "labels": ["positive", "neutral", "negative"],
    "passing_labels": ["positive", "neutral"],
}


@pytest.mark.parametrize(
    "reply, score",
    [
        ('{"result": "positive"}', 1.0),
        ('{"label": "negative"}', 0.0),
        ("neutral", 1.0),
        ("Negative.", 0.0),
        ("The sentiment is clearly positive here.", 1.0),
        ('```json\n{"result": "NEUTRAL"}\n```', 1.0),
    ],
)
def test_label_model(scripted_judge, reply, score, grader_context):
    judge = scripted_judge(reply)
    r = build(LABEL, context=grader_context).grade(make_sample("I love it"), {})
    assert r.score == score and r.error is None
    assert '"positive", "neutral", "negative"' in judge.calls[0][0][0]["content"]


@pytest.mark.parametrize("reply", ["It is positive or negative, hard to say.", "mixed", '{"result": "angry"}'])
def test_label_model_parse_errors(scripted_judge, reply, grader_context):
    scripted_judge(reply)
    r = build(LABEL, context=grader_context).grade(make_sample("x"), {})
    assert r.score is None and r.error == "model_grader_parse_error"


def test_label_model_validation():
    msgs = [p.message for p in validate({**LABEL, "passing_labels": ["postive"]})]
    assert any("not one of labels" in m and "did you mean 'positive'" in m for m in msgs)
    assert any("distinct" in p.message for p in validate({**LABEL, "labels": ["a", "A"], "passing_labels": ["a"]}))
    assert any("non-empty list" in p.message for p in validate({**LABEL, "labels": []}))


def test_parsers_directly():
    assert parse_score("1e-1") == pytest.approx(0.1)
    assert parse_score("nan") is None and parse_score('{"result": NaN}') is None
    assert parse_label("pos-itive", ["positive"]) is None
    assert parse_remote("http://127.0.0.1:8000/v1/my-judge") == ("http://127.0.0.1:8000/v1", "my-judge")
    assert parse_remote("smollm2-135m-instruct") is None


def test_local_judges_are_cached_per_model():
    judges = Judges()
    a, b = judges.get("some-local-ref-for-test", None, None), judges.get("some-local-ref-for-test", None, None)
    assert a is b and a.ref == "some-local-ref-for-test"
    assert Judges().get("some-local-ref-for-test", None, None) is not a  # a cache per context, not per process


def test_missing_local_model_is_a_server_error():
    r = build({**SCORE, "model": "/nonexistent/judge-model-dir"}).grade(make_sample("x"), ITEM)
    assert r.error == "model_grader_server_error" and "/nonexistent/judge-model-dir" in r.details
    assert "not found" in r.details or "does not exist" in r.details


# --- remote OpenAI-compatible judge ------------------------------------------------------------------------------

@pytest.fixture
def chat_server():
    state = {"requests": [], "script": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((self.path, dict(self.headers), body))
            status, payload, *extra = state["script"].pop(0) if state["script"] else (200, {"choices": [{"message": {"content": '{"result": 0.9}'}}],
                                                                                              "usage": {"prompt_tokens": 30, "completion_tokens": 4}})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra[0] if extra else {}).items():  # e.g. Retry-After
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", state
    srv.shutdown()
    srv.server_close()


def test_remote_judge(chat_server, monkeypatch):
    base, state = chat_server
    monkeypatch.setenv("RFT_TEST_JUDGE_KEY", "sk-test-123")
    spec = {**SCORE, "model": f"{base}/v1/judge-7b", "api_key_env": "RFT_TEST_JUDGE_KEY"}
    g = build(spec)
    r = g.grade(make_sample("Paris"), ITEM)
    assert r.score == pytest.approx(0.9)
    path, headers, body = state["requests"][0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-7b"
    assert headers["Authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in json.dumps(g.spec)
    assert g.usage[spec["model"]]["total_tokens"] == 34


def test_remote_refusal_field_and_server_errors(chat_server, fake_time):
    base, state = chat_server
    spec = {**SCORE, "model": f"{base}/v1/judge-7b"}
    ctx = GraderContext(http=HttpClient(timing=fake_time.timing()))  # retry waits are recorded, not slept
    state["script"] = [(200, {"choices": [{"message": {"content": None, "refusal": "I can't"}}]})]
    assert build(spec, context=ctx).grade(make_sample("x"), ITEM).error == "model_grader_refusal_error"
    state["script"] = [(400, {"error": {"message": "bad model"}})]
    r = build(spec, context=ctx).grade(make_sample("x"), ITEM)
    assert r.error == "model_grader_server_error" and "HTTP 400" in r.details
    assert fake_time.sleeps == []  # a 400 is not retried
    state["script"] = [(503, {})] * 5
    before = len(state["requests"])
    r = build(spec, context=ctx).grade(make_sample("x"), ITEM)
    assert r.error == "model_grader_server_error" and "after 3 attempts" in r.details
    assert len(state["requests"]) - before == 3
    assert fake_time.sleeps == [0.5, 1.0]  # full jitter drawn at the top of each window (fake_time.draw = 1.0)
    # nothing listens here: a closed port on the loopback
    r = build({**SCORE, "model": "http://127.0.0.1:9/v1/x"}, context=ctx).grade(make_sample("x"), ITEM)
    assert r.error == "model_grader_server_error" and "cannot reach" in r.details


def test_remote_judge_honours_retry_after(chat_server, fake_time):
    base, state = chat_server
    ctx = GraderContext(http=HttpClient(timing=fake_time.timing()))
    state["script"] = [(429, {}, {"Retry-After": "7"}), (503, {}, {"Retry-After": "3600"})]
    r = build({**SCORE, "model": f"{base}/v1/judge-7b"}, context=ctx).grade(make_sample("x"), ITEM)
    assert r.score == pytest.approx(0.9) and len(state["requests"]) == 3
    assert fake_time.sleeps == [7.0, 30.0]  # honoured, up to the 30 s cap


def test_local_judge_wiring():
    """A local model reference is loaded through the context's judges (`rft.engine.load_engine` by default), one
    engine per reference per context."""
    from rft.types import Completion

    loaded, seen = [], []

    class FakeEngine:
        def generate(self, prompts, params):
            seen.append((prompts, params))
            return [[Completion('{"result": 0.4}', (1, 2, 3), (0.0, 0.0, 0.0), "stop", prompt_tokens=17)] for _ in prompts]

    def load_engine(ref):
        loaded.append(ref)
        return FakeEngine()

    ref = "tiny-local-judge-for-wiring-test"
    ctx = GraderContext(judges=Judges(load_engine=load_engine))
    g = build({**SCORE, "model": ref, "sampling_params": {"temperature": 0.5, "max_completions_tokens": 99}}, context=ctx)
    assert [g.grade(make_sample("Paris"), ITEM).score for _ in range(3)] == [0.4] * 3
    label = build({**LABEL, "model": ref}, context=ctx)  # a second grader on the same context and model
    label.grade(make_sample("Paris"), {})
    assert loaded == [ref]  # one engine per model reference per context
    prompts, params = seen[0]
    assert len(prompts) == 1 and prompts[0][-1]["content"].endswith("Answer: Paris")
    assert (params.n, params.temperature, params.max_new_tokens) == (1, 0.5, 99)
    assert g.usage[ref] == {"prompt_tokens": 51, "completion_tokens": 9, "total_tokens": 60}


def test_the_default_judge_loader_is_the_engine_loader(monkeypatch):
    """Judges load engines through `rft.engine.load_engine`, in fp32 (what judges always generated in)."""
    import torch

    import rft.engine

    calls = []
    monkeypatch.setattr(rft.engine, "load_engine", lambda ref, **kw: calls.append((ref, kw)) or "engine", raising=False)
    from rft.graders.judges import load_judge_engine

    assert load_judge_engine("some-ref") == "engine"
    assert calls == [("some-ref", {"dtype": torch.float32, "compute_dtype": torch.float32})]
