"""Users, tokens, promotion policies and team isolation in the registry (rft.registry.access), in-process.

The CLI and HTTP front ends are tested in tests/test_permissions_cli.py and tests/serve/test_permissions_http.py;
here the rules themselves: token hashing, revocation and rotation, each policy rule, separation of duties, the
admin override, trainers acting on their own jobs only, and team isolation of jobs, checkpoints and files.
"""

from __future__ import annotations

import hashlib

import pytest

from rft.errors import RftError
from rft.registry import Registry
from rft.registry.access import (PermissionDenied, PolicyRefused, Principal, acting_as, set_process_principal,
                                 token_digest)
from rft.registry.db import users


@pytest.fixture(autouse=True)
def _no_process_user():
    set_process_principal(None)
    yield
    set_process_principal(None)


def _ckpt(reg, tmp_path, job_id="ftjob-1", *, creator="tom", team=None, passed=True, n_items=50):
    """A job created by `creator` with one active checkpoint, a gate verdict and an evaluation of n items."""
    with acting_as(Principal(creator, "trainer", team)):
        reg.create_job(job_id, spec={}, model="m", run_dir=str(tmp_path / job_id))
    d = tmp_path / job_id / "ck"
    d.mkdir(parents=True)
    cid = reg.add_checkpoint(job_id, 1, str(d), "0" * 64, is_final=True)
    reg.add_verdict(cid, {"passed": passed, "checks": [] if passed else [{"name": "min_improvement", "passed": False,
                                                                        "value": -0.1, "threshold": 0.0}]})
    reg.add_eval_report("final", {"n": n_items, "accuracy": 0.5}, job_id=job_id, checkpoint_id=cid)
    return cid


def test_tokens_are_stored_as_sha256_only_and_work_until_rotated_or_revoked():
    reg = Registry()
    assert not reg.has_users()
    with pytest.raises(RftError, match="first user must be an admin"):
        reg.add_user("tom", "trainer")
    ada, ada_tok = reg.add_user("ada", "admin", by="root")
    tom, tom_tok = reg.add_user("tom", "trainer", "red", by="ada")
    assert reg.has_users() and ada_tok.startswith("rft_") and len(ada_tok) >= 40 and ada_tok != tom_tok
    with reg.engine.connect() as c:
        stored = dict(c.execute(users.select().where(users.c.name == "tom")).first()._mapping)
    assert stored["token_sha256"] == hashlib.sha256(tom_tok.encode()).hexdigest() == token_digest(tom_tok)
    assert tom_tok not in str(stored.values()) and "token_sha256" not in tom and tom["token_hint"] == tom_tok[:8]
    assert reg.authenticate(tom_tok) == Principal("tom", "trainer", "red")
    assert reg.authenticate(tom_tok + "x") is None and reg.authenticate("") is None
    with pytest.raises(RftError, match="already exists"):
        reg.add_user("TOM", "viewer")
    with pytest.raises(RftError, match="unknown role 'approvr'.*did you mean 'approver'"):
        reg.add_user("ann", "approvr")
    _, new_tok = reg.rotate_user("tom", by="ada")
    assert reg.authenticate(tom_tok) is None and reg.authenticate(new_tok).name == "tom"
    reg.revoke_user("tom", by="ada")
    assert reg.authenticate(new_tok) is None and reg.principal("tom") is None
    with pytest.raises(RftError, match="last active admin"):
        reg.revoke_user("ada")
    assert [r["status"] for r in reg.list_users()] == ["active", "revoked"]
    acts = [(r["actor"], r["action"], r["subject"]) for r in reg.audit_log() if r["action"].startswith("user.")]
    assert acts == [("root", "user.add", "user:ada"), ("ada", "user.add", "user:tom"), ("ada", "user.rotate", "user:tom"),
                    ("ada", "user.revoke", "user:tom")]


def test_each_policy_rule_refuses_and_names_itself(tmp_path):
    reg = Registry()
    cid = _ckpt(reg, tmp_path, passed=False, n_items=10)
    reg.approve(cid, by="ann", note="ok", override="demo")  # gates failed: approved only with an override
    reg.set_policy("production", {"require_gates": True}, by="ada")
    with pytest.raises(PolicyRefused, match="require_gates: it failed its quality gates"):
        reg.promote(cid, "production", by="ada")
    reg.set_policy("production", {"min_approvals": 2}, by="ada")
    with pytest.raises(PolicyRefused, match=r"min_approvals: needs 2 approval\(s\) from distinct approvers, has 1 \(ann\)"):
        reg.promote(cid, "production", by="ada")
    with pytest.raises(RftError, match="already approved by ann"):
        reg.approve(cid, by="ann", note="again", override="demo")
    reg.set_policy("production", {"min_eval_items": 200}, by="ada")
    with pytest.raises(PolicyRefused, match="min_eval_items: evaluated on 10 items, needs at least 200"):
        reg.promote(cid, "production", by="ada")
    reg.set_policy("production", {"max_grader_disagreement": 0.1}, by="ada")
    with pytest.raises(PolicyRefused, match="max_grader_disagreement: grader disagreement cannot be measured yet"):
        reg.promote(cid, "production", by="ada")
    reg.set_policy("production", {"min_eval_items": 10, "min_approvals": 1}, by="ada")
    assert reg.promote(cid, "production", by="ada")["checkpoint_id"] == cid
    hist = reg.policy_history("production")
    assert [h["version"] for h in hist] == [1, 2, 3, 4, 5] and hist[-1]["policy"]["min_eval_items"] == 10
    pol = [r for r in reg.audit_log("alias:production") if r["action"] == "alias.policy"]
    assert len(pol) == 5 and pol[1]["before"]["require_gates"] and pol[1]["after"]["min_approvals"] == 2
    promo = [r for r in reg.audit_log("alias:production") if r["action"] == "alias.promote"][0]
    assert promo["actor"] == "ada" and promo["detail"]["policy_version"] == 5


def test_separation_of_duties_and_the_admin_override(tmp_path):
    reg = Registry()
    cid = _ckpt(reg, tmp_path, creator="bob")
    reg.set_policy("production", {"min_approvals": 2, "separation_of_duties": True}, by="ada")
    with pytest.raises(PolicyRefused, match="separation of duties: bob created job ftjob-1"):
        reg.approve(cid, by="bob", note="mine")
    reg.approve(cid, by="ann", note="ok")
    with pytest.raises(PolicyRefused, match="other than the job's creator, has 1 \\(ann\\)"):
        reg.promote(cid, "production", by="ada")
    # an override needs an admin ...
    with acting_as(Principal("ann", "approver")):
        with pytest.raises(PermissionDenied, match="only an admin may override"):
            reg.promote(cid, "production", override="urgent fix")
    # ... and is recorded with the rules it broke
    with acting_as(Principal("ada", "admin")):
        reg.promote(cid, "production", override="urgent fix")
    row = [r for r in reg.audit_log("alias:production") if r["action"] == "alias.promote"][0]
    assert row["actor"] == "ada" and row["detail"]["override_reason"] == "urgent fix"
    assert any(b.startswith("min_approvals") for b in row["detail"]["broken_rules"])


def test_an_approval_by_the_creator_made_before_the_policy_does_not_count(tmp_path):
    reg = Registry()
    cid = _ckpt(reg, tmp_path, creator="bob")
    reg.approve(cid, by="bob", note="before any policy")
    reg.set_policy("production", {"separation_of_duties": True}, by="ada")
    with pytest.raises(PolicyRefused, match=r"separation_of_duties: the approval by the job's creator \(bob\) does "
                                            r"not count; min_approvals: needs 1"):
        reg.promote(cid, "production", by="ada")
    reg.approve(cid, by="carl", note="second pair of eyes")
    assert reg.promote(cid, "production", by="ada")["checkpoint_id"] == cid


def test_trainers_pause_and_cancel_only_their_own_jobs(tmp_path):
    reg = Registry()
    _ckpt(reg, tmp_path, "ftjob-1", creator="tom")
    reg.update_job("ftjob-1", status="paused")
    with acting_as(Principal("tina", "trainer")):
        with pytest.raises(PermissionDenied, match="tina.*may cancel only their own jobs; job ftjob-1 was created by tom"):
            reg.request("ftjob-1", "cancel")
        with pytest.raises(PermissionDenied):
            reg.check_owner("ftjob-1", "resume")
    with acting_as(Principal("tom", "trainer")):
        assert reg.request("ftjob-1", "cancel")["status"] == "cancelled"
    assert reg.audit_log("ftjob-1")[-1]["actor"] == "tom"
    _ckpt(reg, tmp_path, "ftjob-2", creator="tom")
    reg.update_job("ftjob-2", status="paused")
    with acting_as(Principal("ann", "approver")):  # approvers and admins may act on any job
        assert reg.request("ftjob-2", "cancel")["status"] == "cancelled"


def test_team_members_see_only_their_team(tmp_path):
    reg = Registry()
    red = _ckpt(reg, tmp_path, "ftjob-red", creator="rita", team="red")
    blue = _ckpt(reg, tmp_path, "ftjob-blue", creator="bert", team="blue")
    assert reg.get_job("ftjob-red")["created_by"] == "rita" and reg.get_job("ftjob-red")["team"] == "red"
    with acting_as(Principal("rita", "trainer", "red")):
        reg.record_file("file-red", created_at=1.0, bytes=1, filename="a", purpose="fine-tune", sha256="0" * 64,
                        path=str(tmp_path))
        assert [j["id"] for j in reg.list_jobs()] == ["ftjob-red"]
        with pytest.raises(RftError, match="no job 'ftjob-blue'"):
            reg.get_job("ftjob-blue")
        with pytest.raises(RftError, match="no job 'ftjob-b'"):
            reg.get_job("ftjob-b")  # a prefix does not reveal it either
        with pytest.raises(RftError, match="no checkpoint"):
            reg.get_checkpoint(blue)
        assert reg.get_checkpoint(red)["id"] == red
    with acting_as(Principal("bert", "trainer", "blue")):
        reg.record_file("file-blue", created_at=2.0, bytes=1, filename="b", purpose="fine-tune", sha256="0" * 64,
                        path=str(tmp_path))
        assert reg.get_file("file-red") is None and reg.delete_file("file-red") is None
        assert [f["id"] for f in reg.list_files()[0]] == ["file-blue"]
        with pytest.raises(RftError, match="no job 'ftjob-red'"):
            reg.request("ftjob-red", "cancel")  # another team's job does not exist for bert
    with acting_as(Principal("ada", "admin")):  # no team: everything
        assert {j["id"] for j in reg.list_jobs()} == {"ftjob-red", "ftjob-blue"}
        assert {f["id"] for f in reg.list_files()[0]} == {"file-red", "file-blue"}
    assert reg.get_file("file-red")["team"] == "red" and reg.get_file("file-blue")["created_by"] == "bert"


def test_team_members_see_only_their_teams_batches(tmp_path):
    """W8 for batches: `rft batch list|show` and the Batch API read batch folders; a team member sees only the
    batches the registry records for their team (an admin without a team sees all)."""
    import json

    from rft.batch import create_batch, list_batches, show_batch

    def requests(name):
        p = tmp_path / f"{name}.jsonl"
        p.write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}) + "\n")
        return str(p)

    with acting_as(Principal("rita", "trainer", "red")):
        red = create_batch(requests("red"), model="http://127.0.0.1:9/v1")["id"]
    with acting_as(Principal("bert", "trainer", "blue")):
        blue = create_batch(requests("blue"), model="http://127.0.0.1:9/v1")["id"]
        assert [b["id"] for b in list_batches()] == [blue]
        with pytest.raises(RftError, match="no batch"):
            show_batch(red)
        assert show_batch("batch_")["id"] == blue  # a prefix matching both resolves to the visible one only
    with acting_as(Principal("ada", "admin")):
        assert {b["id"] for b in list_batches()} == {red, blue}


def test_team_members_see_only_their_teams_audit_rows(tmp_path):
    reg = Registry()
    with acting_as(Principal("root", "admin", authenticated=False)):
        reg.add_user("ada", "admin")
        reg.add_user("rita", "trainer", "red")
        reg.add_user("bert", "trainer", "blue")
    _ckpt(reg, tmp_path, "ftjob-red", creator="rita", team="red")
    _ckpt(reg, tmp_path, "ftjob-blue", creator="bert", team="blue")
    reg.audit("rita", "job.note", "ftjob-red")
    reg.audit("bert", "job.note", "ftjob-blue")
    with acting_as(Principal("rita", "trainer", "red")):
        rows = reg.audit_log()
        assert rows and {a["actor"] for a in rows} == {"rita"} and ("rita", "ftjob-red") in {(a["actor"], a["subject"]) for a in rows}
    with acting_as(Principal("ada", "admin")):
        assert {("rita", "ftjob-red"), ("bert", "ftjob-blue")} <= {(a["actor"], a["subject"]) for a in reg.audit_log()}
