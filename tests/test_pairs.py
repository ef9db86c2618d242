"""`rft pairs`: best-vs-worst DPO rows from a grader, with a scripted engine whose samples are known, so the
expected pairs (and the prompts that give none: ties, unscored samples, a gap below the minimum) are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rft.data.chat_formats import load_chat_dataset
from rft.errors import RftError
from rft.jobcheck import load_job
from rft.train.pairs import build_pairs, pick_pair
from rft.types import Completion
from tests.clitools import assert_user_error, run_rft

# prompt word -> the 4 samples the scripted engine returns for it
SCRIPT = {
    "red": ["blue", "red", "rd", "red"],  # best "red" (first one, index 1), worst "blue" (index 0)
    "blue": ["no", "no", "no", "no"],  # all 0: a tie
    "green": ["green", "green", "green", "green"],  # all 1: a tie
    "gold": ["gold", "GOLD", "x", "gold"],  # best "gold", worst "GOLD" (the first 0)
}


class ScriptedEngine:
    """Returns SCRIPT[word] for the prompt "Say <word>"; records the sampling parameters it was given."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.params = []

    def generate_ids(self, prompt_ids, sp):
        self.params.append(sp)
        out = []
        for ids in prompt_ids:
            text = self.tokenizer.decode(ids)
            word = next(w for w in SCRIPT if f"Say {w}<" in text)
            out.append([Completion(text=t, token_ids=(1,), logprobs=(0.0,), finish_reason="stop")
                        for t in SCRIPT[word][:sp.n]])
        return out


def _job(tmp_path: Path, model_dir: Path, grader: dict | None = None) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}"}], "answer": w,
                                        "topic": "colours"}) + "\n" for w in SCRIPT))
    spec = {"model": str(model_dir), "training_file": str(data), "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {"grader": grader or {
                "type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"}}},
            "rft": {"sampling": {"temperature": 0.7, "max_new_tokens": 5}}}
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_pick_pair_against_hand_made_scores():
    t = ["a", "b", "c", "d"]
    assert pick_pair([0.0, 1.0, 0.5, 1.0], t, 0.1) == (1, 0)  # the first best, the first worst
    assert pick_pair([0.3, 0.3, None, 0.3], t, 0.0) == "tie"  # equal scores never pair, even with no gap asked
    assert pick_pair([None, None, None, 1.0], t, 0.1) == "unscored"  # fewer than two scored samples
    assert pick_pair([None, 0.2, None, 0.9], t, 0.1) == (3, 1)  # unscored samples are skipped, not zeros
    assert pick_pair([0.5, 0.55], t, 0.1) == "below_gap"
    assert pick_pair([1.0, 0.0], ["same", "same"], 0.1) == "same_text"


def test_pairs_from_a_scripted_engine(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    job = load_job(_job(tmp_path, tiny_model_dir))
    engine = ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir))
    out = tmp_path / "pairs.jsonl"
    res = build_pairs(job, out_path=out, samples_per_prompt=4, min_gap=0.5, seed=3, engine=engine)
    assert res["prompts"] == 4 and res["samples"] == 16 and res["pairs"] == 2 and res["unscored_samples"] == 0
    assert res["excluded"] == {"unscored": 0, "tie": 2, "below_gap": 0, "same_text": 0}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows == [
        {"input": {"messages": [{"role": "user", "content": "Say red"}]},
         "preferred_output": [{"role": "assistant", "content": "red"}],
         "non_preferred_output": [{"role": "assistant", "content": "blue"}], "answer": "red", "topic": "colours"},
        {"input": {"messages": [{"role": "user", "content": "Say gold"}]},
         "preferred_output": [{"role": "assistant", "content": "gold"}],
         "non_preferred_output": [{"role": "assistant", "content": "GOLD"}], "answer": "gold", "topic": "colours"},
    ]
    # the job's sampling settings, the requested group size and the seed reached the engine
    sp = engine.params[0]
    assert (sp.n, sp.temperature, sp.max_new_tokens, sp.seed) == (4, 0.7, 5, 3 * 100_003)
    # the file is a valid DPO training file
    assert len(load_chat_dataset(out, "dpo")) == 2


def test_unscored_samples_and_the_gap(tmp_path, tiny_model_dir):
    """A python grader that fails on "x" (unscored, not zero) and gives 0.6 to upper-case answers: gold's samples
    score [1, 0.6, None, 1], a gap of 0.4, below a min_gap of 0.5."""
    from transformers import AutoTokenizer

    src = ("def grade(sample, item):\n    t = sample['output_text']\n    if t == 'x':\n        raise ValueError('x')\n"
           "    return 1.0 if t == item['answer'] else (0.6 if t.lower() == item['answer'] else 0.0)\n")
    job = load_job(_job(tmp_path, tiny_model_dir, {"type": "python", "name": "py", "source": src}))
    engine = ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir))
    res = build_pairs(job, out_path=tmp_path / "p.jsonl", samples_per_prompt=4, min_gap=0.5, engine=engine)
    assert res["unscored_samples"] == 1 and res["pairs"] == 1
    assert res["excluded"] == {"unscored": 0, "tie": 2, "below_gap": 1, "same_text": 0}


def test_pairs_refuses_a_job_without_prompts_and_grader(tmp_path, tiny_model_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]})
                    + "\n")
    p = tmp_path / "sft.yaml"
    p.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "training_file": str(data),
                                 "method": {"type": "supervised"}}))
    with pytest.raises(RftError, match="needs a reinforcement job"):
        build_pairs(load_job(p), out_path=tmp_path / "o.jsonl")
    assert_user_error(run_rft("pairs", str(p), "-o", str(tmp_path / "o.jsonl")), "needs a reinforcement job")


def test_cli_on_the_tiny_model(tmp_path, tiny_model_dir):
    """The whole command on the random tiny model: counts add up and every written row is a valid DPO row."""
    out = tmp_path / "pairs.jsonl"
    r = run_rft("pairs", str(_job(tmp_path, tiny_model_dir)), "-o", str(out), "--samples", "3", "--json", "-q",
                "--min-gap", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["prompts"] == 4 and res["samples"] == 12
    assert res["pairs"] + sum(res["excluded"].values()) == 4
    assert len(out.read_text().splitlines()) == res["pairs"]
