"""Job spec parsing (the schema in rft.config, the full check in rft.jobcheck), OpenAI hyperparameter mapping,
overrides and the resolved-config hash."""

from __future__ import annotations

import pytest

from rft import jobcheck
from rft.config import apply_overrides, config_sha256, load_job, parse_job, resolve, resolved_dict
from rft.errors import RftError

BASE = {"training_file": "builtin:arithmetic",
        "method": {"type": "reinforcement", "reinforcement": {"grader": {
            "type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}}}}


def _raw(**kw):
    import copy

    r = copy.deepcopy(BASE)
    r.update(kw)
    return r


def test_auto_hyperparameters_resolve_to_concrete_values():
    job = parse_job(_raw())
    d = resolve(job, n_train_rows=100)
    assert d.prompts_per_step == 2 and d.n_epochs == 1 and d.total_steps == 50
    assert d.learning_rate == pytest.approx(2e-5) and d.completions_per_prompt == 8
    assert d.eval_interval == 12


def test_openai_hyperparameters_map():
    raw = _raw()
    raw["method"]["reinforcement"]["hyperparameters"] = {
        "batch_size": 4, "n_epochs": 2, "learning_rate_multiplier": 0.5, "eval_interval": 5, "eval_samples": 3,
        "compute_multiplier": 2.0}
    d = resolve(parse_job(raw), n_train_rows=10).as_dict()
    assert d == {"prompts_per_step": 4, "completions_per_prompt": 16, "n_epochs": 2, "steps_per_epoch": 3,
                 "total_steps": 6, "learning_rate": pytest.approx(1e-5), "eval_interval": 5, "eval_samples": 3}


def test_unknown_keys_everywhere_are_errors():
    with pytest.raises(RftError) as e:
        parse_job(_raw(rft={"sampling": {"temprature": 1.0}, "optimiser": {}}))
    text = str(e.value)
    assert "did you mean 'temperature'" in text and "did you mean 'optimizer'" in text
    with pytest.raises(RftError, match="batch_sise"):
        raw = _raw()
        raw["method"]["reinforcement"]["hyperparameters"] = {"batch_sise": 3}
        parse_job(raw)


def test_bad_values_and_algorithm_names():
    with pytest.raises(RftError, match="rft.algorithm.loss"):
        jobcheck.parse_job(_raw(rft={"algorithm": {"loss": "ppo"}}))
    with pytest.raises(RftError, match="rft.sampling.n"):
        jobcheck.parse_job(_raw(rft={"sampling": {"n": 1}}))
    with pytest.raises(RftError, match="suffix"):
        jobcheck.parse_job(_raw(suffix="x" * 65))
    # rft.config is the schema alone (a leaf below rft.algo): a registered name is checked one layer up
    assert parse_job(_raw(rft={"algorithm": {"loss": "ppo"}})).rft.algorithm.loss == "ppo"


def test_the_full_check_reports_every_problem_at_once_in_order():
    """Registered names, the grader, the extraction pattern and the cross-field ranges: one RftError, in that
    order, each with its field and the did-you-mean (the messages are those parse_job gave before the split)."""
    raw = _raw(rft={"algorithm": {"advantage": "rlo", "loss": "dr_grpoo", "epsilon": 0.3, "epsilon_high": 0.2},
                    "extraction": {"pattern": "(("}})
    raw["method"]["reinforcement"]["grader"] = {"type": "string_chek"}
    with pytest.raises(RftError) as e:
        jobcheck.parse_job(raw, "job.yaml")
    assert str(e.value).startswith("invalid job spec job.yaml")
    fields = [p.field for p in e.value.problems]
    assert fields == ["rft.algorithm.advantage", "rft.algorithm.loss", "method.reinforcement.grader.type",
                      "rft.extraction.pattern", "rft.algorithm.epsilon_high"]
    msgs = [p.message for p in e.value.problems]
    assert msgs[0] == "unknown advantage 'rlo' (did you mean 'rloo'?); valid: grpo, dr_grpo, rloo"
    assert msgs[1].startswith("unknown loss 'dr_grpoo' (did you mean 'dr_grpo'?); valid: ")
    assert "string_check" in msgs[2]
    assert msgs[3].startswith("invalid regular expression: ")
    assert msgs[4] == "must be >= rft.algorithm.epsilon (0.3), got 0.2"
    assert {p.file for p in e.value.problems} == {"job.yaml"}
    # the schema-only parse sees only what the spec alone can tell
    with pytest.raises(RftError) as e2:
        parse_job(raw, "job.yaml")
    assert [p.field for p in e2.value.problems] == ["rft.extraction.pattern", "rft.algorithm.epsilon_high"]


def test_the_full_check_uses_the_jobs_own_network_allowlist(tmp_path):
    import json

    raw = _raw()
    raw["method"]["reinforcement"]["grader"] = {"type": "endpoint", "name": "e", "url": "http://127.0.0.1:9/grade"}
    with pytest.raises(RftError, match="method.reinforcement.grader"):
        jobcheck.parse_job(raw)
    raw["rft"] = {"network": {"allow_private_hosts": ["127.0.0.1"]}}
    assert jobcheck.parse_job(raw).grader["type"] == "endpoint"
    p = tmp_path / "job.json"
    p.write_text(json.dumps(raw))
    assert jobcheck.load_job(p, ["seed=3"]).seed == 3
    with pytest.raises(RftError, match="rft.algorithm.loss"):
        jobcheck.load_job(p, ["rft.algorithm.loss=ppo"])


def test_overrides_and_hash(tmp_path):
    import json

    p = tmp_path / "job.json"
    p.write_text(json.dumps(BASE))
    job = load_job(p, ["rft.sampling.temperature=0.5", "seed=7", 'rft.sampling.stop=["\\n"]'])
    assert job.rft.sampling.temperature == 0.5 and job.seed == 7 and job.rft.sampling.stop == ["\n"]
    h1 = config_sha256(resolved_dict(job, resolve(job, 10)))
    h2 = config_sha256(resolved_dict(load_job(p, ["rft.sampling.temperature=0.5", "seed=7", 'rft.sampling.stop=["\\n"]']), resolve(job, 10)))
    h3 = config_sha256(resolved_dict(load_job(p, ["seed=8"]), resolve(job, 10)))
    assert h1 == h2 != h3
    with pytest.raises(RftError):
        apply_overrides({}, ["novalue"])


def test_quickstart_example_parses():
    from pathlib import Path

    job = jobcheck.load_job(Path(__file__).parents[1] / "examples" / "quickstart.yaml")
    assert job.grader["type"] == "string_check"


# --------------------------------------------------------------------------------- hostile job files
# Every way a job file can be wrong gives one message naming the file, exit 2, through the installed `rft`.
# (name, how to make it in a folder -> path, what the message must say)
def _write(name: str, data: bytes | str):
    def make(d):
        p = d / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p
    return make


def _dir(d):
    (d / "job.yaml").mkdir()
    return d / "job.yaml"


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

JOB_FILE_CASES = [
    ("missing", lambda d: d / "nope.yaml", ["job spec not found"]),
    ("directory", _dir, ["is a directory"]),
    ("binary", _write("job.yaml", b"model: x\n\x00\x01\x02\xff"), ["job.yaml:2", "binary"]),
    ("non-utf8", _write("job.yaml", b"model: x\ntraining_file: caf\xe9\n"), ["job.yaml:2", "not valid UTF-8"]),
    ("invalid-yaml", _write("job.yaml", "model: x\nmethod: [\n"), ["job.yaml:", "not valid YAML"]),
    ("yaml-list", _write("job.yaml", "- model: x\n"), ["must be a mapping", "got an array"]),
    ("json-list", _write("job.json", "[1, 2]"), ["must be a mapping"]),
    ("json-invalid", _write("job.json", '{"model": "x",\n "seed": NaN}'), ["job.json", "not valid JSON"]),
    ("json-deep", _write("job.json", "[" * 100_000 + "]" * 100_000), ["nest"]),
    ("yaml-deep", _write("job.yaml", "a: " + "[" * 100_000 + "]" * 100_000), ["nest"]),
    ("yaml-alias-bomb", _write("job.yaml", BOMB), ["alias"]),
    ("huge-int", _write("job.yaml", "seed: " + "9" * 5000 + "\n"), ["cannot be read"]),
    ("huge-line", _write("job.yaml", "model: " + "x" * (5 * 1024 * 1024)), ["bytes", "limit"]),
    ("long-name", lambda d: d / ("j" * 300 + ".yaml"), ["longer than the file system allows"]),
]


PREFLIGHT_TOO = {"missing", "binary", "yaml-list", "yaml-alias-bomb", "long-name"}


@pytest.mark.parametrize("case", JOB_FILE_CASES, ids=[c[0] for c in JOB_FILE_CASES])
def test_hostile_job_files_through_the_cli(tmp_path, case):
    from tests.clitools import assert_user_error, run_rft

    _, make, needles = case
    p = make(tmp_path)
    before = sorted(x.name for x in tmp_path.iterdir())
    # `rft preflight` reads the file the same way (load_job); running it for a few classes keeps the suite quick
    for command in ("train", "preflight") if case[0] in PREFLIGHT_TOO else ("train",):
        r = run_rft(command, str(p), timeout=120)
        assert_user_error(r, str(p)[:150], *needles)
        assert len((r.stdout + r.stderr).strip().splitlines()) <= 3, r.stderr  # one message (and a hint)
    assert sorted(x.name for x in tmp_path.iterdir()) == before  # nothing written next to it


@pytest.mark.parametrize("override, needle", [
    ("a..b=1", "empty part"),
    (".seed=1", "empty part"),
    ("seed.=1", "empty part"),
    ("rft.sampl ing.n=4", "not a name"),
    ("=4", "empty key"),
    ("novalue", "not key=value"),
    ("seed.x=1", "'seed' is not a section"),
    ("rft.sampling.stop.0=x", "'rft.sampling.stop' is not a section"),
    ("rft.sampling.n=" + "[" * 50_000, "nests too deeply"),
    ("rft.sampling.stop=[&a [x, x], *a, *a]", "aliases"),
    ("rft.sampling.stop=" + "x" * 200_000, "the limit is"),
    ("seed=" + "9" * 5000, "cannot be read"),
])
def test_malformed_overrides_are_rft_errors(override, needle):
    raw = _raw(seed=3, rft={"sampling": {"stop": ["\n"]}})
    with pytest.raises(RftError, match=needle):
        apply_overrides(raw, [override])


def test_malformed_override_through_the_cli(tmp_path):
    from tests.clitools import assert_user_error, run_rft

    import json

    p = tmp_path / "job.json"
    p.write_text(json.dumps(BASE))
    assert_user_error(run_rft("train", str(p), "rft..sampling=1"), "rft..sampling", "empty part")
    assert_user_error(run_rft("train", str(p), "training_file.x=1"), "'training_file' is not a section")
