"""Graders are built with an explicit GraderContext (sandbox limits and pools, judges, HTTP client, clock), and an
exception a grader did not expect is an unscored sample with other_error, never a crash of the training step."""

import pytest

import rft.graders.python_grader as python_grader
import rft.graders.score_model as score_model
import rft.graders.text_similarity as text_similarity
from rft.graders import Grader, GraderContext, SandboxLimits, build, grade_many, make_sample
from rft.graders.sandbox import SandboxPool

SOURCE = "def grade(sample, item):\n    return 1.0\n"
EQ = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "eq"}


# --- the context the training loop builds ---------------------------------------------------------------------------

def test_the_training_loops_context_reaches_python_graders():
    limits = SandboxLimits(timeout_s=7.0, cpu_s=5.0, memory_mb=512, nproc=16, fsize_mb=8, isolation="basic")
    ctx = GraderContext(allow_private_hosts=("127.0.0.1",), sandbox=limits, sandbox_workers=3)
    g = build({"type": "python", "source": SOURCE}, context=ctx)
    assert g.pool.limits == limits and g.pool.size == 3 and g.concurrency == 3  # no worker started for this
    g.close()


def test_one_pool_per_distinct_limits_closed_by_whoever_closes_the_graders():
    ctx = GraderContext(sandbox=SandboxLimits(timeout_s=5.0), sandbox_workers=2)
    a, b = (build({"type": "python", "source": SOURCE}, context=ctx) for _ in range(2))
    inner = build({"type": "multi", "graders": {"p": {"type": "python", "source": SOURCE}}, "calculate_output": "p"},
                  context=ctx).graders["p"]
    assert a.pool is b.pool is inner.pool  # shared by every python grader of the context, multi's included
    other = GraderContext(sandbox=SandboxLimits(timeout_s=5.0), sandbox_workers=2)
    c = build({"type": "python", "source": SOURCE}, context=other)
    assert c.pool is not a.pool  # ... and only within it
    d = build({"type": "python", "source": SOURCE}, context=GraderContext(sandbox=SandboxLimits(timeout_s=6.0)))
    assert d.pool is not c.pool
    pool = a.pool
    a.close()
    b.close()
    assert not pool._closed  # the multi's sub-grader still holds it
    inner.close()
    assert pool._closed  # the last grader using it closed it
    for g in (c, d):
        p = g.pool
        g.close()
        assert p._closed


def test_a_given_pool_is_used_and_left_to_its_owner(sandbox_pool):
    ctx = GraderContext(sandbox_pool=sandbox_pool)
    g = build({"type": "python", "source": SOURCE}, context=ctx)
    assert g.pool is sandbox_pool
    g.close()
    ctx.close()
    assert not sandbox_pool._closed


def test_context_close_closes_pools_graders_did_not_give_back():
    ctx = GraderContext(sandbox=SandboxLimits(timeout_s=5.0))
    pool = build({"type": "python", "source": SOURCE}, context=ctx).pool
    ctx.close()
    assert pool._closed


def test_no_process_globals_for_sandbox_or_judges():
    assert not hasattr(python_grader, "configure_sandbox")
    assert not hasattr(score_model, "_judges") and not hasattr(score_model, "set_judge")
    g1, g2 = build({"type": "python", "source": SOURCE}), build({"type": "python", "source": SOURCE})
    assert g1.context is not g2.context and g1.context.judges is not g2.context.judges  # no hidden shared default
    assert g1.pool is not g2.pool
    g1.close()
    g2.close()


def test_latency_is_measured_with_the_contexts_clock(fake_time):
    fake_time.step = 0.25
    ctx = GraderContext(clock=fake_time.clock)
    r = build(EQ, context=ctx).grade(make_sample("x"), {})
    assert r.score == 1.0 and r.latency_s == 0.25
    m = build({"type": "multi", "graders": {"a": EQ, "b": EQ}, "calculate_output": "a + b"}, context=ctx)
    r = m.grade(make_sample("x"), {})
    # multi reads the clock at its start and end, each sub-grader twice in between: 5 steps in all
    assert r.score == 2.0 and r.latency_s == 1.25 and r.sub_latency_s == {"a": 0.25, "b": 0.25}


# --- unexpected exceptions are unscored, with other_error -------------------------------------------------------------

class Exploding(Grader):
    type = "exploding"

    def score(self, sample, item):
        return {}["missing"]  # a bug: KeyError


def test_an_unexpected_exception_is_other_error_with_its_text():
    r = Exploding({"type": "exploding", "name": "boom"}).grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error"
    assert "KeyError" in r.details and "'missing'" in r.details and r.name == "boom"


def test_a_library_failing_inside_a_builtin_grader_does_not_crash_a_batch(monkeypatch):
    def broken(a, b):
        raise ZeroDivisionError("metric exploded")

    monkeypatch.setitem(text_similarity.METRICS, "fuzzy_match", broken)
    g = build({"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "abc",
               "evaluation_metric": "fuzzy_match"})
    results = grade_many(g, [make_sample("abc")] * 3, [{}] * 3, max_workers=2)
    assert [(r.score, r.error) for r in results] == [(None, "other_error")] * 3
    assert all("ZeroDivisionError: metric exploded" in r.details for r in results)


def test_an_unexpected_exception_in_a_sub_grader_makes_multi_unscored(monkeypatch):
    m = build({"type": "multi", "graders": {"ok": EQ, "bad": {"type": "python", "source": SOURCE}},
               "calculate_output": "ok + bad"})

    def pool_broke(*a, **k):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(SandboxPool, "run", pool_broke)
    r = m.grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error" and r.sub_scores == {"ok": 1.0, "bad": None}
    assert "sub-grader 'bad'" in r.details and "Too many open files" in r.details
    m.close()


def test_an_unexpected_exception_in_the_formula_is_other_error(monkeypatch):
    m = build({"type": "multi", "graders": {"a": EQ}, "calculate_output": "a"})
    monkeypatch.setattr(type(m.formula), "evaluate", lambda self, env: 1 / 0)
    r = m.grade(make_sample("x"), {})
    assert r.score is None and r.error == "other_error" and "ZeroDivisionError" in r.details


def test_keyboard_interrupt_is_not_swallowed():
    class Interrupted(Grader):
        type = "interrupted"

        def score(self, sample, item):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Interrupted({"type": "interrupted"}).grade(make_sample("x"), {})
