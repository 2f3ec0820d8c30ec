"""The `modelhub` command line: serve, export-schema, seed-demo, and client commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.config
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from . import logs
from .client import ModelhubClient, ModelhubError, parse_ref
from .roles import ProjectRole, Role

if TYPE_CHECKING:
    from .config import Settings

# The server stack (Strawberry, Beanie, aioboto3, uvicorn) is imported inside the commands that use it:
# client commands (push, list, info, download, stats) start in a fraction of the time without it.

T = TypeVar("T")

app = typer.Typer(help="modelhub: a GraphQL registry for ML model artifacts.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    data_dir: Annotated[Path | None, typer.Option(help="Where embedded data and local objects live.")] = None,
) -> None:
    """Serve the API; with no MODELHUB_MONGO_URI, start the embedded database under the data dir."""
    from .app import create_app
    from .config import Settings
    from .http.server import BodyReadTimeout
    from .metrics import prepare_multiprocess_dir

    _log_format(Settings().log_format)
    overrides = {"host": host, "port": port, "data_dir": data_dir}
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it lets the `with` stop the
    # embedded database instead of the process dying with the database still running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with _database(overrides, reuse_running=False, supervise=True) as (settings, uri):
        # Header identities are for the embedded quick start only; a configured database means tokens.
        auth = settings.auth or ("header" if settings.mongo_uri is None else "token")
        settings = settings.model_copy(update={"mongo_uri": uri, "auth": auth})
        if settings.storage_backend == "local":
            console.print(f"local object store: {settings.objects_dir}/<bucket>/<key>")
        settings.resolved_signing_secret()  # created once here, not raced by workers
        if auth == "header":
            console.print(
                "auth: [yellow]header mode[/yellow]: X-Engineer-ID is trusted as given (local development "
                "only; set MODELHUB_AUTH=token for bearer tokens)"
            )
        elif auth == "oidc":
            console.print(
                f"auth: OIDC: bearer JWTs from {settings.oidc_issuer} (audience {settings.oidc_audience}) "
                "or API tokens (`modelhub token create ...`)"
            )
        else:
            console.print(
                "auth: token mode: send `Authorization: Bearer <token>` "
                "(`modelhub token create --name NAME --principal WHO`)"
            )
        console.print(f"GraphiQL: [bold]http://{settings.host}:{settings.port}/graphql[/bold]")
        proxies = ",".join(settings.trusted_proxies) or None
        server = {"host": settings.host, "port": settings.port, "log_level": "info",
                  "access_log": settings.access_log}  # fmt: skip
        if (log_config := logs.config(settings.log_format)) is not None:
            server["log_config"] = log_config
        # X-Forwarded-For is believed only from configured proxies (uvicorn trusts 127.0.0.1 by default).
        server |= {"proxy_headers": proxies is not None, "forwarded_allow_ips": proxies}
        if workers == 1:
            _run(settings, BodyReadTimeout(create_app(settings), settings.body_timeout_seconds), server, 1)
            return
        env = {
            "MODELHUB_AUTH": auth,
            "MODELHUB_MONGO_URI": uri,
            "MODELHUB_DATA_DIR": str(settings.data_dir),
            "MODELHUB_HOST": settings.host,
            "MODELHUB_PORT": str(settings.port),
        }
        if settings.embedded_state_file is not None:
            env["MODELHUB_EMBEDDED_STATE_FILE"] = str(settings.embedded_state_file.resolve())
        # Every worker writes its samples here and /metrics adds them up (prometheus_client's multiprocess
        # mode); emptied first, since files from an earlier run would add to the counts.
        multiproc = settings.data_dir / "prometheus-multiproc"
        prepare_multiprocess_dir(multiproc)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc.resolve())
        os.environ.update(env)
        _run(settings, "graphql_api.cli:served_app_from_env", server, workers)


def _run(settings: Settings, app: Any, server: dict[str, Any], workers: int) -> None:
    """uvicorn.run, with the connection limits of graphql_api/http/server.py: its guarded HTTP protocol
    reads them from the config (which uvicorn hands to each worker process)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .http.server import ConnectionLimits, GuardedProtocol

    config = uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        http=GuardedProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,
        **server,
    )
    # Per process: the instance's cap shared by its workers (the kernel spreads accepts among them).
    per_worker = max(1, settings.max_connections // workers)
    config.connection_limits = ConnectionLimits(  # type: ignore[attr-defined]
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.keep_alive_seconds,
        per_worker,
    )
    uvicorn_server = uvicorn.Server(config)
    if workers == 1:
        uvicorn_server.run()
        if not uvicorn_server.started:
            raise SystemExit(3)  # as uvicorn.run: the port could not be bound, or startup failed
        return
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def served_app_from_env() -> Any:
    """The uvicorn factory for `--workers N`: the app of app.create_app_from_env behind the body read
    timeout."""
    from .app import create_app_from_env
    from .config import Settings
    from .http.server import BodyReadTimeout

    return BodyReadTimeout(create_app_from_env(), Settings().body_timeout_seconds)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class _LogConsole(Console):
    """The CLI's console as log records (plain text, markup dropped), for MODELHUB_LOG_FORMAT=json."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        from rich.text import Text

        text = " ".join(Text.from_markup(o).plain if isinstance(o, str) else str(o) for o in objects)
        logging.getLogger("modelhub.cli").info("%s", text)


def _log_format(fmt: logs.LogFormat) -> None:
    """With JSON logs, logging is configured before anything is said (uvicorn configures it again the same
    way) and the CLI's own lines (database, auth mode, GraphiQL) become log records: every line is JSON."""
    global console
    if (log_config := logs.config(fmt)) is not None:
        logging.config.dictConfig(log_config)
        console = _LogConsole(stderr=True)


@app.command("seed-demo")
def seed_demo(
    models: Annotated[int, typer.Option(min=1, help="Models to register.")] = 50,
    events: Annotated[int, typer.Option(min=0, help="Download events to create.")] = 100_000,
    days: Annotated[int, typer.Option(min=1, help="Spread the events over this many past days.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 1,
    force: Annotated[
        bool, typer.Option(help="Add demo models beside existing data (never touching other models).")
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """Fill an empty database with realistic demo models (bucket modelhub-demo, names under demo/) and their
    downloads, for GraphiQL and Grafana."""
    from . import demo

    with _database({"data_dir": data_dir}) as (settings, uri):
        objects = settings.objects_dir if settings.storage_backend == "local" else None
        started = time.perf_counter()
        work = demo.seed(models, events, days, seed, objects, force=force)
        try:
            result = asyncio.run(_with_db(uri, settings.mongo_db, work))
        except demo.DemoRefused as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        elapsed = time.perf_counter() - started
    console.print(
        f"seeded {result.models} new models ({result.versions} versions in s3://{demo.DEMO_BUCKET}, names "
        f"under {demo.DEMO_PREFIX}), {result.events} download events of those models and "
        f"{result.rollups} rollup buckets in {elapsed:.1f} s"
    )
    if objects is None:
        console.print(
            "[yellow]note:[/yellow] artifacts are not uploaded to S3; demo downloads will fail there"
        )


@contextlib.contextmanager
def _database(
    overrides: dict[str, Any], reuse_running: bool = True, supervise: bool = False
) -> Iterator[tuple[Settings, str]]:
    """Settings (with the non-None `overrides`) and a MongoDB URI: the configured one, the embedded
    server a running `modelhub serve` keeps (if `reuse_running`), or an embedded server for this `with`."""
    from .config import Settings
    from .embedded import EmbeddedMongo, EmbeddedUnavailable

    settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    uri = settings.mongo_uri or (EmbeddedMongo.running_uri(settings.data_dir) if reuse_running else None)
    if uri:
        yield settings, uri
        return
    embedded = EmbeddedMongo(settings.data_dir)
    try:
        uri = embedded.start()
    except EmbeddedUnavailable as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"embedded database: {uri} (data in {settings.data_dir / 'db'})")
    if supervise:
        embedded.supervise()
        settings = settings.model_copy(update={"embedded_state_file": embedded.state_path})
    try:
        yield settings, uri
    finally:
        embedded.stop()
        console.print("embedded database stopped")


# --- client commands: they talk to a running server over HTTP, through the SDK -------------------------

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
def _client(url: str | None, engineer: str | None, token: str | None) -> Iterator[ModelhubClient]:
    """The SDK client; any error it raises becomes one line on stderr and exit code 1 (no traceback)."""
    try:
        with ModelhubClient(url, engineer, token=token) as client:
            yield client
    except ModelhubError as exc:
        console.print(f"[red]error:[/red] {exc.code}: {escape(exc.message)}")
        raise typer.Exit(1) from None
    except (httpx.HTTPError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc) or type(exc).__name__)}")
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _progress(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar (bytes, rate, ETA) on a terminal; nothing with --quiet or when piped."""
    if quiet or not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _reason(error: str | None) -> str:
    return f": {error}" if error else ""


def _when(moment: datetime) -> str:
    """A time as the tables show it: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{size} B"


@app.command()
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
    with _client(url, engineer, token) as client, _progress(f"push {file.name}", quiet) as progress:
        made = client.push(
            file, name, project, version=version, tags=tag, description=description, progress=progress
        )
    checksum = made.sha256 or f"{made.checksum_status.lower()} (the server is hashing it)"
    console.print(f"pushed {made.name} version {made.version}: {_human(made.size_bytes)}, sha256 {checksum}")
    print(made.ref)


@app.command("list")
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
    with _client(url, engineer, token) as client:
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
            _human(latest.size_bytes) if latest else "-",
            str(r.download_count),
            _when(r.created_at),
        )
    Console().print(table)
    if not rows:
        console.print("no models match")


app.command("models", hidden=True, help="Same as `list`.")(list_models)


@app.command()
def info(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    url: Url = None,
    engineer: Engineer = None,
    token: Token = None,
) -> None:
    """Show one version (the latest by default): artifact, checksum, aliases, downloads."""
    name, version, alias = parse_ref(ref)
    with _client(url, engineer, token) as client:
        v = client.info(name, version, alias)
    model = v.model
    lines = [
        ("model", f"{v.name} (project {v.project_name})"),
        ("version", f"{v.version}" + (" [archived]" if v.archived else "")),
        ("owner", v.owner),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("artifact", f"{v.storage_uri} ({_human(v.size_bytes)}, {v.content_type})"),
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


@app.command()
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
    with _client(url, engineer, token) as client, _progress(f"download {name}", quiet) as progress:
        result = client.download(name, dest, version, alias=alias, presigned=presigned, progress=progress)
    rate = result.bytes_written / max(result.seconds, 1e-9) / 1e6
    resumed = f", resumed at byte {result.resumed_from:,}" if result.resumed_from else ""
    check = "verified" if result.verified else "not verified yet: the server has not hashed it"
    console.print(
        f"{result.path}: {name} version {result.version}, {_human(result.size)}, sha256 {result.sha256} "
        f"({check}; {rate:.1f} MB/s{resumed})"
    )


@app.command()
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
    with _client(url, engineer, token) as client:
        rows = client.stats(dims, interval.upper() if interval else None, **flt)
    columns = {
        "MODEL": "model_name", "VERSION": "version", "PROJECT": "project_name", "ENGINEER": "engineer",
        "MODE": "mode", "STATUS": "status",
    }  # fmt: skip
    shown = [columns[d] for d in dims if d in columns]
    headers = [c.replace("_name", "Name") for c in shown]  # the GraphQL field names, as before
    table = Table(*(["period"] if interval else []), *headers, "downloads", "completed", "failed", "bytes")
    for r in rows:
        period = [_when(r.period_start)[:16]] if interval and r.period_start else [""] if interval else []
        cells = [escape(str(getattr(r, c))) for c in shown]
        table.add_row(
            *period, *cells, str(r.downloads), str(r.completed), str(r.failed), _human(r.total_bytes)
        )
    Console().print(table)


@app.command("rebuild-rollups")
def rebuild_rollups(
    since: Annotated[datetime | None, typer.Option(help="Only the days from this date on (UTC).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """Recompute the daily download rollups from the raw events (a repair tool; run it when quiet). Days
    older than MODELHUB_EVENT_RETENTION_DAYS keep their rollups: their raw events may be gone."""
    from .analytics.rollups import rebuild_rollups as rebuild
    from .analytics.stats import retention_horizon

    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    with _database({"data_dir": data_dir}) as (settings, uri):
        started = time.perf_counter()
        horizon = retention_horizon(settings.event_retention_days)
        buckets = asyncio.run(_with_db(uri, settings.mongo_db, rebuild(when, horizon=horizon)))
    console.print(f"rebuilt {buckets} rollup buckets in {time.perf_counter() - started:.1f} s")


@app.command()
def prune(
    not_downloaded_for_days: Annotated[
        int, typer.Option(help="Versions nobody has downloaded (nor registered) for this many days.")
    ] = 90,
    keep_latest: Annotated[int, typer.Option(help="Keep each model's N newest unarchived versions.")] = 1,
    keep_aliased: Annotated[bool, typer.Option(help="Keep every version an alias points at.")] = True,
    project: Annotated[list[str] | None, typer.Option(help="Only this project (repeatable).")] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply/--dry-run",
            help="--dry-run (the default) lists the candidates; --apply archives them and deletes the "
            "objects of those whose grace period (MODELHUB_PRUNE_GRACE_DAYS) is over.",
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """Usage-driven clean-up of versions nobody downloads any more (straight on the database and store, as
    an ADMIN). A download or an unarchive during the grace period cancels a deletion; a pruned version
    stays as a tombstone with its history and figures. Safe to rerun after a crash: it resumes."""
    from .auth import Principal
    from .errors import DomainError
    from .prune import RetentionRequest

    req = RetentionRequest(not_downloaded_for_days, keep_latest, keep_aliased, project or None)
    with _database({"data_dir": data_dir}) as (settings, uri):
        try:
            if apply:
                asyncio.run(
                    _with_db(
                        uri, settings.mongo_db, _prune_apply(settings, req, Principal("cli", Role.ADMIN))
                    )
                )
            else:
                asyncio.run(_with_db(uri, settings.mongo_db, _prune_dry_run(settings, req)))
        except DomainError as exc:
            console.print(f"[red]{exc.code}[/red] {exc.message}")
            raise typer.Exit(1) from None


async def _prune_dry_run(settings: Settings, req: Any) -> None:
    from .prune import candidates

    found = await candidates(settings, req)
    print("model\tversion\tbytes\treclaimable\tlast_downloaded\tdelete_after")
    for c in found.candidates:
        last = c.last_downloaded_at.isoformat() if c.last_downloaded_at else "never"
        due = c.delete_after.isoformat() if c.delete_after else "-"
        print(
            f"{c.version.name}\t{c.version.version}\t{c.version.size_bytes}\t{c.reclaimable_bytes}\t{last}\t{due}"
        )
    print(
        f"{len(found.candidates)} candidates not downloaded since {found.not_downloaded_since.isoformat()}: "
        f"{found.total_bytes} bytes, {found.reclaimable_bytes} reclaimable "
        f"({_human(found.reclaimable_bytes)}); grace period {found.grace_days:g} days"
    )


async def _prune_apply(settings: Settings, req: Any, who: Any) -> None:
    from contextlib import AsyncExitStack

    from .app import open_store
    from .prune import Outcome, Step, apply

    def report(step: Step) -> None:  # one line per step, flushed: a killed run has said what it did
        print(
            f"{step.outcome.value}\t{step.version.name}\t{step.version.version}\t{step.freed_bytes}",
            flush=True,
        )

    async with AsyncExitStack() as stack:
        store = await open_store(settings, stack)
        done = await apply(settings, store, who, req, report)
    counts = {o: done.count(o) for o in Outcome}
    print(
        f"archived {counts[Outcome.ARCHIVED]}, deleted {counts[Outcome.DELETED]} "
        f"({_human(done.freed_bytes)} freed), tombstones of shared objects {counts[Outcome.TOMBSTONED]}, "
        f"given back after a download {counts[Outcome.CANCELLED]}, left alone {counts[Outcome.SKIPPED]}"
    )


async def _with_db(uri: str, db: str, work: Coroutine[Any, Any, T]) -> T:
    from .db import connect

    async with connect(uri, db):
        return await work


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

    from .audit import record_now
    from .documents import AuditEvent, AuditKind
    from .errors import DomainError

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


tokens_app = typer.Typer(help="Bearer tokens: create, list, revoke (straight on the database).")
app.add_typer(tokens_app, name="token")


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
    from .auth import create_token, list_tokens
    from .documents import ClientKind
    from .errors import DomainError

    try:
        grants = parse_grants(grant or [])
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if role is None and not grants:
        role = Role.READER
    client_kind = None
    if kind is not None:
        if kind.upper() not in ClientKind.__members__:
            console.print(f"[red]error:[/red] --kind must be one of {', '.join(ClientKind)}")
            raise typer.Exit(2)
        client_kind = ClientKind(kind.upper())
    value = os.environ.get(value_from_env) if value_from_env else None
    if value_from_env and not value:
        console.print(f"[red]error:[/red] ${value_from_env} is empty")
        raise typer.Exit(2)
    with _database({"data_dir": data_dir}) as (settings, uri):
        if exist_ok and name in {
            t.name for t in asyncio.run(_with_db(uri, settings.mongo_db, list_tokens()))
        }:
            console.print(f"token {name!r} exists; kept")
            return
        made = create_token(
            name, principal, role, "cli", expires_in_days, value, grants, client_kind=client_kind
        )
        try:
            token, _ = asyncio.run(_with_db(uri, settings.mongo_db, _audited("token create", name, made)))
        except DomainError as exc:
            console.print(f"[red]{exc.code}[/red] {exc.message}")
            raise typer.Exit(1) from None
    console.print(f"created {describe_roles(role, grants)} token {name!r} for {principal}")
    print(token)


@tokens_app.command("list")
def token_list(
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """List tokens (never their values)."""
    from rich.table import Table

    from .auth import expires_label, list_tokens

    with _database({"data_dir": data_dir}) as (settings, uri):
        found = asyncio.run(_with_db(uri, settings.mongo_db, list_tokens()))
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
    from .auth import revoke_token
    from .errors import DomainError

    with _database({"data_dir": data_dir}) as (settings, uri):
        try:
            asyncio.run(_with_db(uri, settings.mongo_db, _audited("token revoke", name, revoke_token(name))))
        except DomainError as exc:
            console.print(f"[red]{exc.code}[/red] {exc.message}")
            raise typer.Exit(1) from None
    console.print(f"revoked {name!r}")


@app.command("audit")
def audit_list(
    principal: Annotated[str | None, typer.Option(help="Only this principal's records.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. createToken.")] = None,
    project: Annotated[str | None, typer.Option(help="Only records about this project.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome, e.g. FORBIDDEN.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this moment on (UTC unless it says).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many records.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """The audit trail, newest first (straight on the database, like `token`: whoever reaches it is an
    ADMIN)."""
    from .db.audit import AuditFilter

    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    flt = AuditFilter(principal=principal, action=action, project=project, outcome=outcome, since=when)
    with _database({"data_dir": data_dir}) as (settings, uri):
        records = asyncio.run(_with_db(uri, settings.mongo_db, _audit_records(flt, limit)))
    if as_json:
        for r in records:
            print(json.dumps(r, default=str))
        return
    from rich.table import Table

    table = Table("at", "kind", "principal", "action", "target", "project", "outcome", "from")
    for r in records:
        table.add_row(
            *(str(r[k] if r[k] is not None else "-") for k in ("at", "kind", "principal", "action")),
            *(str(r[k] if r[k] is not None else "-") for k in ("target", "project", "outcome")),
            f"{r['client_address'] or '-'} ({r['transport']})",
        )
    Console().print(table)


async def _audit_records(flt: Any, limit: int) -> list[dict[str, Any]]:
    from .db import audit as audit_db
    from .pagination import MAX_PAGE, PageRequest

    out: list[dict[str, Any]] = []
    after: str | None = None
    while len(out) < limit:
        page = await audit_db.page(flt, PageRequest(first=min(MAX_PAGE, limit - len(out)), after=after), None)
        out += [doc.model_dump(mode="json", exclude={"id", "revision_id"}) for doc, _ in page.items]
        if not page.has_next or not page.items:
            break
        after = page.items[-1][1]
    return out


@app.command("export-schema")
def export_schema(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the SDL.")] = Path(
        "schema.graphql"
    ),
) -> None:
    """Write the GraphQL schema (SDL) that the code defines."""
    output.write_text(schema_sdl())
    console.print(f"wrote {output}")


operations_app = typer.Typer(
    help="Persisted operations: register what a frontend may run.", no_args_is_help=True
)
app.add_typer(operations_app, name="operations")


def _manifest(path: Path) -> list[str]:
    """Operation texts from a .graphql file (each operation with the fragments it uses) or a JSON manifest:
    Apollo's {"operations": [{"id", "body"}]} or a {hash: text} map; a hash must match its text."""
    from .operations import sha256_of
    from .schema import operations as schema_operations

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
        console.print(f"modelhub: {escape(file.name)}: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if not bodies:
        console.print(f"modelhub: {escape(file.name)} holds no operation")
        raise typer.Exit(1)
    with _client(url, None, token) as client:
        registered = client.register_operations(bodies)
    table = Table("operation", "sha256", "")
    for op in registered:
        table.add_row(op.name or "(anonymous)", op.sha256_hash, "new" if op.created else "already registered")
    Console().print(table)


@app.command("fetch-assets")
def fetch_assets(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to put them (default: MODELHUB_ASSETS_DIR, else the package)."),
    ] = None,
) -> None:
    """Fetch GraphiQL's pinned assets with `npm pack`, integrity-checked, so the app serves them itself."""
    from strawberry.http.ides import get_graphql_ide_html

    from .config import Settings
    from .http import assets

    target = directory or Settings().assets_dir or assets.default_dir()
    wanted = assets.pinned(get_graphql_ide_html(graphql_ide="graphiql"))
    try:
        wrote = assets.fetch(target, wanted)
    except (assets.AssetError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"modelhub: {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(
        f"GraphiQL: {len(wanted)} assets in {target} ({len(wrote)} fetched now, each integrity-checked)"
    )


def schema_sdl() -> str:
    from .schema import build_schema

    return build_schema().as_str() + "\n"


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:
        # A plain `pip install modelhub` is the client: a server command (serve, seed-demo, token, ...) finds
        # the server stack missing when it imports it, and says in one line what to install.
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == __package__:
            raise
        print(
            f"modelhub: this command runs the server, which is not installed ({missing} is missing): "
            'pip install "modelhub[server]"',
            file=sys.stderr,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
