"""builtin:reasoning_gym/<task>?<config field>=<value>: the task's config from the reference (issue 14)."""

from __future__ import annotations

import json

import pytest

from rft.data import load_dataset
from rft.data.reasoning_gym_tasks import reasoning_gym_score, task_config, task_config_fields
from rft.errors import RftError
from tests.clitools import assert_user_error, run_rft

SMALL = "builtin:reasoning_gym/chain_sum?n=30&min_terms=2&max_terms=2&min_digits=1&max_digits=1"


def test_config_options_shape_the_items_and_the_source():
    ds = load_dataset(SMALL)
    assert len(ds) == 30
    for row in ds.rows:
        q = row["messages"][0]["content"].rsplit(":", 1)[1].strip().rstrip("=").split()
        assert len(q) == 3 and all(len(t) == 1 for t in q[::2]), q  # "a op b", one digit each
        assert reasoning_gym_score("chain_sum", row["answer"], json.loads(json.dumps(row["rg_entry"]))) == 1.0
    # the options are part of the source (sorted), and the fingerprint differs from the default config's
    assert ds.source == ("builtin:reasoning_gym/chain_sum?split=train&n=30&seed=0"
                         "&max_digits=1&max_terms=2&min_digits=1&min_terms=2")
    default = load_dataset("builtin:reasoning_gym/chain_sum?n=30")
    assert default.source == "builtin:reasoning_gym/chain_sum?split=train&n=30&seed=0"
    assert default.sha256 != ds.sha256
    assert load_dataset("builtin:reasoning_gym/chain_sum?n=30&min_terms=3&max_terms=3&min_digits=1&max_digits=1"
                        ).sha256 != ds.sha256
    # same config, same rows (the order of the options does not matter)
    again = load_dataset("builtin:reasoning_gym/chain_sum?max_digits=1&min_digits=1&max_terms=2&min_terms=2&n=30")
    assert again.sha256 == ds.sha256 and again.source == ds.source


def test_values_are_coerced_from_the_field_types():
    fields = task_config_fields("basic_arithmetic")
    assert "size" not in fields and "seed" not in fields and "operators" in fields
    cfg = task_config("basic_arithmetic", [("max_terms", "2"), ("allow_parentheses", "false"),
                                           ("allow_negation", "No"), ("operators", "+,-"),
                                           ("format_style", "natural"), ("whitespace", "no_space")])
    assert cfg == {"max_terms": 2, "allow_parentheses": False, "allow_negation": False,
                   "operators": ["+", "-"], "format_style": "natural", "whitespace": "no_space"}
    assert task_config("products", [("allow_negation", "1"), ("max_digits", "3")]) == {
        "allow_negation": True, "max_digits": 3}
    assert task_config("basic_arithmetic", [("operators", "%2A")]) == {"operators": ["*"]}  # %-decoded


@pytest.mark.parametrize("options, needles", [
    ([("min_term", "2")], ["'min_term' is not a setting of reasoning-gym's chain_sum", "did you mean 'min_terms'",
                           "min_terms, max_terms, min_digits, max_digits, allow_negation"]),
    ([("min_terms", "two")], ["option 'min_terms' must be an integer, got 'two'"]),
    ([("allow_negation", "maybe")], ["option 'allow_negation' must be true or false, got 'maybe'"]),
    ([("size", "5")], ["'size' with the reference's 'n' option"]),
])
def test_bad_options_name_the_option(options, needles):
    with pytest.raises(RftError) as e:
        task_config("chain_sum", options)
    text = str(e.value) + str(e.value.hint or "")
    for n in needles:
        assert n in text, (n, text)


def test_literal_and_unsupported_types():
    with pytest.raises(RftError, match="must be one of simple, natural, got 'fancy'"):
        task_config("basic_arithmetic", [("format_style", "fancy")])
    with pytest.raises(RftError, match="cannot be set from a dataset reference"):
        task_config("arc_agi", [("board_format_opts", "x")])


def test_the_tasks_own_validate_message_is_quoted():
    with pytest.raises(RftError, match="'max_terms must be >= min_terms'"):
        load_dataset("builtin:reasoning_gym/chain_sum?n=3&min_terms=4&max_terms=2")


def test_other_builtins_still_reject_unknown_options():
    with pytest.raises(RftError, match="bad option 'min_terms=2'"):
        load_dataset("builtin:arithmetic?min_terms=2")
    with pytest.raises(RftError, match="option 'min_terms' is given twice"):
        load_dataset("builtin:reasoning_gym/chain_sum?min_terms=2&min_terms=3")


def test_cli_unknown_config_option_is_a_user_error():
    r = run_rft("data", "validate", "builtin:reasoning_gym/chain_sum?n=5&max_term=2")
    assert_user_error(r, "'max_term' is not a setting of reasoning-gym's chain_sum", "max_terms")
    r = run_rft("data", "validate", "builtin:reasoning_gym/chain_sum?n=5&min_digits=0")
    assert_user_error(r, "'min_digits must be positive'")
    ok = run_rft("data", "validate", SMALL, "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
