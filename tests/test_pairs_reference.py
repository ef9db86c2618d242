"""`rft pairs --preferred reference`: the job's reference answer preferred to the worst of the base model's own
samples (issue 14), with the scripted engine of tests/test_pairs.py, so the expected pairs are known by hand."""

from __future__ import annotations

import json

import pytest
import yaml

from rft.data.chat_formats import load_chat_dataset
from rft.errors import RftError
from rft.jobcheck import load_job
from rft.train.pairs import build_pairs, pick_reference_pair
from tests.clitools import assert_user_error, run_rft
from tests.test_pairs import ScriptedEngine, _job

PY_GRADER = {"type": "python", "name": "py", "source": (
    "def grade(sample, item):\n    t = sample['output_text']\n    if t == 'x':\n        raise ValueError('x')\n"
    "    return 1.0 if t == item['answer'] else (0.6 if t.lower() == item['answer'] else 0.0)\n")}


def _with(path, **train):
    spec = yaml.safe_load(path.read_text())
    spec["rft"]["train"] = train
    path.write_text(yaml.safe_dump(spec))
    return path


def test_pick_reference_pair_against_hand_made_scores():
    t = ["a", "b", "c", "REF"]  # the last entry is the reference
    assert pick_reference_pair([1.0, 0.0, 0.5, 1.0], t, 0.1) == (3, 1)  # the worst sample, not the first
    assert pick_reference_pair([0.0, 0.0, 1.0, 1.0], t, 0.1) == (3, 0)  # the first of equal worsts
    assert pick_reference_pair([1.0, 1.0, 1.0, 1.0], t, 0.0) == "tie"  # every sample as good as the reference
    assert pick_reference_pair([0.95, 0.9, 1.0, 1.0], t, 0.2) == "below_gap"
    assert pick_reference_pair([1.0, 1.0, 1.0, 0.0], t, 0.1) == "below_gap"  # a reference below its samples
    assert pick_reference_pair([None, None, None, 1.0], t, 0.1) == "unscored"  # no sample scored
    assert pick_reference_pair([0.0, None, None, None], t, 0.1) == "unscored"  # the reference not scored
    assert pick_reference_pair([None, 0.2, None, 1.0], t, 0.1) == (3, 1)  # unscored samples skipped, not zeros
    assert pick_reference_pair([0.0, 1.0], ["same", "same"], 0.1) == "same_text"


def test_reference_pairs_from_a_scripted_engine(tmp_path, tiny_model_dir):
    """red: samples [blue, red, rd, red] -> (red, blue); blue: all "no" -> (blue, no), a prompt the best-vs-worst
    pairs lose (a tie there); green: all right -> tie; gold: [gold, GOLD, x, gold] -> (gold, GOLD)."""
    from transformers import AutoTokenizer

    job = load_job(_with(_job(tmp_path, tiny_model_dir), reference_output="{{item.answer}}"))
    engine = ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir))
    out = tmp_path / "pairs.jsonl"
    res = build_pairs(job, out_path=out, samples_per_prompt=4, min_gap=0.5, seed=3, preferred="reference",
                      engine=engine)
    assert res["preferred"] == "reference"
    assert res["prompts"] == 4 and res["samples"] == 16 and res["unscored_samples"] == 0 and res["pairs"] == 3
    assert res["excluded"] == {"unscored": 0, "tie": 1, "below_gap": 0, "same_text": 0, "no_reference": 0}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    got = [(r["input"]["messages"][0]["content"], r["preferred_output"][0]["content"],
            r["non_preferred_output"][0]["content"], r["answer"]) for r in rows]
    assert got == [("Say red", "red", "blue", "red"), ("Say blue", "blue", "no", "blue"),
                   ("Say gold", "gold", "GOLD", "gold")]
    assert len(load_chat_dataset(out, "dpo")) == 3
    # the engine was asked for the samples only; the reference is not generated
    assert engine.params[0].n == 4


def test_reference_from_the_exact_match_grader_and_the_gap(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    # no rft.train.reference_output: the exact-match string_check's reference is the answer
    job = load_job(_job(tmp_path, tiny_model_dir))
    res = build_pairs(job, out_path=tmp_path / "a.jsonl", samples_per_prompt=4, preferred="reference",
                      engine=ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir)))
    assert res["pairs"] == 3
    # a python grader: gold's worst scored sample is "GOLD" (0.6; "x" is unscored), 0.4 below the reference
    job = load_job(_with(_job(tmp_path, tiny_model_dir, PY_GRADER), reference_output="{{item.answer}}"))
    res = build_pairs(job, out_path=tmp_path / "b.jsonl", samples_per_prompt=4, min_gap=0.5, preferred="reference",
                      engine=ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir)))
    assert res["unscored_samples"] == 1 and res["pairs"] == 2
    assert res["excluded"] == {"unscored": 0, "tie": 1, "below_gap": 1, "same_text": 0, "no_reference": 0}


def test_reference_mode_needs_a_known_reference_and_a_valid_name(tmp_path, tiny_model_dir):
    job = load_job(_job(tmp_path, tiny_model_dir, PY_GRADER))
    with pytest.raises(RftError, match="needs the job's reference answer") as e:
        build_pairs(job, out_path=tmp_path / "o.jsonl", preferred="reference")
    assert "rft.train.reference_output" in e.value.hint
    with pytest.raises(RftError, match="unknown preferred-output source 'refrence'.*did you mean 'reference'"):
        build_pairs(job, out_path=tmp_path / "o.jsonl", preferred="refrence")
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_reference_pairs_on_the_tiny_model(tmp_path, tiny_model_dir):
    """The whole command on the random tiny model: every pair prefers the row's answer."""
    job = _with(_job(tmp_path, tiny_model_dir), reference_output="{{item.answer}}")
    out = tmp_path / "pairs.jsonl"
    r = run_rft("pairs", str(job), "-o", str(out), "--samples", "3", "--preferred", "reference", "--json", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["preferred"] == "reference" and res["prompts"] == 4 and res["samples"] == 12
    assert res["pairs"] + sum(res["excluded"].values()) == 4 and res["pairs"] >= 1
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == res["pairs"]
    assert all(r["preferred_output"][0]["content"] == r["answer"] for r in rows)
    # the human-readable table names the source; an unknown source is a user error
    r = run_rft("pairs", str(job), "-o", str(tmp_path / "t.jsonl"), "--samples", "2", "--preferred", "reference", "-q")
    assert r.returncode == 0 and "the reference answer" in r.stdout, r.stdout + r.stderr[-2000:]
    assert_user_error(run_rft("pairs", str(job), "-o", str(tmp_path / "u.jsonl"), "--preferred", "worst"),
                      "unknown preferred-output source 'worst'")


def test_pick_auto_pair_uses_the_samples_where_they_differ_else_the_reference():
    from rft.train.pairs import pick_auto_pair

    t = ["a", "b", "c", "REF"]  # the last entry is the reference
    assert pick_auto_pair([1.0, 0.0, 0.5, 1.0], t, 0.1) == (0, 1)  # samples differ: best vs worst, both sampled
    assert pick_auto_pair([0.0, 0.0, 0.0, 1.0], t, 0.1) == (3, 0)  # all tie: the reference vs the worst
    assert pick_auto_pair([0.5, 0.45, 0.5, 1.0], t, 0.1) == (3, 1)  # below the gap among samples: the reference
    assert pick_auto_pair([1.0, 1.0, 1.0, 1.0], t, 0.1) == "tie"  # nothing to prefer anywhere
    assert pick_auto_pair([None, None, 0.0, None], t, 0.1) == "unscored"


def test_auto_pairs_from_a_scripted_engine(tmp_path, tiny_model_dir):
    """The scripted groups of test_reference_pairs_from_a_scripted_engine with preferred="auto": red's samples
    differ (red 1.0, blue 0.0) and so do gold's: on-policy pairs; blue's are all "no": the reference pair; green
    ties everywhere."""
    from transformers import AutoTokenizer

    job = load_job(_with(_job(tmp_path, tiny_model_dir), reference_output="{{item.answer}}"))
    engine = ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir))
    out = tmp_path / "pairs.jsonl"
    res = build_pairs(job, out_path=out, samples_per_prompt=4, min_gap=0.5, seed=3, preferred="auto", engine=engine)
    rows = {r["input"]["messages"][0]["content"]: (r["preferred_output"][0]["content"],
                                                    r["non_preferred_output"][0]["content"])
            for r in map(json.loads, out.read_text().splitlines())}
    assert rows["Say red"] == ("red", "blue") and rows["Say blue"] == ("blue", "no") and "Say green" not in rows
    assert res["preferred"] == "auto" and res["pairs"] == len(rows)
    assert rows["Say gold"] == ("gold", "GOLD")  # exact match: gold 1, GOLD 0, x 0: the samples differ
    assert res["pairs_preferring_reference"] == 1  # blue's alone
    # without a known reference (a python grader makes none known), auto is best-vs-worst
    (tmp_path / "p").mkdir()
    plain = load_job(_job(tmp_path / "p", tiny_model_dir, grader=PY_GRADER))
    res2 = build_pairs(plain, out_path=tmp_path / "p2.jsonl", samples_per_prompt=4, min_gap=0.5, seed=3,
                       preferred="auto", engine=ScriptedEngine(AutoTokenizer.from_pretrained(tiny_model_dir)))
    assert res2["preferred"] == "best" and res2["pairs_preferring_reference"] == 0
