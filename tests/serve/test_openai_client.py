"""The official `openai` client, unchanged, against a real uvicorn server (thread, free port, tiny model)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

openai = pytest.importorskip("openai")

TOKEN = "test-token-0123456789"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with the embeddings of '\\n' and <unk> zeroed. The random model's greedy answer is
    otherwise all newlines, which the char tokenizer cannot encode back (its pre-tokenizer skips '\\n'), so a
    prediction of it would be no tokens at all."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for t in (tok.convert_tokens_to_ids("\n"), tok.unk_token_id):
            model.model.embed_tokens.weight[t].zero_()
    out = tmp_path_factory.mktemp("tiny_llama_chars")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(model_dir):
    import uvicorn

    from rft.serve import create_app

    app = create_app(str(model_dir), token=TOKEN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held until uvicorn takes the socket over
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):  # wait for start-up (not a timing assertion: the test fails only if it never starts)
        if srv.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield {"base_url": f"http://127.0.0.1:{port}/v1", "model": str(model_dir), "app": app}
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server["base_url"], api_key=TOKEN, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def greedy(server):
    """What the served engine produces for HI, greedy, 8 tokens, called directly."""
    from rft.engine import SamplingParams

    eng = server["app"].state.worker.engine
    out = eng.generate([HI], SamplingParams(temperature=0, max_new_tokens=8))[0][0]
    assert out.text.strip() and len(eng.prediction_ids(out.text)) == len(out.token_ids)  # the fixture's premise
    return out


def test_models_list(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == server["model"] and "smollm2-135m-instruct" in ids  # the default model, then the base models
    assert client.models.retrieve(server["model"]).id == server["model"]


def test_plain_completion(client, server, greedy):
    r = client.chat.completions.create(model=server["model"], messages=HI, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.model == server["model"]
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == greedy.text
    assert r.choices[0].finish_reason == greedy.finish_reason
    assert r.usage.prompt_tokens == greedy.prompt_tokens
    assert r.usage.completion_tokens == len(greedy.token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming(client, server, greedy):
    stream = client.chat.completions.create(model=server["model"], messages=HI, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == greedy.finish_reason
    assert chunks[-1].usage.completion_tokens == len(greedy.token_ids)
    assert chunks[-1].usage.prompt_tokens == greedy.prompt_tokens


def test_predicted_output(client, server, greedy):
    # the prediction is exactly the greedy answer: same output, and every token counted as accepted
    r = client.chat.completions.create(model=server["model"], messages=HI, max_tokens=8, temperature=0,
                                       prediction={"type": "content", "content": greedy.text})
    assert r.choices[0].message.content == greedy.text
    details = r.usage.completion_tokens_details
    assert details.accepted_prediction_tokens == len(greedy.token_ids)
    assert details.rejected_prediction_tokens == 0
    # a prediction that is right for a while and then wrong changes nothing in the output, and the server
    # reports the engine's own counts (whose semantics the engine tests pin down)
    from rft.engine import SamplingParams

    pred = greedy.text[:3] + "zzzzz"
    r = client.chat.completions.create(model=server["model"], messages=HI, max_tokens=8, temperature=0,
                                       prediction={"type": "content", "content": pred})
    assert r.choices[0].message.content == greedy.text
    direct = server["app"].state.worker.engine.generate_predicted(HI, SamplingParams(temperature=0, max_new_tokens=8), pred)
    details = r.usage.completion_tokens_details
    assert (details.accepted_prediction_tokens, details.rejected_prediction_tokens) == \
        (direct.accepted_prediction_tokens, direct.rejected_prediction_tokens)
    assert 0 < details.accepted_prediction_tokens < len(greedy.token_ids)


def test_streamed_predicted_output(client, server, greedy):
    stream = client.chat.completions.create(model=server["model"], messages=HI, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            prediction={"type": "content", "content": greedy.text})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == greedy.text
    assert chunks[-1].usage.completion_tokens_details.accepted_prediction_tokens == len(greedy.token_ids)


def test_errors_map_to_client_exceptions(client, server):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=HI)
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=server["model"], messages=HI, logprobs=True)
    assert ei.value.body["param"] == "logprobs"
    bad = openai.OpenAI(base_url=server["base_url"], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
