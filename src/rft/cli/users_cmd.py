"""`rft users add|list|revoke|rotate`: the registry's users (admins only, or anyone before the first user exists).

`add NAME --role ROLE [--team T]` and `rotate NAME` print the new token once (it is stored only as a hash:
`rft.registry.access`); `list` never shows a token or its hash, only its first characters. Every change is in
`rft audit` (subject `user:NAME`). The first user must be an admin.
How to run: `rft users add ada --role admin` then `export RFT_TOKEN=<the token printed>`.
"""

from __future__ import annotations

from typing import Optional

import typer

from rft.cli.output import err, out, print_json, table

users_app = typer.Typer(no_args_is_help=True, help="Users, roles and tokens (admins).")


def _when(t) -> str:
    from rft import views

    return views.when(t) if t else "-"


def _show_token(user: dict, token: str, as_json: bool, verb: str) -> None:
    if as_json:
        return print_json(user | {"token": token})
    out.print(f"{verb} user {user['name']} ({user['role']}{', team ' + user['team'] if user.get('team') else ''})")
    out.print(token, highlight=False, soft_wrap=True)
    err.print("This token is shown once; only its hash is stored. Give it to the user, who sets RFT_TOKEN "
              "(CLI) or sends 'Authorization: Bearer <token>' (HTTP).", highlight=False)


@users_app.command("add")
def add_cmd(name: str = typer.Argument(..., help="User name (letters, digits, . _ @ -)."),
            role: str = typer.Option(..., "--role", help="viewer, trainer, approver or admin."),
            team: Optional[str] = typer.Option(None, "--team", help="The user's team: they see only its jobs, files, batches."),
            as_json: bool = typer.Option(False, "--json")):
    """Add a user and print their token once."""
    from rft.registry import Registry

    user, token = Registry().add_user(name, role, team)
    _show_token(user, token, as_json, "added")


@users_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")):
    """Every user: role, team, status, token hint (never the token)."""
    from rft.registry import Registry

    rows = Registry().list_users()
    if as_json:
        return print_json(rows)
    t = table("name", "role", "team", "status", "token", "created", "by")
    for r in rows:
        t.add_row(r["name"], r["role"], r.get("team") or "-", r["status"], r["token_hint"] + "...",
                  _when(r["created_at"]), r["created_by"])
    out.print(t)


@users_app.command("revoke")
def revoke_cmd(name: str, as_json: bool = typer.Option(False, "--json")):
    """Revoke a user's token at once (the user stays in the audit log)."""
    from rft.registry import Registry

    u = Registry().revoke_user(name)
    if as_json:
        return print_json(u)
    out.print(f"revoked user {u['name']}")


@users_app.command("rotate")
def rotate_cmd(name: str, as_json: bool = typer.Option(False, "--json")):
    """Give a user a new token (printed once); the old one stops working."""
    from rft.registry import Registry

    user, token = Registry().rotate_user(name)
    _show_token(user, token, as_json, "rotated the token of")
