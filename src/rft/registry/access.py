"""Who may do what: users and roles, their tokens, the acting user, team visibility, and promotion policies.

Roles, each including the ones before it: `viewer` (read everything their team may see), `trainer` (upload
files, start jobs, pause/cancel/resume their own jobs, run evaluations and batches), `approver` (approve
checkpoints), `admin` (users, aliases: promote and roll back, promotion policies; may act on any job).
Which command or route needs which role is written in one table per front end (`rft.cli.permissions`,
`rft.serve.guard.ROUTE_ROLES`); this module holds what both share.

Users live in the registry (table `users`). `UsersMixin.add_user` returns a token once: `rft_` followed by
32 random bytes (`secrets.token_urlsafe(32)`, 256 bits). Only its SHA-256 is stored, with the token's first
characters as a hint. A fast unsalted hash is the right tool for such a token: salts and slow hashes
(bcrypt, argon2) exist to make guessing a low-entropy *password* from a stolen hash expensive, but nobody can
enumerate 2**256 tokens however fast the hash, and an unsalted digest can be looked up by an index. A
person's password must never be used as a token (the CLI and API only ever hand out generated ones).

The single-user mode: a registry with no users at all. Then nothing is checked (the CLI acts as a local admin
named by `default_actor()`, the server keeps its one optional `RFT_API_TOKEN`). The first user must be an
admin, and the last active admin cannot be revoked, so a registry cannot lock everyone out.

The acting user (`Principal`) of the current request or command is set with `acting_as` (a context variable:
the server sets it per request) or `set_process_principal` (the CLI, for the whole command). The registry
reads it to record `created_by`/`team` on new jobs, files and batches, to name the actor of audit rows
(`default_actor`), to hide other teams' rows, and to let trainers act only on their own jobs.

Promotion policies (table `alias_policies`, one row per version; the newest is in force) are checked by
`Registry.promote` through `check_policy`: require_gates, min_approvals (distinct approvers),
separation_of_duties (the job's creator cannot approve its own checkpoint, and such an approval does not count),
min_eval_items, max_grader_disagreement (people's review verdicts on the checkpoint's job, `rft review`, may
disagree with the grader on pass/fail at most this often, measured on at least
`rft.registry.reviews.MIN_VERDICTS` (20) verdicts; with fewer the promotion is refused, saying so).

Security boundary, stated honestly: the CLI's checks protect a shared registry from people who use the `rft`
command; anyone who can write the database file (or holds its PostgreSQL credentials) can change anything,
users included. Tokens travel in clear over plain HTTP (put TLS in front off loopback).
How to run: `rft users add ada --role admin`, then `RFT_TOKEN=... rft users list`.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import hmac
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from rft.errors import RftError

ROLES = ("viewer", "trainer", "approver", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
TOKEN_PREFIX = "rft_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TEAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PermissionDenied(RftError):
    """The acting user may not do this (a role, ownership or team rule): CLI exit 2, HTTP 403."""


class PolicyRefused(PermissionDenied):
    """A promotion breaks its alias's policy; the message names the rule."""


@dataclass(frozen=True)
class Principal:
    """The acting user. `authenticated` is False for the single-user mode's local admin."""

    name: str
    role: str
    team: str | None = None
    authenticated: bool = True

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("rft_principal", default=None)
_process: list[Principal | None] = [None]


@contextmanager
def acting_as(p: Principal | None):
    """Run a block as `p` (the server: one request)."""
    tok = _current.set(p)
    try:
        yield p
    finally:
        _current.reset(tok)


def set_process_principal(p: Principal | None) -> None:
    """The acting user of the whole process (the CLI: one command, whatever threads it starts)."""
    _process[0] = p


def current_principal() -> Principal | None:
    return _current.get() or _process[0]


def os_user() -> str:
    try:
        return os.environ.get("RFT_ACTOR") or getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return "unknown"


def default_actor() -> str:
    """The name the audit log records: the authenticated user, else RFT_ACTOR or the operating-system user."""
    p = current_principal()
    return p.name if p is not None else os_user()


def authenticated_actor() -> str | None:
    """The authenticated user's name, or None in the single-user mode."""
    p = current_principal()
    return p.name if p is not None and p.authenticated else None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).hexdigest()


def check_role(role: str) -> str:
    if role not in RANK:
        from rft.errors import did_you_mean

        raise RftError(f"unknown role '{role}'{did_you_mean(role, ROLES)}; roles: {', '.join(ROLES)}")
    return role


def visible_team() -> str | None:
    """The team whose rows the acting user may see, or None: everything (no team, or no users)."""
    p = current_principal()
    return p.team if p is not None and p.authenticated and p.team else None


def visible(row: dict | None) -> bool:
    t = visible_team()
    return row is not None and (t is None or row.get("team") == t)


def owner_fields() -> dict:
    """`created_by` and `team` for a new job, file or batch."""
    p = current_principal()
    return {"created_by": default_actor(), "team": p.team if p is not None else None}


def require_owner(job: dict, action: str) -> None:
    """Trainers act only on jobs they created; approvers and admins on any they can see."""
    p = current_principal()
    if p is None or not p.authenticated or p.can("approver"):
        return
    if job.get("created_by") != p.name:
        raise PermissionDenied(f"user '{p.name}' ({p.role}) may {action} only their own jobs; job {job['id']} was "
                               f"created by {job.get('created_by') or 'someone else'}",
                               hint="ask its creator, an approver or an admin")


# ------------------------------------------------------------------------------------------ policies
POLICY_FIELDS = ("require_gates", "min_approvals", "separation_of_duties", "min_eval_items",
                 "max_grader_disagreement")


def make_policy(*, require_gates: bool = False, min_approvals: int = 0, separation_of_duties: bool = False,
                min_eval_items: int | None = None, max_grader_disagreement: float | None = None) -> dict:
    import math

    if isinstance(min_approvals, bool) or not isinstance(min_approvals, int) or not 0 <= min_approvals <= 100:
        raise RftError(f"--min-approvals must be an integer in [0, 100], got {min_approvals}")
    if min_eval_items is not None and (isinstance(min_eval_items, bool) or not isinstance(min_eval_items, int)
                                       or not 1 <= min_eval_items <= 100_000_000):
        raise RftError(f"--min-eval-items must be an integer in [1, 100000000], got {min_eval_items}")
    if max_grader_disagreement is not None and not (isinstance(max_grader_disagreement, (int, float))
                                                    and math.isfinite(max_grader_disagreement)
                                                    and 0 <= max_grader_disagreement <= 1):
        raise RftError(f"--max-grader-disagreement must be a number in [0, 1], got {max_grader_disagreement}")
    return {"require_gates": bool(require_gates), "min_approvals": min_approvals,
            "separation_of_duties": bool(separation_of_duties), "min_eval_items": min_eval_items,
            "max_grader_disagreement": None if max_grader_disagreement is None else float(max_grader_disagreement)}


def policy_text(policy: dict) -> str:
    parts = []
    if policy.get("require_gates"):
        parts.append("gates must have passed")
    if policy.get("min_approvals"):
        parts.append(f"{policy['min_approvals']} approval(s) from distinct approvers")
    if policy.get("separation_of_duties"):
        parts.append("the job's creator cannot approve")
    if policy.get("min_eval_items"):
        parts.append(f"evaluated on at least {policy['min_eval_items']} items")
    if policy.get("max_grader_disagreement") is not None:
        parts.append(f"grader disagreement at most {policy['max_grader_disagreement']:g}")
    return "; ".join(parts) or "no rules"


def eval_items(reports: list[dict]) -> int:
    """The most items any checkpoint/final evaluation report of a checkpoint was scored on."""
    best = 0
    for r in reports:
        if r.get("kind") not in ("checkpoint", "final", "eval"):
            continue
        s = r.get("summary") or {}
        n = s.get("n_items") or s.get("n") or len(s.get("items") or [])
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            best = max(best, int(n))
    return best


def check_policy(policy: dict, *, checkpoint: dict, job: dict, verdict: dict | None, approvals: list[dict],
                 reports: list[dict], review_verdicts: list[dict] | None = None) -> list[str]:
    """The broken rules of a policy for a checkpoint, each as 'rule: why' (empty: the promotion may go ahead).
    `review_verdicts`: the job's review verdicts in force (`rft.registry.reviews.list_verdicts`)."""
    broken = []
    if policy.get("require_gates") and not (verdict and verdict.get("passed")):
        why = "it has no gate verdict" if verdict is None else "it failed its quality gates"
        broken.append(f"require_gates: {why}")
    creator = job.get("created_by")
    sod = bool(policy.get("separation_of_duties"))
    counted = sorted({a["by"] for a in approvals if not (sod and creator and a["by"] == creator)})
    need = max(policy.get("min_approvals") or 0, 1 if sod else 0)
    if len(counted) < need:
        if sod and creator and any(a["by"] == creator for a in approvals):
            broken.append(f"separation_of_duties: the approval by the job's creator ({creator}) does not count")
        who = f" ({', '.join(counted)})" if counted else ""
        other = " other than the job's creator" if sod else ""
        broken.append(f"min_approvals: needs {need} approval(s) from distinct approvers{other}, has "
                      f"{len(counted)}{who}")
    if policy.get("min_eval_items"):
        n = eval_items(reports)
        if n < policy["min_eval_items"]:
            broken.append(f"min_eval_items: evaluated on {n} items, needs at least {policy['min_eval_items']}")
    if policy.get("max_grader_disagreement") is not None:
        from rft.registry.reviews import MIN_VERDICTS, disagreement_rule, pass_fail_counts

        n, differ = pass_fail_counts(review_verdicts or [])
        ok, why = disagreement_rule(n, differ / n if n else None, policy["max_grader_disagreement"], MIN_VERDICTS)
        if not ok:
            broken.append(f"max_grader_disagreement: {why.replace('JOB', job.get('id') or 'JOB')}")
    return broken


# ------------------------------------------------------------------------------------------- the store

def _active_user(c, name: str, revoked: str):
    """The users row of `name` in connection `c`; RftError when there is none or it is revoked (`revoked` ends
    the message: "user 'x' <revoked>")."""
    from rft.registry.db import users

    u = c.execute(sa.select(users).where(users.c.name == name)).first()
    if u is None:
        raise RftError(f"no user '{name}'", hint="see `rft users list`")
    if u.revoked_at is not None:
        raise RftError(f"user '{name}' {revoked}")
    return u


class UsersMixin:
    """Users and policies on `rft.registry.Registry` (which provides `engine`, `_audit`)."""

    def has_users(self) -> bool:
        from rft.registry.db import users

        with self.engine.connect() as c:
            return c.execute(sa.select(users.c.name).limit(1)).first() is not None

    def add_user(self, name: str, role: str, team: str | None = None, *, by: str | None = None) -> tuple[dict, str]:
        """A new user and their token (shown once; only its hash is kept)."""
        from rft.registry.db import users

        if not NAME_RE.fullmatch(name or ""):
            raise RftError(f"user name '{name}' is not valid: letters, digits, '.', '_', '@' or '-' (at most 64)")
        check_role(role)
        if team is not None and not TEAM_RE.fullmatch(team):
            raise RftError(f"team '{team}' is not valid: letters, digits, '.', '_' or '-' (at most 64)")
        token = new_token()
        by = by or default_actor()
        with self.engine.begin() as c:
            first = c.execute(sa.select(users.c.name).limit(1)).first() is None
            if first and role != "admin":
                raise RftError(f"the first user must be an admin (got --role {role}): once a user exists, only "
                               "users with tokens can run rft, and only admins can add users",
                               hint=f"rft users add {name} --role admin")
            if c.execute(sa.select(users.c.name).where(sa.func.lower(users.c.name) == name.lower())).first():
                raise RftError(f"user '{name}' already exists (names are never reused: the audit log refers to "
                               "them); to give them a new token use `rft users rotate`")
            c.execute(users.insert().values(name=name, role=role, team=team, token_sha256=token_digest(token),
                                            token_hint=token[:8], created_at=time.time(), created_by=by))
            self._audit(c, by, "user.add", f"user:{name}", None, {"role": role, "team": team})
        return self.get_user(name), token

    def get_user(self, name: str) -> dict:
        from rft.registry.db import users

        with self.engine.connect() as c:
            r = c.execute(sa.select(users).where(users.c.name == name)).first()
        if r is None:
            raise RftError(f"no user '{name}'", hint="see `rft users list`")
        return _public(dict(r._mapping))

    def list_users(self) -> list[dict]:
        from rft.registry.db import users

        with self.engine.connect() as c:
            return [_public(dict(r._mapping)) for r in c.execute(sa.select(users).order_by(users.c.created_at))]

    def revoke_user(self, name: str, *, by: str | None = None) -> dict:
        from rft.registry.db import users

        by = by or default_actor()
        with self.engine.begin() as c:
            u = _active_user(c, name, "is already revoked")
            if u.role == "admin":
                admins = c.execute(sa.select(sa.func.count()).select_from(users).where(
                    (users.c.role == "admin") & users.c.revoked_at.is_(None))).scalar()
                if admins <= 1:
                    raise RftError(f"'{name}' is the last active admin; add another admin before revoking them")
            c.execute(users.update().where(users.c.name == name).values(revoked_at=time.time(), revoked_by=by))
            self._audit(c, by, "user.revoke", f"user:{name}", {"revoked": False}, {"revoked": True})
        return self.get_user(name)

    def rotate_user(self, name: str, *, by: str | None = None) -> tuple[dict, str]:
        """A new token for the user; the old one stops working at once."""
        from rft.registry.db import users

        by = by or default_actor()
        token = new_token()
        with self.engine.begin() as c:
            u = _active_user(c, name, "is revoked; add a new user instead")
            c.execute(users.update().where(users.c.name == name).values(
                token_sha256=token_digest(token), token_hint=token[:8], rotated_at=time.time()))
            self._audit(c, by, "user.rotate", f"user:{name}", {"token_hint": u.token_hint}, {"token_hint": token[:8]})
        return self.get_user(name), token

    def authenticate(self, token: str | None) -> Principal | None:
        """The active user holding `token`, or None (unknown, revoked, empty)."""
        from rft.registry.db import users

        if not token or not token.strip():
            return None
        digest = token_digest(token)
        with self.engine.connect() as c:
            u = c.execute(sa.select(users).where(users.c.token_sha256 == digest)).first()
        if u is None or u.revoked_at is not None or not hmac.compare_digest(u.token_sha256, digest):
            return None
        return Principal(u.name, u.role, u.team)

    def principal(self, name: str) -> Principal | None:
        """The active user `name` (a dashboard session's user, re-read on every request), or None."""
        from rft.registry.db import users

        with self.engine.connect() as c:
            u = c.execute(sa.select(users).where(users.c.name == name)).first()
        if u is None or u.revoked_at is not None:
            return None
        return Principal(u.name, u.role, u.team)

    # ---------------------------------------------------------------------------------------- policies
    def set_policy(self, alias: str, policy: dict, *, by: str | None = None) -> dict:
        from rft.registry import _check_alias_name
        from rft.registry.db import alias_policies

        alias = alias.removeprefix("alias:")
        _check_alias_name(alias)
        policy = make_policy(**{k: policy.get(k) for k in POLICY_FIELDS if policy.get(k) is not None})
        by = by or default_actor()
        with self.engine.begin() as c:
            cur = c.execute(sa.select(alias_policies).where(alias_policies.c.name == alias)
                            .order_by(alias_policies.c.version.desc()).limit(1)).first()
            version = (cur.version if cur else 0) + 1
            c.execute(alias_policies.insert().values(name=alias, version=version, created_at=time.time(),
                                                     created_by=by, policy=policy))
            self._audit(c, by, "alias.policy", f"alias:{alias}", cur.policy if cur else None,
                        policy | {"version": version})
        return self.policy(alias)

    def policy(self, alias: str) -> dict | None:
        """The policy in force for an alias (a row: name, version, created_at, created_by, policy), or None."""
        from rft.registry.db import alias_policies

        with self.engine.connect() as c:
            r = c.execute(sa.select(alias_policies).where(alias_policies.c.name == alias.removeprefix("alias:"))
                          .order_by(alias_policies.c.version.desc()).limit(1)).first()
        return dict(r._mapping) if r is not None else None

    def policy_history(self, alias: str) -> list[dict]:
        from rft.registry.db import alias_policies

        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(alias_policies).where(
                alias_policies.c.name == alias.removeprefix("alias:")).order_by(alias_policies.c.version))]

    def separation_required(self) -> list[str]:
        """The aliases whose policy in force requires separation of duties."""
        from rft.registry.db import alias_policies

        with self.engine.connect() as c:
            rows = c.execute(sa.select(alias_policies.c.name, alias_policies.c.version, alias_policies.c.policy)
                             .order_by(alias_policies.c.name, alias_policies.c.version)).all()
        latest: dict[str, dict] = {}
        for name, _v, pol in rows:
            latest[name] = pol or {}
        return sorted(n for n, p in latest.items() if p.get("separation_of_duties"))


def _public(row: dict) -> dict:
    """A user row fit to show: never the token's hash."""
    row.pop("token_sha256", None)
    row["status"] = "revoked" if row.get("revoked_at") else "active"
    row["id"] = row["name"]
    return row
