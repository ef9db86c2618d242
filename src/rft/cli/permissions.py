"""Who may run which `rft` command: one table, checked in one place (the root callback of `rft.cli.main`).

`COMMAND_ROLES` maps every command path ("jobs pause", "promote") to the least role that may run it
(`rft.registry.access.ROLES`); `READ_ONLY_FLAGS` lowers it to viewer when a flag makes the command read-only
(`rft aliases policy NAME --show`). `authorize(path, args)` runs before the command:
- a registry without users (the single-user mode): the command runs as a local admin named by RFT_ACTOR or
  the operating-system user; `RFT_TOKEN` is ignored;
- with users: the command runs as the user whose token is in `RFT_TOKEN`; a missing, unknown or revoked token,
  or a role below the command's, is one `error:` line and exit 2. A command missing from the table is refused
  (tests/test_permissions.py fails first: it walks the command tree).
Trainers may pause, cancel and resume only jobs they created, which the registry checks (it has the job).
`actor(by)` is the name a command records: the authenticated user (`--by` is refused when it names anyone
else), or `--by` / the local user in the single-user mode.
Simplified: the registry is opened to learn whether it has users, except when its default SQLite file does
not exist yet (no users then); a registry that cannot be opened is not checked here, and every command that
uses it reports why it cannot. Help (`-h`) needs no token.
How to run: `RFT_TOKEN=rft_... rft jobs list`.
"""

from __future__ import annotations

import os

from rft.errors import RftError

VIEWER, TRAINER, APPROVER, ADMIN = "viewer", "trainer", "approver", "admin"

COMMAND_ROLES: dict[str, str] = {
    "strategies": TRAINER,  # issue 14: trains and evaluates
    "pairs": TRAINER,  # issue 14: samples the base model, grades, writes a DPO file
    "train": TRAINER, "demo": TRAINER, "preflight": TRAINER, "eval": TRAINER, "compare": TRAINER,
    "data validate": VIEWER, "data list": VIEWER,
    "files upload": TRAINER, "files list": VIEWER, "files show": VIEWER, "files content": VIEWER,
    "files delete": TRAINER,
    "grader validate": VIEWER, "grader run": VIEWER,
    "models list": VIEWER, "models pull": TRAINER,
    "jobs list": VIEWER, "jobs show": VIEWER, "jobs events": VIEWER,
    "jobs pause": TRAINER, "jobs cancel": TRAINER, "jobs resume": TRAINER,
    "checkpoints list": VIEWER, "checkpoints show": VIEWER, "checkpoints approve": APPROVER,
    "checkpoints export": VIEWER,
    "promote": ADMIN, "rollback": ADMIN,
    "aliases list": VIEWER, "aliases policy": ADMIN,
    "lineage": VIEWER, "audit": VIEWER,
    "replay": TRAINER, "explain": VIEWER,
    "review": TRAINER,  # storing verdicts; --queue, --report and --export-guard only read (READ_ONLY_FLAGS)
    "batch run": TRAINER, "batch resume": TRAINER, "batch redrive": TRAINER, "batch cancel": TRAINER,
    "batch show": VIEWER, "batch list": VIEWER,
    "serve": ADMIN,  # the server runs queued jobs and answers for the whole registry
    "users add": ADMIN, "users list": ADMIN, "users revoke": ADMIN, "users rotate": ADMIN,
}
READ_ONLY_FLAGS: dict[str, tuple[str, ...]] = {"aliases policy": ("--show",),
                                              "review": ("--queue", "--report", "--export-guard")}
HELP_FLAGS = ("-h", "--help")


def required_role(path: str, args: list[str]) -> str | None:
    """The least role for a command path and its arguments; None for a path missing from the table."""
    role = COMMAND_ROLES.get(path)
    if role is not None and any(a in READ_ONLY_FLAGS.get(path, ()) for a in args):
        role = VIEWER
    return role


def _has_users() -> bool | None:
    """Whether the registry has users (None: it cannot be opened; its commands will say why)."""
    from rft.home import rft_home
    from rft.registry import Registry

    if not os.environ.get("RFT_DATABASE_URL") and not (rft_home() / "rft.db").exists():
        return False  # no registry yet: certainly no users, and none is created just to find that out
    try:
        return Registry().has_users()
    except RftError:
        return None


def authorize(path: str, args: list[str]) -> None:
    """Set the acting user of this command, or raise RftError (exit 2) when they may not run it."""
    from rft.registry import Registry
    from rft.registry.access import RANK, PermissionDenied, set_process_principal

    set_process_principal(None)  # the single-user mode: the local user, named by default_actor()
    if any(a in HELP_FLAGS for a in args):
        return
    if not _has_users():
        return
    token = os.environ.get("RFT_TOKEN", "").strip()
    if not token:
        raise PermissionDenied(f"`rft {path}` needs a user: this registry has users, so set RFT_TOKEN to your token",
                               hint="an admin creates one with `rft users add NAME --role ROLE`")
    p = Registry().authenticate(token)
    if p is None:
        raise PermissionDenied("RFT_TOKEN is not a valid token for this registry (unknown, rotated or revoked)",
                               hint="ask an admin for a new one (`rft users rotate NAME`)")
    set_process_principal(p)
    need = required_role(path, args)
    if need is None:
        raise PermissionDenied(f"`rft {path}` has no role in rft.cli.permissions.COMMAND_ROLES; refused")
    if RANK[p.role] < RANK[need]:
        raise PermissionDenied(f"user '{p.name}' ({p.role}) may not run `rft {path}`: it needs the {need} role")


def actor(by: str | None) -> str:
    """The name an approval, promotion or rollback records (see the module docstring)."""
    from rft.registry.access import authenticated_actor, default_actor

    me = authenticated_actor()
    if me is None:
        return by or default_actor()
    if by is not None and by != me:
        raise RftError(f"--by {by}: with users configured, actions are recorded as the user whose token is in "
                       f"RFT_TOKEN ({me}); leave --by out")
    return me


def single_user() -> bool:
    from rft.registry.access import authenticated_actor

    return authenticated_actor() is None
