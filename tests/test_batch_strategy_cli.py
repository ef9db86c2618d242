"""`rft batch run --strategy SPEC` through the installed entry point, on the tiny random Llama: one answer per
request, usage counting every sample, the flag overriding the config's `strategy:`, a line's own
`rft.strategy` winning, and the same one-line parse errors as `rft eval --strategy` (exit 2, nothing run)."""

from __future__ import annotations

import json

from clitools import assert_user_error, run_rft

MAX_TOKENS = 4


def _requests(path, words, own: dict | None = None):
    lines = []
    for w in words:
        body = {"messages": [{"role": "user", "content": f"Say {w}"}], "max_tokens": MAX_TOKENS}
        if own and w in own:
            body["rft"] = {"strategy": own[w]}
        lines.append(json.dumps({"custom_id": w, "method": "POST", "url": "/v1/chat/completions", "body": body}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _bodies(path):
    return {r["custom_id"]: r["response"]["body"] for r in map(json.loads, path.read_text().splitlines())}


def test_batch_run_with_strategy_answers_once_and_counts_every_sample(tmp_path, tiny_model_dir):
    words = ["red", "blue", "green"]
    inp = _requests(tmp_path / "in.jsonl", words)
    r = run_rft("batch", "run", str(inp), "-m", str(tiny_model_dir), "-o", str(tmp_path / "greedy.jsonl"), "-q",
                "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    greedy = _bodies(tmp_path / "greedy.jsonl")
    assert all("rft" not in b and b["usage"]["completion_tokens"] <= MAX_TOKENS for b in greedy.values())

    r = run_rft("batch", "run", str(inp), "-m", str(tiny_model_dir), "-o", str(tmp_path / "bon.jsonl"), "-q",
                "--json", "--strategy", "best_of_n:n=3,selector=majority")
    assert r.returncode == 0, r.stderr[-2000:]
    final = json.loads(r.stdout)
    assert final["status"] == "completed" and final["config"]["strategy"] == "best_of_n:n=3,selector=majority"
    bon = _bodies(tmp_path / "bon.jsonl")
    assert sorted(bon) == sorted(words)  # one answer per request ...
    total = 0
    for w, b in bon.items():
        ext = b["rft"]
        assert len(b["choices"]) == 1 and len(ext["candidates"]) == 3  # ... chosen from three samples
        assert b["choices"][0]["message"]["content"] == ext["candidates"][ext["selected"]]
        # usage counts every sample, not just the one returned: more than one sample's cap allows
        assert b["usage"]["completion_tokens"] == ext["tokens"] == ext["phase_tokens"]["samples"]
        assert MAX_TOKENS < b["usage"]["completion_tokens"] <= 3 * MAX_TOKENS
        total += b["usage"]["completion_tokens"]
    assert final["usage"]["completion_tokens"] == total  # the batch's usage sums the lines'


def test_strategy_flag_overrides_config_and_a_line_keeps_its_own(tmp_path, tiny_model_dir):
    inp = _requests(tmp_path / "in.jsonl", ["red", "blue"], own={"blue": "best_of_n:n=2,selector=majority"})
    cfg = tmp_path / "batch.yaml"
    cfg.write_text("strategy: best_of_n:n=4,selector=majority\n")
    r = run_rft("batch", "run", str(inp), "-m", str(tiny_model_dir), "-o", str(tmp_path / "out.jsonl"), "-q",
                "--config", str(cfg), "--strategy", "reasoning:budget=3")
    assert r.returncode == 0, r.stderr[-2000:]
    out = _bodies(tmp_path / "out.jsonl")
    red = out["red"]
    assert red["rft"]["strategy"] == "reasoning:budget=3"  # the flag, not the config's best_of_n:n=4
    think = red["rft"]["phase_tokens"]["think"]
    assert 1 <= think <= 3 and red["usage"]["completion_tokens"] == think + red["rft"]["phase_tokens"]["answer"]
    assert red["usage"]["completion_tokens_details"]["reasoning_tokens"] == think
    assert out["blue"]["rft"]["strategy"] == "best_of_n:n=2,selector=majority"
    # the terminal summary names the strategy
    assert "reasoning:budget=3" in " ".join(r.stdout.split())


def test_bad_strategy_is_one_error_line_like_rft_eval(tmp_path, tiny_model_dir):
    inp = _requests(tmp_path / "in.jsonl", ["red"])
    base = ["batch", "run", str(inp), "-m", str(tiny_model_dir), "-o", str(tmp_path / "out.jsonl")]
    cases = [("best_of", "did you mean 'best_of_n'"), ("best_of_n:n=2", "needs a selector"),
             ("best_of_n:n=2,selectr=majority", "did you mean 'selector'"), ("reasoning:budget=0", "budget"),
             ("reasoning:budget=x", "must be a int")]
    data = tmp_path / "val.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Say red"}], "answer": "red"}) + "\n")
    grader = tmp_path / "g.json"
    grader.write_text(json.dumps({"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                                  "reference": "{{ item.answer }}", "operation": "eq"}))
    for spec, needle in cases:
        r = run_rft(*base, "--strategy", spec)
        assert_user_error(r, "--strategy", needle)
        errors = [x for x in (r.stdout + r.stderr).splitlines() if x.startswith("error:")]
        assert len(errors) == 1, r.stderr
        ev = run_rft("eval", str(tiny_model_dir), "--data", str(data), "--grader", str(grader), "--strategy", spec)
        assert_user_error(ev)
        assert errors == [x for x in (ev.stdout + ev.stderr).splitlines() if x.startswith("error:")]
    # what only a batch refuses: a selector that reads reference answers
    assert_user_error(run_rft(*base, "--strategy", "best_of_n:n=2,selector=grader"), "--strategy", "selector=majority")
    assert_user_error(run_rft("batch", "run", str(inp), "-m", "http://127.0.0.1:9/v1", "--strategy",
                              "reasoning:budget=4"), "local models only")
    assert not (tmp_path / "out.jsonl").exists()  # nothing ran


def test_batch_run_help_documents_strategy():
    r = run_rft("batch", "run", "-h")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "--strategy" in text
    assert "best_of_n:n=4,selector=majority" in text and "reasoning:budget=64" in text and "overrides" in text
