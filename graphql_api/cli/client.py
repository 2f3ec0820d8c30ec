"""Client commands (`push`, `list`, `info`, `download`, `stats`, `operations push`): they talk to a running
server over HTTP through the SDK, and need no server extras."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from ..client import ModelhubClient, ModelhubError, parse_ref
from . import render
from .render import human, progress_bar, when

Url = Annotated[
    str | None, typer.Option(help="Server base URL [env MODELHUB_URL; default http://127.0.0.1:8000].")
]


Engineer = Annotated[
    str | None,
    typer.Option(envvar="MODELHUB_ENGINEER", help="Sent as X-Engineer-ID (header mode).", show_default=False),
]


Token = Annotated[
    str | None,
    typer.Option(envvar="MODELHUB_TOKEN", help="Bearer token (token mode).", show_default=False),
]


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@contextlib.contextmanager
def sdk_client(url: str | None, engineer: str | None, token: str | None) -> Iterator[ModelhubClient]:
    """The SDK client; any error it raises becomes one line on stderr and exit code 1 (no traceback)."""
    try:
        with ModelhubClient(url, engineer, token=token) as client:
            yield client
    except ModelhubError as exc:
        render.console.print(f"[red]error:[/red] {exc.code}: {escape(exc.message)}")
        raise typer.Exit(1) from None
    except (httpx.HTTPError, OSError) as exc:
        render.console.print(f"[red]error:[/red] {escape(str(exc) or type(exc).__name__)}")
        raise typer.Exit(1) from None


def push(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The artifact.")],
    name: Annotated[str, typer.Option(help="Model name (the first version creates the model).")],
    project: Annotated[str, typer.Option(help="The model's project.")],
    version: Annotated[int | None, typer.Option(help="Version number (default: the next one).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A label (repeatable).")] = None,
    description: Annotated[str | None, typer.Option(help="Notes about this version.")] = None,
    quiet: Quiet = False,
    url: Url = None,
    engineer: Engineer = None,
    token: Token = None,
) -> None:
    """Upload FILE as a new version: its SHA-256 is declared, so the server keeps only these exact bytes."""
    with sdk_client(url, engineer, token) as client, progress_bar(f"push {file.name}", quiet) as progress:
        made = client.push(
            file, name, project, version=version, tags=tag, description=description, progress=progress
        )
    checksum = made.sha256 or f"{made.checksum_status.lower()} (the server is hashing it)"
    render.console.print(
        f"pushed {made.name} version {made.version}: {human(made.size_bytes)}, sha256 {checksum}"
    )
    print(made.ref)


def list_models(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    prefix: Annotated[str | None, typer.Option(help="Only names starting with this.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only models with this tag (repeatable).")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's models.")] = None,
    url: Url = None,
    engineer: Engineer = None,
    token: Token = None,
) -> None:
    """List registered models in a table."""
    from rich.table import Table

    filters: dict[str, Any] = {
        "projectNames": [project] if project else None,
        "namePrefix": prefix,
        "tags": tag or None,
        "owners": [owner] if owner else None,
    }
    with sdk_client(url, engineer, token) as client:
        rows = client.models(**{k: v for k, v in filters.items() if v})
    table = Table("name", "latest", "aliases", "project", "owner", "size", "downloads", "created")
    for r in rows:
        latest = r.latest_version
        aliases = ", ".join(f"{a.alias}→{a.version}" for a in r.aliases)
        table.add_row(
            escape(r.name),
            str(latest.version) if latest else "-",
            escape(aliases),
            escape(r.project_name),
            escape(r.owner),
            human(latest.size_bytes) if latest else "-",
            str(r.download_count),
            when(r.created_at),
        )
    Console().print(table)
    if not rows:
        render.console.print("no models match")


def info(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    url: Url = None,
    engineer: Engineer = None,
    token: Token = None,
) -> None:
    """Show one version (the latest by default): artifact, checksum, aliases, downloads."""
    name, version, alias = parse_ref(ref)
    with sdk_client(url, engineer, token) as client:
        v = client.info(name, version, alias)
    model = v.model
    lines = [
        ("model", f"{v.name} (project {v.project_name})"),
        ("version", f"{v.version}" + (" [archived]" if v.archived else "")),
        ("owner", v.owner),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("artifact", f"{v.storage_uri} ({human(v.size_bytes)}, {v.content_type})"),
        (
            "sha256",
            v.sha256 or f"- ({v.checksum_status}{': ' + v.checksum_error if v.checksum_error else ''})",
        ),
        ("checksum", v.checksum_status),
        ("created", v.created_at.isoformat()),
        ("tags", ", ".join(v.tags) or "-"),
        ("description", v.description or (model.description if model else None) or "-"),
        (
            "downloads",
            f"{v.download_count} of this version, {model.download_count if model else '-'} of the model",
        ),
        ("last downloaded", v.last_downloaded_at.isoformat() if v.last_downloaded_at else "never"),
    ]
    out = Console()
    for label, value in lines:
        out.print(f"[bold]{label:>16}[/bold]  {escape(str(value))}")


def download(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS (default: the latest).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    presigned: Annotated[
        bool, typer.Option(help="Fetch straight from the store by a presigned URL.")
    ] = False,
    quiet: Quiet = False,
    url: Url = None,
    engineer: Engineer = None,
    token: Token = None,
    ci: Annotated[
        bool, typer.Option("--ci", help="Declare the download a CI job's (CI variables do it already).")
    ] = False,
) -> None:
    """Download an artifact: resumed from a `.part` file if one is there, size and SHA-256 checked, then
    moved into place."""
    if ci:
        os.environ["MODELHUB_CI"] = "1"  # read by the SDK's declared_kind
    name, version, alias = parse_ref(ref)
    dest = output or Path(
        name.replace("/", "_") + (f"-v{version}" if version else f"-{alias}" if alias else "")
    )
    with sdk_client(url, engineer, token) as client, progress_bar(f"download {name}", quiet) as progress:
        result = client.download(name, dest, version, alias=alias, presigned=presigned, progress=progress)
    rate = result.bytes_written / max(result.seconds, 1e-9) / 1e6
    resumed = f", resumed at byte {result.resumed_from:,}" if result.resumed_from else ""
    check = "verified" if result.verified else "not verified yet: the server has not hashed it"
    render.console.print(
        f"{result.path}: {name} version {result.version}, {human(result.size)}, sha256 {result.sha256} "
        f"({check}; {rate:.1f} MB/s{resumed})"
    )


def stats(
    by: Annotated[
        list[str] | None, typer.Option(help="Group by: model, version, project, engineer, mode, status.")
    ] = None,
    interval: Annotated[str | None, typer.Option(help="hour, day, week or month.")] = None,
    days: Annotated[int, typer.Option(min=1, help="The last this many days.")] = 7,
    model: Annotated[list[str] | None, typer.Option(help="Only this model (repeatable).")] = None,
    url: Url = None,
    engineer: Engineer = None,
    token: Token = None,
) -> None:
    """Download figures for the last DAYS days, grouped and bucketed (downloadStats)."""
    from rich.table import Table

    dims = [d.upper() for d in (by or ["model"])]
    since = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    flt: dict[str, Any] = {"since": since, **({"modelNames": model} if model else {})}
    with sdk_client(url, engineer, token) as client:
        rows = client.stats(dims, interval.upper() if interval else None, **flt)
    columns = {
        "MODEL": "model_name", "VERSION": "version", "PROJECT": "project_name", "ENGINEER": "engineer",
        "MODE": "mode", "STATUS": "status",
    }  # fmt: skip
    shown = [columns[d] for d in dims if d in columns]
    headers = [c.replace("_name", "Name") for c in shown]  # the GraphQL field names, as before
    table = Table(*(["period"] if interval else []), *headers, "downloads", "completed", "failed", "bytes")
    for r in rows:
        period = [when(r.period_start)[:16]] if interval and r.period_start else [""] if interval else []
        cells = [escape(str(getattr(r, c))) for c in shown]
        table.add_row(
            *period, *cells, str(r.downloads), str(r.completed), str(r.failed), human(r.total_bytes)
        )
    Console().print(table)


operations_app = typer.Typer(
    help="Persisted operations: register what a frontend may run.", no_args_is_help=True
)


def _manifest(path: Path) -> list[str]:
    """Operation texts from a .graphql file (each operation with the fragments it uses) or a JSON manifest:
    Apollo's {"operations": [{"id", "body"}]} or a {hash: text} map; a hash must match its text."""
    from ..operations import sha256_of
    from ..schema import operations as schema_operations

    text = path.read_text()
    if path.suffix != ".json":
        return [body for _, body in schema_operations.split(text)]
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        pairs = [(op.get("id"), op["body"]) for op in data["operations"]]
    elif isinstance(data, dict):
        pairs = list(data.items())
    else:
        raise ValueError('a manifest is {"operations": [{"id", "body"}]} or {hash: text}')
    for sha256, body in pairs:
        if sha256 is not None and sha256 != sha256_of(body):
            raise ValueError(f"the manifest's id {sha256[:16]}… is not the SHA-256 of its body")
    return [body for _, body in pairs]


@operations_app.command("push")
def operations_push(
    file: Annotated[
        Path, typer.Argument(help="A .graphql file or a JSON manifest.", exists=True, dir_okay=False)
    ],
    url: Url = None,
    token: Token = None,
) -> None:
    """Register the operations of FILE by their SHA-256 (needs an ADMIN token)."""
    from graphql import GraphQLError
    from rich.table import Table

    try:
        bodies = _manifest(file)
    except (ValueError, KeyError, GraphQLError) as exc:
        render.console.print(f"modelhub: {escape(file.name)}: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if not bodies:
        render.console.print(f"modelhub: {escape(file.name)} holds no operation")
        raise typer.Exit(1)
    with sdk_client(url, None, token) as client:
        registered = client.register_operations(bodies)
    table = Table("operation", "sha256", "")
    for op in registered:
        table.add_row(op.name or "(anonymous)", op.sha256_hash, "new" if op.created else "already registered")
    Console().print(table)
