"""The `token` commands (create, list, revoke): bearer tokens, straight on the database and audited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from ..roles import ProjectRole, Role
from . import render
from .server import database, with_db

if TYPE_CHECKING:
    from ..documents import ClientKind

T = TypeVar("T")


tokens_app = typer.Typer(help="Bearer tokens: create, list, revoke (straight on the database).")


def parse_grants(values: list[str]) -> dict[str, ProjectRole]:
    """`vision:ENGINEER` options as project -> role; ValueError names a malformed one."""
    grants: dict[str, ProjectRole] = {}
    for value in values:
        project, sep, role = value.rpartition(":")
        try:
            grants[project] = ProjectRole(role.upper())
        except ValueError:
            raise ValueError(
                f"--grant {value!r}: give PROJECT:ROLE, ROLE one of READER, ENGINEER, MAINTAINER"
            ) from None
        if not sep or not project:
            raise ValueError(f"--grant {value!r}: give PROJECT:ROLE")
    return grants


def describe_roles(role: Role | None, grants: dict[str, ProjectRole]) -> str:
    parts = [role.value] if role else []
    parts += [f"{p}:{r.value}" for p, r in sorted(grants.items())]
    return " ".join(parts)


async def _audited(action: str, target: str, work: Coroutine[Any, Any, T]) -> T:
    """Runs a token change made straight on the database and records it in the audit trail (as the GraphQL
    mutations are): who is the OS user running the CLI, the outcome OK or the error code."""
    import getpass

    from ..audit import record_now
    from ..documents import AuditEvent, AuditKind
    from ..errors import DomainError

    def record(outcome: str) -> AuditEvent:
        return AuditEvent(
            kind=AuditKind.TOKEN,
            principal=f"cli:{getpass.getuser()}",
            action=action,
            target=target,
            outcome=outcome,
            transport="cli",
        )

    try:
        result = await work
    except DomainError as exc:
        await record_now(record(exc.code))
        raise
    await record_now(record("OK"))
    return result


@tokens_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="A unique name for the token, e.g. grafana.")],
    principal: Annotated[str, typer.Option(help="Who the token acts as (recorded on downloads).")],
    role: Annotated[
        Role | None,
        typer.Option(
            case_sensitive=False,
            help="The global role: READER, ENGINEER or ADMIN (default READER, or none with --grant).",
        ),
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option(help="A project role, PROJECT:ROLE (READER, ENGINEER or MAINTAINER); repeatable."),
    ] = None,
    expires_in_days: Annotated[int | None, typer.Option(help="Expire after this many days.")] = None,
    value_from_env: Annotated[
        str | None, typer.Option(help="Take the token's value from this environment variable (provisioning).")
    ] = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed quietly if a token of this name exists.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="Record every download with this token as CI, BOT, HUMAN or UNKNOWN (e.g. ci)."),
    ] = None,
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from ..auth import create_token, list_tokens
    from ..errors import DomainError

    try:
        grants = parse_grants(grant or [])
    except ValueError as exc:
        render.console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if role is None and not grants:
        role = Role.READER
    client_kind = _client_kind(kind)
    value = os.environ.get(value_from_env) if value_from_env else None
    if value_from_env and not value:
        render.console.print(f"[red]error:[/red] ${value_from_env} is empty")
        raise typer.Exit(2)
    with database({"data_dir": data_dir}) as (settings, uri):
        if exist_ok and name in {t.name for t in asyncio.run(with_db(uri, settings.mongo_db, list_tokens()))}:
            render.console.print(f"token {name!r} exists; kept")
            return
        made = create_token(
            name, principal, role, "cli", expires_in_days, value, grants, client_kind=client_kind
        )
        try:
            token, _ = asyncio.run(with_db(uri, settings.mongo_db, _audited("token create", name, made)))
        except DomainError as exc:
            render.console.print(f"[red]{exc.code}[/red] {exc.message}")
            raise typer.Exit(1) from None
    render.console.print(f"created {describe_roles(role, grants)} token {name!r} for {principal}")
    print(token)


def _client_kind(kind: str | None) -> ClientKind | None:
    """`--kind` as a ClientKind (any case); a kind that is none of them exits with code 2."""
    from ..documents import ClientKind

    if kind is None:
        return None
    if kind.upper() not in ClientKind.__members__:
        render.console.print(f"[red]error:[/red] --kind must be one of {', '.join(ClientKind)}")
        raise typer.Exit(2)
    return ClientKind(kind.upper())


@tokens_app.command("list")
def token_list(
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """List tokens (never their values)."""
    from rich.table import Table

    from ..auth import expires_label, list_tokens

    with database({"data_dir": data_dir}) as (settings, uri):
        found = asyncio.run(with_db(uri, settings.mongo_db, list_tokens()))
    table = Table("name", "principal", "role", "grants", "created", "expires", "last used", "revoked")
    for t in found:
        table.add_row(
            t.name,
            t.principal,
            t.role.value if t.role else "-",
            " ".join(f"{p}:{r.value}" for p, r in sorted(t.grant_map().items())) or "-",
            t.created_at.isoformat(),
            expires_label(t.expires_at),
            t.last_used_at.isoformat() if t.last_used_at else "-",
            t.revoked_at.isoformat() if t.revoked_at else "-",
        )
    Console().print(table)


@tokens_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """Revoke a token (running servers stop accepting it within MODELHUB_TOKEN_CACHE_SECONDS)."""
    from ..auth import revoke_token
    from ..errors import DomainError

    with database({"data_dir": data_dir}) as (settings, uri):
        try:
            asyncio.run(with_db(uri, settings.mongo_db, _audited("token revoke", name, revoke_token(name))))
        except DomainError as exc:
            render.console.print(f"[red]{exc.code}[/red] {exc.message}")
            raise typer.Exit(1) from None
    render.console.print(f"revoked {name!r}")
