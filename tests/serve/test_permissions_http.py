"""Roles on every HTTP route (rft.serve.guard.ROUTE_ROLES, applied by the Access middleware).

- every route of fully built local and remote apps is in the table, and every table entry is a route: a route
  added later without a role fails here;
- every role against every state-changing route (in-process client): below the route's role a 403
  `permission_denied` in OpenAI's shape, at or above it anything but that;
- no users: today's behaviour; users: a token is needed even on loopback; revoked tokens are refused;
- trainers cancel only their own jobs; team members do not see other teams' jobs;
- the dashboard: a user's session, actions recorded as that user, a policy refusal as a 403 page;
- one live check with the openai SDK.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from rft.registry import Registry
from rft.registry.access import Principal, acting_as, set_process_principal
from rft.serve.app import create_app
from rft.serve.guard import PUBLIC, ROUTE_ROLES, iter_routes
from rft.registry.access import RANK

SAMPLE_PARAMS = {"model_id": "m", "file_id": "file-abc", "batch_id": "batch_abc", "job_id": "ftjob-20250101-000000-abcdef",
                 "ckpt_id": "ckpt-1234", "alias": "production", "name": "app.js"}


@pytest.fixture(autouse=True)
def _no_process_user():
    set_process_principal(None)
    yield
    set_process_principal(None)


@pytest.fixture
def local_app(tiny_model_dir, scripted):
    return create_app(str(tiny_model_dir), loader=lambda resolved: scripted())


def _routes(app):
    for r in iter_routes(app.routes):
        for m in sorted(getattr(r, "methods", None) or ()):
            if m != "HEAD":
                yield m, r.path


def test_every_route_has_a_role_and_every_role_a_route(local_app):
    remote = create_app("http://127.0.0.1:9/v1", remote_model="x")
    seen = set(_routes(local_app)) | set(_routes(remote))
    missing = sorted(seen - set(ROUTE_ROLES))
    assert not missing, f"routes without a role in rft.serve.guard.ROUTE_ROLES: {missing}"
    stale = sorted(set(ROUTE_ROLES) - seen)
    assert not stale, f"ROUTE_ROLES entries that are no route: {stale}"
    assert all(v == PUBLIC or v in RANK for v in ROUTE_ROLES.values())


def _users():
    reg = Registry()
    toks = {}
    for name, role, team in (("ada", "admin", None), ("vic", "viewer", None), ("tom", "trainer", "red"),
                             ("tina", "trainer", "red"), ("ann", "approver", None), ("bert", "trainer", "blue")):
        toks[name] = reg.add_user(name, role, team, by="setup")[1]
    return toks


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: SAMPLE_PARAMS[m.group(1)], path)


def _denied(r) -> bool:
    return r.status_code == 403 and '"permission_denied"' in r.text


def test_every_role_against_every_state_changing_route(local_app):
    toks = _users()
    by_role = {"viewer": "vic", "trainer": "tom", "approver": "ann", "admin": "ada"}
    changing = sorted((m, p) for (m, p), role in ROUTE_ROLES.items() if m != "GET" and role != PUBLIC)
    assert len(changing) >= 12
    with TestClient(local_app) as c:
        for method, path in changing:
            need = ROUTE_ROLES[(method, path)]
            for role, user in by_role.items():
                r = c.request(method, _url(path), headers={"Authorization": f"Bearer {toks[user]}"})
                if RANK[role] < RANK[need]:
                    assert _denied(r), (method, path, role, r.status_code, r.text[:200])
                    body = r.json()["error"]
                    assert f"needs the {need} role" in body["message"] and body["type"] == "invalid_request_error"
                else:
                    assert not _denied(r) and r.status_code != 401, (method, path, role, r.status_code, r.text[:300])
            assert c.request(method, _url(path)).status_code == 401  # no token at all
        # read-only routes: any user; no token is a 401 even on loopback; a revoked token stops working
        for path in ("/v1/models", "/v1/fine_tuning/jobs", "/v1/files", "/health"):
            assert c.get(path, headers={"Authorization": f"Bearer {toks['vic']}"}).status_code == 200, path
            assert c.get(path).status_code == 401
        Registry().revoke_user("vic", by="ada")
        r = c.get("/v1/models", headers={"Authorization": f"Bearer {toks['vic']}"})
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_without_users_nothing_changes(local_app):
    with TestClient(local_app) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/fine_tuning/jobs/ftjob-20250101-000000-abcdef/cancel").status_code == 404


def test_trainers_act_on_their_own_jobs_and_see_only_their_team(local_app, tmp_path):
    toks = _users()
    reg = Registry()
    jid, blue = "ftjob-20250101-000000-aaaaaa", "ftjob-20250101-000000-bbbbbb"
    with acting_as(Principal("tom", "trainer", "red")):
        reg.create_job(jid, spec={}, model="m", run_dir=str(tmp_path / "a"), status="paused")
    with acting_as(Principal("bert", "trainer", "blue")):
        reg.create_job(blue, spec={}, model="m", run_dir=str(tmp_path / "b"), status="paused")
    with TestClient(local_app) as c:
        r = c.post(f"/v1/fine_tuning/jobs/{jid}/cancel", headers={"Authorization": f"Bearer {toks['tina']}"})
        assert _denied(r) and "only their own jobs; job " + jid + " was created by tom" in r.json()["error"]["message"]
        ids = [j["id"] for j in c.get("/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {toks['tina']}"}).json()["data"]]
        assert ids == [jid]  # tina is in team red: bert's blue job is not listed ...
        r = c.get(f"/v1/fine_tuning/jobs/{blue}", headers={"Authorization": f"Bearer {toks['tina']}"})
        assert r.status_code == 404  # ... nor found
        r = c.post(f"/v1/fine_tuning/jobs/{jid}/cancel", headers={"Authorization": f"Bearer {toks['tom']}"})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert reg.audit_log(jid)[-1]["actor"] == "tom"
        ids = {j["id"] for j in c.get("/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {toks['ada']}"}).json()["data"]}
        assert ids == {jid, blue}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_dashboard_sessions_act_as_the_user_and_policy_refusals_are_403(local_app, tmp_path):
    toks = _users()
    reg = Registry()
    with acting_as(Principal("tom", "trainer", "red")):
        reg.create_job("ftjob-20250101-000000-cccccc", spec={}, model="m", run_dir=str(tmp_path / "c"))
    (tmp_path / "ck").mkdir()
    cid = reg.add_checkpoint("ftjob-20250101-000000-cccccc", 1, str(tmp_path / "ck"), "0" * 64, is_final=True)
    reg.add_verdict(cid, {"passed": True, "checks": []})
    reg.set_policy("production", {"min_approvals": 2, "separation_of_duties": True}, by="ada")
    with TestClient(local_app) as c:
        assert c.get("/", headers={"Accept": "text/html"}, follow_redirects=False).status_code == 303  # to /login

        def login(user):
            c.cookies.clear()
            csrf = _csrf(c.get("/login").text)
            r = c.post("/login", data={"csrf": csrf, "token": toks[user], "next": "/"}, follow_redirects=False)
            assert r.status_code == 303, r.text
            return _csrf(c.get(f"/checkpoints/{cid}").text)

        assert c.post("/login", data={"csrf": _csrf(c.get("/login").text), "token": "rft_wrong"}).status_code == 401
        csrf = login("ann")
        r = c.post(f"/checkpoints/{cid}/approve", data={"csrf": csrf, "note": "ok", "by": "someone-else"})
        assert r.status_code == 200 and reg.approvals(cid)[0]["by"] == "ann"  # the session's user, not the form's
        r = c.post(f"/checkpoints/{cid}/promote", data={"csrf": csrf, "alias": "production"})
        assert _denied(r) and "needs the admin role" in r.text
        csrf = login("ada")
        r = c.post(f"/checkpoints/{cid}/promote", data={"csrf": csrf, "alias": "production"})
        assert r.status_code == 403 and "min_approvals: needs 2 approval(s)" in r.text
        r = c.post(f"/checkpoints/{cid}/promote", data={"csrf": csrf, "alias": "production", "override": "hotfix"})
        assert r.status_code == 200 and reg.alias("production")["checkpoint_id"] == cid
    promo = [a for a in reg.audit_log("alias:production") if a["action"] == "alias.promote"][0]
    assert promo["actor"] == "ada" and promo["detail"]["override_reason"] == "hotfix"


def test_the_openai_sdk_with_user_tokens_on_a_live_server(local_app, live_server):
    import openai

    toks = _users()
    with live_server(local_app) as base:
        ok = openai.OpenAI(base_url=f"{base}/v1", api_key=toks["vic"], max_retries=0)
        assert [m.id for m in ok.models.list().data]
        with pytest.raises(openai.PermissionDeniedError, match="needs the trainer role"):
            ok.files.create(file=("a.jsonl", b"{}\n"), purpose="batch")
        bad = openai.OpenAI(base_url=f"{base}/v1", api_key="rft_not-a-token", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
