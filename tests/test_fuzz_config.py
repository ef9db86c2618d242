"""Property-based tests: generated job specs and overrides; the only exception that may escape is RftError.

`parse_job` (rft.jobcheck's full check) gets generated dicts (wrong kinds everywhere, NaN, inf, huge ints, deep nesting, random keys) and
valid specs with one known key replaced by a generated value; `parse_override` / `apply_overrides` get
generated strings and key=value pairs. Examples are few (the suite runs on 2 cores) but aimed at the keys.

Run: .venv/bin/python -m pytest -q tests/test_fuzz_config.py
"""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft.config import apply_overrides, numeric_fields, parse_override
from rft.errors import RftError
from rft.jobcheck import parse_job  # the full check every entry point runs (schema, names, grader, cross-field)

BASE = {"training_file": "builtin:arithmetic",
        "method": {"type": "reinforcement", "reinforcement": {"grader": {
            "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}}}}

KEYS = [r.key for r in numeric_fields()] + [
    "model", "training_file", "validation_file", "suffix", "metadata", "integrations", "method", "method.type",
    "method.reinforcement", "method.reinforcement.grader", "method.reinforcement.grader.type",
    "method.reinforcement.hyperparameters", "method.reinforcement.hyperparameters.reasoning_effort", "rft",
    "rft.sampling", "rft.sampling.stop", "rft.algorithm.loss", "rft.algorithm.advantage", "rft.extraction.pattern",
    "rft.network.allow_private_hosts", "rft.monitor", "rft.monitor.actions", "rft.gates", "rft.optimizer.schedule",
    "rft.lora.targets", "rft.eval.guard_grader", "rft.train.device"]

SETTINGS = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**200), max_value=2**200),
    st.just(10**4000), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["auto", "nan", "inf", "1e9", "-0", "0x10", "", " ", "\x00", "ü" * 5]))
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)), max_leaves=12)


def _deep(depth: int, kind: str):
    v: object = 1
    for _ in range(depth):
        v = [v] if kind == "list" else {"a": v}
    return v


deep = st.builds(_deep, st.integers(min_value=60, max_value=3000), st.sampled_from(["list", "dict"]))


def _only_rft_error(fn, *args) -> None:
    try:
        fn(*args)
    except RftError:
        pass


def _set(raw: dict, key: str, value) -> dict:
    cur = raw
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[parts[-1]] = value
    return raw


@SETTINGS
@given(st.dictionaries(st.sampled_from(["model", "training_file", "method", "rft", "seed", "metadata", "x"]) | st.text(max_size=6),
                       values | deep, max_size=6))
def test_parse_job_on_generated_dicts(raw):
    _only_rft_error(parse_job, raw, "job.yaml")


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), values | deep), min_size=1, max_size=3))
def test_parse_job_with_known_keys_replaced(changes):
    raw = copy.deepcopy(BASE)
    for key, value in changes:
        _set(raw, key, value)
    _only_rft_error(parse_job, raw, "job.yaml")


@SETTINGS
@given(st.one_of(st.text(max_size=60), st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(max_size=20),
                                                 st.text(max_size=40)),
                 st.builds(lambda k, n: f"{k}=" + "[" * n, st.sampled_from(KEYS), st.integers(0, 20_000)),
                 st.builds(lambda k, v: f"{k}={v!r}", st.sampled_from(KEYS), values)))
def test_overrides_on_generated_strings(text):
    _only_rft_error(parse_override, text)

    def apply_and_parse(t):
        parse_job(apply_overrides(copy.deepcopy(BASE), [t]), "job.yaml")

    _only_rft_error(apply_and_parse, text)
