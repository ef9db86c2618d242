"""The review queue's stratified draw on a synthetic run folder (tests/review/reviewfakes.py): strata
membership by hand, the weighted round-robin counts, determinism by seed, reviewed items left out."""

from __future__ import annotations

from rft.review import queue as rq
from reviewfakes import make_run


def _items(tmp_path):
    return rq.load_items(make_run(tmp_path / "run"))


def test_items_and_strata_membership(tmp_path):
    items = _items(tmp_path)
    train = [it for it in items if it["source"] == "train"]
    ev = [it for it in items if it["source"] == "eval"]
    assert len(train) == 64 and len(ev) == 10  # eval_final only: the baseline is the reference, not queued
    assert {it["key"] for it in ev} == {f"eval:eval_final:{i}" for i in range(10)}
    tags = rq.strata_of(items)
    members = {s: {k for k, t in tags.items() if s in t} for s in rq.STRATA}
    # one grader error per step (line 2) and eval item 6
    assert members["grader_error"] == {f"train:{s}:2" for s in range(1, 9)} | {"eval:eval_final:6"}
    assert members["regressed"] == {"eval:eval_final:1", "eval:eval_final:2"}  # 1 -> 0 against the baseline
    # |advantage| per step: 0.1 0.2 0 0.4 0.5 0.6 0.7 0.8; the 75th percentile (nearest rank, 64 values) is 0.6
    assert members["high_advantage"] == {f"train:{s}:{i}" for s in range(1, 9) for i in (5, 6, 7)}
    assert members["late_step"] == {f"train:{s}:{i}" for s in (7, 8) for i in range(8)}
    assert len(members["score_fail"]) == 8 * 4 + 5 and len(members["score_pass"]) == 8 * 3 + 4


def test_counts_follow_the_weights_and_every_stratum_is_represented(tmp_path):
    q = rq.draw(_items(tmp_path), 12, seed=0)
    assert len(q) == 12 and len({it["key"] for it in q}) == 12
    # round 1: one from each of the 6 strata, then one more from each of the 4 over-sampled ones (10 items);
    # round 2: grader_error 1, regressed none left (it has 2), high_advantage 1 -> 12
    assert rq.counts(q) == {"grader_error": 3, "regressed": 2, "high_advantage": 3, "late_step": 2,
                            "score_fail": 1, "score_pass": 1}
    # a short queue still covers every stratum once
    assert set(rq.counts(rq.draw(_items(tmp_path), 6, seed=5)).values()) == {1}
    # a longer one gives the over-sampled strata about twice the share of the score strata
    assert rq.counts(rq.draw(_items(tmp_path), 30, seed=0)) == {"grader_error": 7, "regressed": 2, "high_advantage": 7,
                                                              "late_step": 7, "score_fail": 4, "score_pass": 3}
    tags = rq.strata_of(_items(tmp_path))
    for it in q:
        assert it["why"]["stratum"] in it["why"]["reasons"] and it["why"]["reasons"] == tags[it["key"]]
        assert it["why"]["text"]
    # everything, when n exceeds the pool: each item once
    allq = rq.draw(_items(tmp_path), 1000, seed=0)
    assert len(allq) == 74 and len({it["key"] for it in allq}) == 74


def test_determinism_by_seed(tmp_path):
    items = _items(tmp_path)
    a = [it["key"] for it in rq.draw(items, 20, seed=7)]
    b = [it["key"] for it in rq.draw(items, 20, seed=7)]
    c = [it["key"] for it in rq.draw(items, 20, seed=8)]
    assert a == b
    assert a != c


def test_reviewed_items_are_never_drawn(tmp_path):
    items = _items(tmp_path)
    first = {it["key"] for it in rq.draw(items, 30, seed=0)}
    second = rq.draw(items, 30, seed=0, reviewed=first)
    assert first.isdisjoint(it["key"] for it in second)
    assert len(second) == 30
    # both regressed items were drawn the first time: the second queue has none left in that stratum
    assert rq.counts(second)["regressed"] == 0
    rest = rq.draw(items, 1000, seed=0, reviewed=first | {it["key"] for it in second})
    assert len(rest) == 74 - 60
