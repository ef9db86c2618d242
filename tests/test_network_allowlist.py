"""The endpoint grader's SSRF allowlist reaches every place a grader is built: the job spec
(`rft.network.allow_private_hosts`), the training loop's grader context, and `rft grader validate|run
--allow-private-host` (catalogue W7). Without it a loopback endpoint is refused at validation time."""

from __future__ import annotations

import json

import pytest

from rft.jobcheck import parse_job
from rft.errors import RftError
from rft.train.setup import grader_context
from tests.clitools import assert_user_error, run_rft

GRADER = {"type": "endpoint", "name": "ep", "url": "http://127.0.0.1:9/grade"}


def _raw(**network):
    raw = {"model": "smollm2-135m-instruct", "training_file": "builtin:arithmetic",
           "method": {"type": "reinforcement", "reinforcement": {"grader": GRADER}}}
    if network:
        raw["rft"] = {"network": network}
    return raw


def test_job_spec_refuses_loopback_endpoint_unless_allowed():
    with pytest.raises(RftError) as ei:
        parse_job(_raw())
    assert "127.0.0.1" in str(ei.value) and "method.reinforcement.grader" in str(ei.value)
    job = parse_job(_raw(allow_private_hosts=["127.0.0.1"]))
    assert grader_context(job).allow_private_hosts == ("127.0.0.1",)
    with pytest.raises(RftError, match="allow_private_hosts"):
        parse_job(_raw(allow_private_hosts=["http://x/"]))


def test_cli_allow_private_host(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps(GRADER))
    assert_user_error(run_rft("grader", "validate", str(g)), "127.0.0.1")
    r = run_rft("grader", "validate", str(g), "--allow-private-host", "127.0.0.0/8")
    assert r.returncode == 0, r.stderr
