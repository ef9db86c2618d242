"""Secrets in a job spec are write-only: rft runs with them, and the job API and the dashboard never show them back
(catalogue W-series: no secrets in pages or logs). Keys should be `${ENV_VAR}` references; those stay visible."""

from __future__ import annotations

import yaml

from rft.config import REDACTED, redact_secrets
from rft.serve.api_jobs import job_object
from rft.serve.dashboard import _redacted_yaml

SECRET = "sk-live-0123456789abcdef"
GRADER = {"type": "endpoint", "name": "svc", "url": "https://grader.example/score",
          "headers": {"Authorization": f"Bearer {SECRET}", "X-Key": "${GRADER_KEY}"}}
METHOD = {"type": "reinforcement", "reinforcement": {"grader": {"type": "multi", "graders": {"a": GRADER},
                                                                 "calculate_output": "a", "api_key": SECRET}}}


def test_redact_secrets_hides_literal_keys_and_keeps_env_references():
    out = redact_secrets({"method": METHOD, "note": "keep me", "api_key_env": "OPENAI_API_KEY"})
    g = out["method"]["reinforcement"]["grader"]
    assert g["graders"]["a"]["headers"] == {"Authorization": REDACTED, "X-Key": "${GRADER_KEY}"}
    assert g["api_key"] == REDACTED and out["note"] == "keep me" and out["api_key_env"] == "OPENAI_API_KEY"
    assert SECRET not in repr(out) and SECRET in repr(METHOD)  # a copy: the spec that runs keeps its key


def test_the_job_object_and_the_dashboard_config_do_not_show_secrets():
    row = {"id": "ftjob-x", "created_at": 1, "status": "running", "model": "m", "spec": {"method": METHOD}}
    assert SECRET not in repr(job_object(row))
    shown = _redacted_yaml("# sha256 of canonical JSON: abc\n" + yaml.safe_dump({"model": "m", "method": METHOD}))
    assert shown.startswith("# sha256 of canonical JSON: abc\n") and SECRET not in shown
    assert yaml.safe_load(shown)["method"]["reinforcement"]["grader"]["graders"]["a"]["headers"]["X-Key"] == "${GRADER_KEY}"
    assert "not shown" in _redacted_yaml("a: [unclosed")
