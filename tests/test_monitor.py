"""Reward-integrity monitor: scripted metric streams that should and should not raise each alarm."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rft.train.monitor import ALARM_KINDS, Alarm, MonitorConfig, RewardMonitor


def _step(reward=0.5, entropy=1.0, kl=0.0, length=20.0, zero_std=0.2):
    # the names the training loop logs (rft.train.loop.train_step)
    return {"reward": reward, "entropy": entropy, "kl": kl, "completions/mean_length": length,
            "frac_reward_zero_std": zero_std}


def _kinds(alarms):
    return [a.kind for a in alarms]


def _run_hacking(mon, val_at, guard_at=None, reward=lambda s: 0.2 + 0.02 * s):
    """30 steps of rising training reward, an evaluation every 10 steps (and the baseline at step 0)."""
    alarms = mon.observe_eval(0, val_at(0), guard_at(0) if guard_at else None)
    for s in range(1, 31):
        alarms += mon.observe_step(s, _step(reward=reward(s)))
        if s % 10 == 0:
            alarms += mon.observe_eval(s, val_at(s), guard_at(s) if guard_at else None)
    return alarms


def test_reward_up_guard_down_pauses():
    mon = RewardMonitor(MonitorConfig(policy="pause"))
    guard = {0: 0.80, 10: 0.79, 20: 0.70, 30: 0.60}
    alarms = _run_hacking(mon, val_at=lambda s: 0.5, guard_at=guard.get)
    hack = [a for a in alarms if a.kind == "reward_hacking"]
    assert len(hack) == 1, alarms  # latched: the still-falling guard at step 30 is the same episode
    a = hack[0]
    assert a.step == 20 and a.action == "pause" and a.numbers["signal"] == "guard"
    # by hand: reward at step 20 = mean of steps 16..20, at the baseline = mean of steps 1..5
    r_now = sum(0.2 + 0.02 * s for s in range(16, 21)) / 5
    r_then = sum(0.2 + 0.02 * s for s in range(1, 6)) / 5
    assert a.numbers["reward_rise"] == pytest.approx(r_now - r_then)
    assert a.numbers["score_drop"] == pytest.approx(0.80 - 0.70)
    assert a.numbers["from_step"] == 0
    assert "guard" in a.message and mon.alarms == hack


def test_reward_up_validation_down_warns_by_default():
    val = {0: 0.6, 10: 0.6, 20: 0.5, 30: 0.5}
    alarms = _run_hacking(RewardMonitor(MonitorConfig()), val_at=val.get)
    assert _kinds(alarms) == ["reward_hacking"] and alarms[0].action == "warn"
    assert alarms[0].numbers["signal"] == "validation"


def test_no_hacking_alarm_when_validation_follows_reward_or_reward_is_flat():
    up = {0: 0.4, 10: 0.5, 20: 0.6, 30: 0.7}
    assert _run_hacking(RewardMonitor(), val_at=up.get) == []
    down = {0: 0.6, 10: 0.5, 20: 0.4, 30: 0.3}
    assert _run_hacking(RewardMonitor(), val_at=down.get, reward=lambda s: 0.5) == []  # bad, but not hacking
    # a small dip within min_score_drop is noise
    dip = {0: 0.6, 10: 0.6, 20: 0.59, 30: 0.59}
    assert _run_hacking(RewardMonitor(MonitorConfig(min_score_drop=0.02)), val_at=dip.get) == []


def test_entropy_collapse_latches_and_rearms():
    mon = RewardMonitor(MonitorConfig(window=2, early_steps=3, entropy_collapse_ratio=0.1))
    ent = [2.0, 2.0, 2.0, None, 1.0, 0.1, 0.1, 0.1, 2.0, 2.0, 0.05, 0.05]
    fired = {s: _kinds(mon.observe_step(s, _step(entropy=e))) for s, e in enumerate(ent, 1)}
    # early = 2.0; the last-2 mean drops below 0.2 at step 7 (0.1, 0.1); skipped steps (None) are ignored
    assert [s for s, k in fired.items() if "entropy_collapse" in k] == [7, 12]
    a = [x for x in mon.alarms if x.kind == "entropy_collapse"][0]
    assert a.numbers["early_entropy"] == pytest.approx(2.0) and a.numbers["entropy"] == pytest.approx(0.1)


def test_entropy_explosion_kl_and_length():
    mon = RewardMonitor(MonitorConfig(window=1, early_steps=2, kl_max=0.5, length_growth_ratio=3.0,
                                      actions={"kl_limit": "pause"}))
    out = []
    rows = [(1.0, 0.1, 10), (1.0, 0.2, 10), (1.2, 0.6, 25), (6.0, 0.4, 31), (6.0, 0.7, 40)]
    for s, (e, kl, ln) in enumerate(rows, 1):
        out += [(s, a.kind, a.action) for a in mon.observe_step(s, _step(entropy=e, kl=kl, length=ln))]
    assert out == [(3, "kl_limit", "pause"), (4, "entropy_explosion", "warn"), (4, "length_explosion", "warn"),
                   (5, "kl_limit", "pause")]


def test_reward_variance_vanishing_needs_consecutive_steps():
    mon = RewardMonitor(MonitorConfig(zero_variance_steps=4, zero_std_frac=0.95))
    fracs = [1.0, 1.0, 1.0, 0.5, 1.0, 0.96, 1.0, 1.0, 1.0]
    hits = [s for s, f in enumerate(fracs, 1) if mon.observe_step(s, _step(zero_std=f))]
    assert hits == [8]  # the streak restarts at step 5 and reaches 4 at step 8
    # the within-group std, when logged, counts as well
    mon = RewardMonitor(MonitorConfig(zero_variance_steps=2, min_group_std=1e-3))
    m = _step(zero_std=0.0) | {"reward_std_within_group": 1e-5}
    assert mon.observe_step(1, m) == [] and _kinds(mon.observe_step(2, m)) == ["reward_variance_vanished"]


def test_state_dict_resumes_exactly():
    cfg = MonitorConfig(policy="pause", window=2, early_steps=2)
    stream = [(s, _step(reward=0.1 * s, entropy=2.0 if s < 6 else 0.1, length=10 + s * s)) for s in range(1, 13)]
    evals = {4: 0.7, 8: 0.6, 12: 0.5}

    def feed(mon, part):
        got = []
        for s, m in part:
            got += mon.observe_step(s, m)
            if s in evals:
                got += mon.observe_eval(s, evals[s])
        return got

    full = RewardMonitor(cfg)
    whole = feed(full, [(0, {})]) + feed(full, stream)
    first = RewardMonitor(cfg)
    part1 = feed(first, stream[:7])
    resumed = RewardMonitor(cfg)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    part2 = feed(resumed, stream[7:])
    assert part1 + part2 == whole and resumed.alarms == full.alarms
    assert {"entropy_collapse", "length_explosion", "reward_hacking"} <= set(_kinds(whole))


def test_config_is_strict_and_disabled_monitor_is_silent():
    with pytest.raises(ValidationError, match="did you mean 'kl_limit'"):
        MonitorConfig(actions={"kl_limt": "pause"})
    with pytest.raises(ValidationError):
        MonitorConfig(polcy="pause")
    with pytest.raises(ValidationError):
        MonitorConfig(policy="stop")
    mon = RewardMonitor(MonitorConfig(enabled=False, kl_max=0.1))
    assert mon.observe_step(1, _step(kl=5.0)) == [] and mon.observe_eval(1, 0.1) == []
    assert set(ALARM_KINDS) >= {"reward_hacking", "kl_limit"}
    assert Alarm("kl_limit", 3, "m", {"kl": 1.0}, "pause").as_dict()["action"] == "pause"


def test_no_signal_alarm_fires_early_with_the_advice_and_the_default_watcher_sees_only_it():
    from rft.train.monitor import RewardMonitor as RM

    mon = RM(MonitorConfig())  # default: 3 steps in a row
    hits = [s for s in range(1, 6) if mon.observe_step(s, _step(zero_std=1.0))]
    assert hits == [3]
    msg = mon.alarms[0].message
    assert "warm start" in msg and "dynamic sampling" in msg and "answer extraction" in msg and "partial-credit" in msg
    # the loop's watcher for jobs without rft.monitor: the no-signal alarm only
    only = RM(MonitorConfig(zero_variance_steps=1, kl_max=1.0), kinds=("reward_variance_vanished",))
    assert _kinds(only.observe_step(1, _step(zero_std=1.0, kl=1e9))) == ["reward_variance_vanished"]
