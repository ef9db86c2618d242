"""rft.review.agreement against an independent computation: Cohen's kappa from the 2x2 table by hand (the
textbook example), Wilson's interval solved as a quadratic, and the degenerate cases the docstring promises."""

from __future__ import annotations

import math

import pytest

from rft.review.agreement import agreement

Z = 1.959963984540054


def _pairs(tp, fp, fn, tn):
    """human, grader lists for a confusion table (human is the truth)."""
    human = [1.0] * tp + [0.0] * fp + [1.0] * fn + [0.0] * tn
    grader = [1.0] * tp + [1.0] * fp + [0.0] * fn + [0.0] * tn
    return human, grader


def _wilson_quadratic(k, n, z=Z):
    """Wilson's interval as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved for p."""
    ph = k / n
    a = 1 + z * z / n
    b = -(2 * ph + z * z / n)
    c = ph * ph
    disc = math.sqrt(b * b - 4 * a * c)
    return [(-b - disc) / (2 * a), (-b + disc) / (2 * a)]


def test_textbook_kappa_and_intervals():
    # 50 items: both pass 20, grader-only pass 10, human-only pass 5, both fail 15 (Cohen's kappa = 0.4)
    human, grader = _pairs(tp=20, fp=10, fn=5, tn=15)
    a = agreement(human, grader)
    assert a["n"] == 50 and a["unscored"] == 0
    assert a["confusion"] == {"tp": 20, "fp": 10, "fn": 5, "tn": 15}
    assert a["accuracy"] == pytest.approx(0.7)
    assert a["disagreement"] == pytest.approx(0.3)
    # by hand: po = 0.7; human passes 25/50, grader 30/50; pe = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5
    assert a["kappa"] == pytest.approx(0.4)
    se = math.sqrt(0.7 * 0.3 / (50 * 0.5 ** 2))  # = 0.129615
    assert se == pytest.approx(0.1296148, abs=1e-6)
    assert a["kappa_ci95"] == pytest.approx([0.4 - Z * se, 0.4 + Z * se])
    assert a["kappa_ci95"] == pytest.approx([0.145960, 0.654040], abs=1e-5)
    assert a["accuracy_ci95"] == pytest.approx(_wilson_quadratic(35, 50))
    assert len(a["disagreements"]) == 15 and a["disagreements"] == list(range(20, 35))


def test_unscored_are_left_out_and_keys_listed():
    human = [1.0, 0.0, 1.0, 0.0, 0.7]
    grader = [1.0, 1.0, None, 0.0, 0.4]  # 0.7 passes for the person, 0.4 fails for the grader
    a = agreement(human, grader, keys=["a", "b", "c", "d", "e"])
    assert a["n"] == 4 and a["unscored"] == 1
    assert a["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert a["disagreements"] == ["b", "e"]
    assert a["kappa"] == pytest.approx(0.0)  # po = 0.5 = pe
    # a stricter threshold changes the classes: at 0.8 the person's 0.7 is a fail, agreeing with the grader
    b = agreement(human, grader, keys=["a", "b", "c", "d", "e"], threshold=0.8)
    assert b["disagreements"] == ["b"]


def test_degenerate_cases_are_defined():
    empty = agreement([], [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["accuracy_ci95"] is None
    assert empty["kappa"] is None and empty["kappa_ci95"] is None and empty["disagreement"] is None
    unscored = agreement([1.0, 0.0], [None, None])
    assert unscored["n"] == 0 and unscored["unscored"] == 2 and unscored["kappa"] is None
    # everyone passes everything: perfect accuracy, kappa undefined (pe = 1)
    same = agreement([1.0] * 5, [1.0] * 5)
    assert same["accuracy"] == 1.0 and same["kappa"] is None and same["kappa_ci95"] is None
    assert same["accuracy_ci95"] == pytest.approx(_wilson_quadratic(5, 5))
    # only the person uses one class: pe = 0.75 = po, kappa 0, wide interval clipped to [-1, 1]
    one = agreement([1.0] * 4, [1.0, 1.0, 1.0, 0.0])
    assert one["kappa"] == pytest.approx(0.0) and one["kappa_ci95"] == [-1.0, 1.0]
    # complete disagreement: kappa -1 with a zero-width interval (po = 0)
    opp = agreement([1.0, 0.0], [0.0, 1.0])
    assert opp["kappa"] == pytest.approx(-1.0) and opp["kappa_ci95"] == pytest.approx([-1.0, -1.0])
    assert opp["accuracy"] == 0.0 and opp["accuracy_ci95"][0] == 0.0
    one_item = agreement([1.0], [1.0])
    assert one_item["n"] == 1 and one_item["kappa"] is None


def test_mismatched_lengths_are_a_programming_error():
    with pytest.raises(ValueError):
        agreement([1.0], [1.0, 0.0])
