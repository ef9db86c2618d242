"""Inference strategies (rft.eval.inference): majority vote and its tie rule, the grader selector (an upper
bound), best-of-N sample counts and token accounting, the reasoning budget's two phases and its token cap (a
scripted engine, then the tiny random Llama), spec parsing, and `evaluate(..., strategy=...)`."""

from __future__ import annotations

import json

import pytest

from rft.config import ExtractionConfig
from rft.engine import SamplingParams
from rft.errors import RftError
from rft.eval.inference import (ANSWER_INSTRUCTION, THINK_INSTRUCTION, StrategyContext, best_score, majority_vote,
                                parse_strategy, run_strategy)
from rft.types import Completion

NUM = ExtractionConfig(pattern=r"-?\d+", occurrence="last")
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.extracted}}", "reference": "{{item.answer}}",
         "operation": "eq"}


def _c(text: str, finish: str = "stop") -> Completion:
    return Completion(text=text, token_ids=tuple(range(len(text))), logprobs=(0.0,) * len(text), finish_reason=finish)


class Scripted:
    """Sampled calls get `samples[q][:n]`; greedy calls answer `greedy[q]`; a thinking prompt (ends with
    THINK_INSTRUCTION) gets `thought` cut to max_new_tokens characters (one token per character); an answer
    prompt (ends with ANSWER_INSTRUCTION) gets `answer[q]`. Every call's params and prompts are recorded."""

    def __init__(self, samples=None, greedy=None, thought="x" * 500, answer=None):
        self.samples, self.greedy, self.thought, self.answer = samples or {}, greedy or {}, thought, answer or {}
        self.calls: list[tuple[SamplingParams, list]] = []

    def generate(self, prompts, params: SamplingParams):
        self.calls.append((params, prompts))
        out = []
        for p in prompts:
            last = p[-1]["content"]
            if last.endswith(THINK_INSTRUCTION):
                t = self.thought[: params.max_new_tokens]
                out.append([_c(t, "length" if len(self.thought) > params.max_new_tokens else "stop")])
            elif last == ANSWER_INSTRUCTION:
                out.append([_c(self.answer[p[0]["content"]][: params.max_new_tokens])])
            elif params.temperature == 0:
                out.append([_c(self.greedy[last])])
            else:
                out.append([_c(t) for t in self.samples[last][: params.n]])
        return out


def _q(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------------------------------- majority vote
def test_majority_vote_counts_and_returns_the_first_sample_with_the_winner():
    assert majority_vote(["3", "5", "5", "3", "5"]) == (1, "5", {"3": 2, "5": 3})


def test_majority_vote_tie_goes_to_the_answer_voted_first():
    # "7" and "2" have two votes each; "7"'s first vote is sample 1, "2"'s is sample 2: "7" wins, sample 1 returned
    assert majority_vote([None, "7", "2", "2", "7"]) == (1, "7", {"7": 2, "2": 2})
    # the same votes in another order flip the winner: the rule is about order, not about the values
    assert majority_vote(["2", "7", "7", "2"])[:2] == (0, "2")


def test_majority_vote_ignores_unextractable_answers_and_handles_all_none():
    assert majority_vote([None, None, "4"]) == (2, "4", {"4": 1})
    assert majority_vote([None, None, None]) == (0, None, {})
    assert majority_vote([]) == (0, None, {})


def test_majority_selector_votes_on_extracted_answers():
    eng = Scripted(samples={"q": ["it is 12", "no idea", "12", "maybe 13", "13?", "13 for sure"]})
    [o] = run_strategy(eng, [_q("q")], "best_of_n:n=6,selector=majority", StrategyContext(extraction=NUM))
    assert o.answers == ("12", None, "12", "13", "13", "13")
    assert o.selected == 3 and o.completion.text == "maybe 13"
    assert o.selection["votes"] == {"12": 2, "13": 3} and o.selection["winner"] == "13"


def test_majority_selector_without_a_pattern_votes_on_the_stripped_text():
    eng = Scripted(samples={"q": [" a", "b", "a ", ""]})
    [o] = run_strategy(eng, [_q("q")], "best_of_n:n=4,selector=majority")
    assert o.answers == ("a", "b", "a", None) and o.selected == 0


# ------------------------------------------------------------------------------------------- grader selector
def test_best_score_rule():
    assert best_score([0.0, 1.0, 1.0]) == 1
    assert best_score([None, 0.5, None, 0.7]) == 3
    assert best_score([None, None]) == 0
    assert best_score([0.0, None]) == 0


def test_grader_selector_picks_the_passing_sample_and_is_marked_an_upper_bound():
    from rft import graders

    g = graders.build(EXACT)
    eng = Scripted(samples={"q1": ["1", "2", "3", "4"], "q2": ["9", "9", "9", "9"]})
    rows = [{"answer": "3"}, {"answer": "5"}]
    outs = run_strategy(eng, [_q("q1"), _q("q2")], "best_of_n:n=4,selector=grader",
                        StrategyContext(extraction=NUM, grader=g, rows=rows))
    assert [o.selected for o in outs] == [2, 0]
    assert outs[0].answers == (0.0, 0.0, 1.0, 0.0) and outs[0].selection["upper_bound"] is True
    assert parse_strategy("best_of_n:n=4,selector=grader").uses_reference
    assert not parse_strategy("best_of_n:n=4,selector=majority").uses_reference


def test_grader_selector_refuses_to_run_without_rows():
    eng = Scripted(samples={"q": ["1", "2"]})
    with pytest.raises(RftError, match="reference"):
        run_strategy(eng, [_q("q")], "best_of_n:n=2,selector=grader", StrategyContext(extraction=NUM))


# ------------------------------------------------------------------------------------------- best-of-N counts
def test_best_of_n_draws_n_seeded_samples_and_counts_every_token():
    eng = Scripted(samples={"q": ["aa", "bbbb", "aa", "c", "x", "y", "z", "w"]})
    [o] = run_strategy(eng, [_q("q")], "best_of_n:n=4,selector=majority", StrategyContext(seed=7, max_new_tokens=9))
    (params, _), = eng.calls
    assert params.n == 4 and params.seed == 7 and params.temperature == 1.0 and params.max_new_tokens == 9
    assert len(o.candidates) == 4 and o.tokens == 2 + 4 + 2 + 1 and o.phase_tokens == {"samples": 9}
    assert o.completion.text == "aa"


# ------------------------------------------------------------------------------------------- reasoning
def test_reasoning_budget_caps_the_thinking_and_counts_both_phases():
    eng = Scripted(thought="t" * 100, answer={"What is 2+2?": "4"})
    [o] = run_strategy(eng, [_q("What is 2+2?")], "reasoning:budget=16", StrategyContext(max_new_tokens=5))
    (p1, prompts1), (p2, prompts2) = eng.calls
    assert p1.max_new_tokens == 16 and p1.temperature == 0.0
    assert prompts1[0][-1]["content"] == f"What is 2+2?\n\n{THINK_INSTRUCTION}"
    assert prompts2[0] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "t" * 16},
                           {"role": "user", "content": ANSWER_INSTRUCTION}]
    assert p2.max_new_tokens == 5
    assert o.thinking == "t" * 16 and o.completion.text == "4"
    assert o.tokens == 17 and o.phase_tokens == {"think": 16, "answer": 1}


def test_reasoning_budget_is_respected_by_the_tiny_model(tiny_model_dir):
    from rft.engine import load_engine

    eng = load_engine(str(tiny_model_dir))
    outs = run_strategy(eng, [_q("Say red"), _q("Say blue")], "reasoning:budget=7,answer_tokens=3",
                        StrategyContext(max_new_tokens=50))
    for o in outs:
        assert o.phase_tokens["think"] <= 7 and o.phase_tokens["answer"] <= 3
        assert o.tokens == o.phase_tokens["think"] + o.phase_tokens["answer"] == len(o.completion.token_ids) + \
            o.phase_tokens["think"]


# ------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text,label", [("greedy", "greedy"), ("", "greedy"),
                                        ("best_of_n:n=8,selector=majority", "best_of_8/majority"),
                                        ("reasoning:budget=64", "reasoning_64")])
def test_parse_strategy_round_trips(text, label):
    spec = parse_strategy(text)
    assert spec.label == label and parse_strategy(spec.text()) == spec


@pytest.mark.parametrize("text,needle", [("best_of", "did you mean 'best_of_n'"),
                                         ("best_of_n:n=4", "needs a selector"),
                                         ("best_of_n:n=4,selector=vote", "unknown selector"),
                                         ("best_of_n:n=0,selector=majority", "1 <= n"),
                                         ("best_of_n:n=four,selector=majority", "must be a int"),
                                         ("reasoning", "budget"),
                                         ("reasoning:budgte=3", "not an option")])
def test_parse_strategy_errors(text, needle):
    with pytest.raises(RftError, match=needle):
        parse_strategy(text)


# ------------------------------------------------------------------------------------------- evaluate
def test_evaluate_with_a_strategy_grades_the_selected_answer(tmp_path):
    from rft import graders
    from rft.data import load_dataset
    from rft.eval.runner import evaluate

    p = tmp_path / "val.jsonl"
    p.write_text("".join(json.dumps({"messages": _q(q), "answer": a}) + "\n" for q, a in (("q1", "3"), ("q2", "5"))))
    ds = load_dataset(str(p))
    eng = Scripted(samples={"q1": ["3", "4", "3", "1"], "q2": ["5", "6", "6", "5"]})
    rep = evaluate(eng, ds, graders.build(EXACT), model_name="m", extraction=NUM,
                   strategy="best_of_n:n=4,selector=majority")
    # q1: "3" has 2 votes (correct); q2: "5" and "6" tie at 2, "5" voted first (correct)
    assert [it["score"] for it in rep.items] == [1.0, 1.0]
    assert [it["tokens_generated"] for it in rep.items] == [4, 4] and rep.mean_completion_tokens == 4.0
    assert rep.items[1]["strategy"]["selection"]["votes"] == {"5": 2, "6": 2}


# ------------------------------------------------------------------------------------------- requests
def _body(content: str, **rft) -> dict:
    return {"messages": _q(content), "max_tokens": 6, "seed": 3, "rft": rft}


def test_chat_calls_with_a_strategy_answer_with_the_selection_and_all_tokens():
    from rft.openai_chat import parse_chat_body, run_chat_calls

    eng = Scripted(samples={"q": ["4", "5", "5", "x"]}, greedy={"plain": "hello"}, thought="abc",
                   answer={"r": "42"})
    calls = [parse_chat_body(_body("q", strategy="best_of_n:n=4,selector=majority", extract=r"\d+")),
             parse_chat_body({"messages": _q("plain"), "temperature": 0}),
             parse_chat_body(_body("r", strategy="reasoning:budget=8"))]
    bon, plain, rea = run_chat_calls(eng, calls, model_name="m")
    assert [c["message"]["content"] for c in bon["choices"]] == ["5"]
    assert bon["usage"]["completion_tokens"] == 4 and bon["rft"]["selection"]["votes"] == {"4": 1, "5": 2}
    assert bon["rft"]["strategy"] == "best_of_n:n=4,selector=majority"
    sampled = [p for p, _ in eng.calls if p.n == 4]
    assert sampled and sampled[0].seed == 3 and sampled[0].max_new_tokens == 6
    assert plain["choices"][0]["message"]["content"] == "hello" and "rft" not in plain
    assert rea["choices"][0]["message"]["content"] == "42" and rea["rft"]["thinking"] == "abc"
    assert rea["usage"]["completion_tokens"] == 5 and rea["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


@pytest.mark.parametrize("rft,extra,needle", [
    ({"strategy": "best_of_n:n=2,selector=grader"}, {}, "reference answer"),
    ({"strategy": "best_of"}, {}, "did you mean 'best_of_n'"),
    ({"strategy": "reasoning:budget=4"}, {"stream": True}, "'stream'"),
    ({"strategy": "reasoning:budget=4"}, {"n": 2}, "'n'"),
    ({"strategy": "reasoning:budget=4", "extract": "("}, {}, "regular expression"),
    ({"strategy": "reasoning:budget=4", "occurence": "last"}, {}, "rft.occurence"),
])
def test_chat_strategy_mistakes_are_400s_naming_the_parameter(rft, extra, needle):
    from rft.openai_chat import ChatRequestError, parse_chat_body

    with pytest.raises(ChatRequestError) as e:
        parse_chat_body({"messages": _q("q"), "rft": rft, **extra})
    assert e.value.status_code == 400 and e.value.param.startswith("rft") and needle in e.value.message


def test_server_answers_a_strategy_request(tiny_model_dir):
    from fastapi.testclient import TestClient

    from rft.serve import create_app

    with TestClient(create_app(str(tiny_model_dir))) as c:
        r = c.post("/v1/chat/completions", json={"messages": _q("Say red"), "max_tokens": 3,
                                                 "rft": {"strategy": "best_of_n:n=3,selector=majority"}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["choices"]) == 1 and len(body["rft"]["candidates"]) == 3
        assert body["usage"]["completion_tokens"] == body["rft"]["tokens"] <= 9
        r = c.post("/v1/chat/completions", json={"messages": _q("x"), "rft": {"strategy": "best_of_n:n=3,selector=grader"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "rft.strategy"


def test_batch_lines_may_carry_a_strategy(tmp_path):
    from rft.batch import BatchConfig, create_batch, run_batch

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                                       "body": _body(c, strategy="best_of_n:n=4,selector=majority")}) + "\n"
                           for c in ("a", "b")))
    model_dir = tmp_path / "fake_model"  # create_batch checks the reference; the engine is injected
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (model_dir / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    st = create_batch(inp, model=str(model_dir), output=tmp_path / "out.jsonl", config=BatchConfig())
    eng = Scripted(samples={"a": ["1", "2", "2", "1"], "b": ["", "7", "", ""]})
    final = run_batch(st["id"], engine=eng)
    out = {r["custom_id"]: r["response"]["body"] for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert final["status"] == "completed"
    assert out["a"]["choices"][0]["message"]["content"] == "1"  # 2-2 tie: "1" voted first
    assert out["b"]["choices"][0]["message"]["content"] == "7"  # empty samples do not vote
    assert out["a"]["usage"]["completion_tokens"] == 4


def test_rft_eval_strategy_option(tmp_path, tiny_model_dir):
    from clitools import assert_user_error, run_rft

    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"messages": _q(f"Say {w}"), "answer": w}) + "\n" for w in ("red", "blue")))
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps(EXACT))
    common = [str(tiny_model_dir), "--data", str(data), "--grader", str(grader), "--max-new-tokens", "3"]
    r = run_rft("eval", *common, "--strategy", "best_of_n:n=2,selector=grader", "-o", str(tmp_path / "ev"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["strategy"] == "best_of_n:n=2,selector=grader" and rep["upper_bound"] is True
    items = json.loads((tmp_path / "ev" / "report.json").read_text())["items"]
    assert all(len(it["strategy"]["candidates"]) == 2 and it["tokens_generated"] <= 6 for it in items)
    assert "UPPER BOUND" in (tmp_path / "ev" / "report.md").read_text()
    r = run_rft("eval", *common, "--strategy", "reasoning:budget=2")
    assert r.returncode == 0 and "strategy reasoning:budget=2" in " ".join(r.stdout.split()), r.stdout
    assert_user_error(run_rft("eval", *common, "--strategy", "best_of_n:n=2"), "needs a selector")


def _fake_model_dir(tmp_path):
    model_dir = tmp_path / "fake_model"  # create_batch checks the reference; the engine is injected
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (model_dir / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    return model_dir


def test_batch_config_strategy_applies_to_lines_without_their_own(tmp_path):
    from rft.batch import BatchConfig, create_batch, run_batch
    from rft.batch.config import build_config

    inp = tmp_path / "in.jsonl"
    lines = [{"custom_id": "a", "body": {"messages": _q("a"), "max_tokens": 6}},
             {"custom_id": "b", "body": _body("b", strategy="best_of_n:n=2,selector=majority")}]
    inp.write_text("".join(json.dumps({"method": "POST", "url": "/v1/chat/completions", **x}) + "\n" for x in lines))
    cfg = build_config({"strategy": "best_of_n:n=4,selector=majority"})
    st = create_batch(inp, model=str(_fake_model_dir(tmp_path)), output=tmp_path / "out.jsonl", config=cfg)
    eng = Scripted(samples={"a": ["1", "2", "2", "1"], "b": ["x", "y", "y", "y"]})
    assert run_batch(st["id"], engine=eng)["status"] == "completed"
    out = {r["custom_id"]: r["response"]["body"] for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert out["a"]["rft"]["strategy"] == "best_of_n:n=4,selector=majority" and out["a"]["usage"]["completion_tokens"] == 4
    assert out["b"]["rft"]["strategy"] == "best_of_n:n=2,selector=majority"  # the line's own wins
    with pytest.raises(RftError, match="reference"):
        build_config({"strategy": "best_of_n:n=4,selector=grader"})
    with pytest.raises(RftError, match="strategy"):
        build_config({"strategy": "best_of_n"})
    inp.write_text(json.dumps({"custom_id": "s", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"messages": _q("s"), "stream": True}}) + "\n")
    with pytest.raises(RftError) as e:
        create_batch(inp, model=str(_fake_model_dir(tmp_path)), output=tmp_path / "out2.jsonl", config=cfg)
    assert e.value.problems[0].line == 1 and "'stream'" in e.value.problems[0].message
