"""Roles on every `rft` command (rft.cli.permissions), and the walkthrough of the note.

- the command tree and COMMAND_ROLES list the same commands: a command added later without a role fails here;
- every role against every state-changing command through `authorize` (the function the root callback calls),
  and a few of them through the installed `rft` to prove the callback is wired;
- the walkthrough: a trainer trains a tiny job, an approver approves, the policy needs a second approver, the
  creator's own approval is refused, promotion succeeds and `rft audit` names each user.
"""

from __future__ import annotations

import json

import pytest
import typer

from rft.cli import permissions
from rft.registry import Registry
from rft.registry.access import RANK, PermissionDenied, current_principal, set_process_principal
from tests.clitools import assert_user_error, run_rft
from tests.jobspecs import tiny_job_file

ROLES = ("viewer", "trainer", "approver", "admin")


@pytest.fixture(autouse=True)
def _no_process_user():
    set_process_principal(None)
    yield
    set_process_principal(None)


def _paths(cmd, prefix=()):
    subs = getattr(cmd, "commands", None)
    if not subs:
        yield " ".join(prefix)
        return
    for name, sub in subs.items():
        yield from _paths(sub, (*prefix, name))


def test_every_command_has_a_role_and_every_role_a_command():
    from rft.cli.main import app

    paths = set(_paths(typer.main.get_command(app)))
    assert {"train", "jobs pause", "checkpoints approve", "aliases policy", "users add"} <= paths
    missing = sorted(paths - set(permissions.COMMAND_ROLES))
    assert not missing, f"commands without a role in rft.cli.permissions.COMMAND_ROLES: {missing}"
    assert not sorted(set(permissions.COMMAND_ROLES) - paths), "COMMAND_ROLES names commands that do not exist"
    assert set(permissions.COMMAND_ROLES.values()) <= set(RANK)


def _tokens() -> dict[str, str]:
    reg = Registry()
    return {role: reg.add_user(f"u-{role}", role, by="setup")[1] for role in ("admin", "viewer", "trainer", "approver")}


def test_every_role_against_every_command(monkeypatch):
    toks = _tokens()
    for path, need in sorted(permissions.COMMAND_ROLES.items()):
        for role in ROLES:
            monkeypatch.setenv("RFT_TOKEN", toks[role])
            if RANK[role] < RANK[need]:
                with pytest.raises(PermissionDenied, match=f"u-{role}' \\({role}\\) may not run `rft {path}`: it "
                                                           f"needs the {need} role"):
                    permissions.authorize(path, [])
            else:
                permissions.authorize(path, [])
                assert current_principal().name == f"u-{role}"
    monkeypatch.setenv("RFT_TOKEN", toks["viewer"])
    permissions.authorize("aliases policy", ["production", "--show"])  # read-only with --show
    with pytest.raises(PermissionDenied):
        permissions.authorize("aliases policy", ["production", "--min-approvals", "2"])
    permissions.authorize("train", ["-h"])  # help needs no role
    with pytest.raises(PermissionDenied, match="has no role"):
        permissions.authorize("someday new-command", [])
    monkeypatch.delenv("RFT_TOKEN")
    with pytest.raises(PermissionDenied, match="set RFT_TOKEN"):
        permissions.authorize("jobs list", [])


def test_without_users_the_cli_is_a_local_admin(monkeypatch):
    monkeypatch.setenv("RFT_TOKEN", "ignored")
    permissions.authorize("users add", [])
    assert current_principal() is None and permissions.actor("ann") == "ann" and permissions.single_user()


def test_the_installed_rft_checks_roles_tokens_and_by(tmp_path):
    r = run_rft("users", "add", "ada", "--role", "admin", "--json")  # no users yet: the local admin may
    assert r.returncode == 0, r.stderr
    ada = json.loads(r.stdout)["token"]
    r = run_rft("users", "add", "tom", "--role", "trainer", "--team", "red", "--json", env={"RFT_TOKEN": ada})
    tom = json.loads(r.stdout)["token"]
    assert_user_error(run_rft("jobs", "list"), "this registry has users, so set RFT_TOKEN")
    assert_user_error(run_rft("jobs", "list", env={"RFT_TOKEN": "rft_guess"}), "not a valid token")
    assert_user_error(run_rft("checkpoints", "approve", "ckpt-1", "--note", "x", env={"RFT_TOKEN": tom}),
                      "user 'tom' (trainer) may not run `rft checkpoints approve`: it needs the approver role")
    assert_user_error(run_rft("users", "list", env={"RFT_TOKEN": tom}), "needs the admin role")
    assert_user_error(run_rft("promote", "ckpt-1", "--alias", "production", "--by", "someone", env={"RFT_TOKEN": ada}),
                      "--by someone: with users configured")
    listed = json.loads(run_rft("users", "list", "--json", env={"RFT_TOKEN": ada}).stdout)
    assert [u["name"] for u in listed] == ["ada", "tom"] and not any("token" in k and k != "token_hint"
                                                                     for u in listed for k in u)
    r = run_rft("users", "rotate", "tom", "--json", env={"RFT_TOKEN": ada})
    new = json.loads(r.stdout)["token"]
    assert_user_error(run_rft("jobs", "list", env={"RFT_TOKEN": tom}), "not a valid token")
    assert run_rft("jobs", "list", "--json", env={"RFT_TOKEN": new}).returncode == 0
    assert run_rft("users", "revoke", "tom", env={"RFT_TOKEN": ada}).returncode == 0
    assert_user_error(run_rft("jobs", "list", env={"RFT_TOKEN": new}), "not a valid token")
    audit = json.loads(run_rft("audit", "--json", env={"RFT_TOKEN": ada}).stdout)
    assert [(a["actor"], a["action"]) for a in audit][1:] == [("ada", "user.add"), ("ada", "user.rotate"),
                                                              ("ada", "user.revoke")]


def test_walkthrough_trainer_approvers_policy_audit(tmp_path, tiny_model_dir):
    """The note's walkthrough (docs: the transcript in the report runs the same commands)."""
    def rft(user, *args, ok=True):
        r = run_rft(*map(str, args), env={"RFT_TOKEN": toks[user]} if user else None)
        if ok:
            assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
        return r

    toks = {}
    toks["ada"] = json.loads(rft(None, "users", "add", "ada", "--role", "admin", "--json").stdout)["token"]
    for name, role in (("bob", "approver"), ("ann", "approver"), ("carl", "approver"), ("tom", "trainer")):
        toks[name] = json.loads(rft("ada", "users", "add", name, "--role", role, "--json").stdout)["token"]
    rft("ada", "aliases", "policy", "production", "--require-gates", "--min-approvals", "2", "--separation-of-duties",
        "--min-eval-items", "4")
    job = json.loads(rft("bob", "train", tiny_job_file(tmp_path, tiny_model_dir, eval_interval=2), "-o", tmp_path / "run", "-q",
                         "--json").stdout)
    assert Registry().get_job(job["id"])["created_by"] == "bob"
    ckpt = job["fine_tuned_model_checkpoint"].removeprefix("ckpt:")
    assert_user_error(rft("tom", "checkpoints", "approve", ckpt, "--note", "x", ok=False), "needs the approver role")
    rft("ann", "checkpoints", "approve", ckpt, "--note", "beats baseline")
    r = rft("ada", "promote", ckpt, "--alias", "production", ok=False)
    assert_user_error(r, "refused by its policy (version 1)", "min_approvals: needs 2 approval(s) from distinct "
                                                              "approvers other than the job's creator, has 1 (ann)")
    assert_user_error(rft("bob", "checkpoints", "approve", ckpt, "--note", "mine", ok=False),
                      f"separation of duties: bob created job {job['id']} and cannot approve")
    rft("carl", "checkpoints", "approve", ckpt, "--note", "second pair of eyes")
    assert "alias:production -> " + ckpt in rft("ada", "promote", ckpt, "--alias", "production").stdout
    audit = json.loads(rft("tom", "audit", "--json").stdout)  # viewers and up read the audit log
    acts = [(a["actor"], a["action"]) for a in audit if a["action"] not in ("user.add",)]
    assert acts == [("ada", "alias.policy"), ("bob", "job.create"), ("ann", "checkpoint.approve"), ("carl", "checkpoint.approve"),
                    ("ada", "alias.promote")], acts
    promo = json.loads(rft("ada", "audit", "--subject", "alias:production", "--json").stdout)[-1]
    assert promo["actor"] == "ada" and promo["after"]["checkpoint_id"] == ckpt and promo["detail"]["policy_version"] == 1
