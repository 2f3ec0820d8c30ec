"""Server-side processes: `serve` (uvicorn, workers, connection limits), `export-schema`, `fetch-assets`, and
the database a server-side command runs on (configured, a running server's, or embedded for the command)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from .. import logs
from . import render
from .render import log_format

if TYPE_CHECKING:
    from ..config import Settings

# The server stack (Strawberry, Beanie, aioboto3, uvicorn) is imported inside the commands that use it:
# client commands (push, list, info, download, stats) start in a fraction of the time without it.

T = TypeVar("T")


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    data_dir: Annotated[Path | None, typer.Option(help="Where embedded data and local objects live.")] = None,
) -> None:
    """Serve the API; with no MODELHUB_MONGO_URI, start the embedded database under the data dir."""
    from ..app import create_app
    from ..config import Settings
    from ..http.body_timeout import BodyReadTimeout
    from ..metrics import prepare_multiprocess_dir

    log_format(Settings().log_format)
    overrides = {"host": host, "port": port, "data_dir": data_dir}
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it lets the `with` stop the
    # embedded database instead of the process dying with the database still running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with database(overrides, reuse_running=False, supervise=True) as (settings, uri):
        # Header identities are for the embedded quick start only; a configured database means tokens.
        auth = settings.auth or ("header" if settings.mongo_uri is None else "token")
        settings = settings.model_copy(update={"mongo_uri": uri, "auth": auth})
        if settings.storage_backend == "local":
            render.console.print(f"local object store: {settings.objects_dir}/<bucket>/<key>")
        settings.resolved_signing_secret()  # created once here, not raced by workers
        _say_auth(settings)
        render.console.print(f"GraphiQL: [bold]http://{settings.host}:{settings.port}/graphql[/bold]")
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
        _run(settings, "graphql_api.cli.server:served_app_from_env", server, workers)


def _say_auth(settings: Settings) -> None:
    """Which identities the server believes, and how a client sends one."""
    if settings.auth == "header":
        render.console.print(
            "auth: [yellow]header mode[/yellow]: X-Engineer-ID is trusted as given (local development "
            "only; set MODELHUB_AUTH=token for bearer tokens)"
        )
    elif settings.auth == "oidc":
        render.console.print(
            f"auth: OIDC: bearer JWTs from {settings.oidc_issuer} (audience {settings.oidc_audience}) "
            "or API tokens (`modelhub token create ...`)"
        )
    else:
        render.console.print(
            "auth: token mode: send `Authorization: Bearer <token>` "
            "(`modelhub token create --name NAME --principal WHO`)"
        )


def uvicorn_config(settings: Settings, app: Any, server: dict[str, Any], workers: int) -> Any:
    """The uvicorn config of `modelhub serve`: the guarded HTTP and WebSocket protocols and their connection
    limits (the WebSocket one also bounds the closing handshake: http/ws_protocol.py), and WebSocket
    messages capped at MODELHUB_MAX_BODY_BYTES as request bodies are."""
    import uvicorn

    from ..http.protocols import GuardedProtocol, GuardedWebSocketProtocol
    from ..http.server import ConnectionLimits

    config = uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        http=GuardedProtocol,
        ws=GuardedWebSocketProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,
        ws_max_size=settings.max_body_bytes,
        **server,
    )
    # Per process: the instance's cap shared by its workers (the kernel spreads accepts among them).
    per_worker = max(1, settings.max_connections // workers)
    config.connection_limits = ConnectionLimits(  # type: ignore[attr-defined]
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.keep_alive_seconds,
        per_worker,
        settings.max_header_bytes,
        settings.max_header_count,
    )
    return config


def _run(settings: Settings, app: Any, server: dict[str, Any], workers: int) -> None:
    """uvicorn.run, with the connection limits of graphql_api/http/server.py: its guarded HTTP protocol
    reads them from the config (which uvicorn hands to each worker process)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config(settings, app, server, workers)
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
    from ..app import create_app_from_env
    from ..config import Settings
    from ..http.body_timeout import BodyReadTimeout

    return BodyReadTimeout(create_app_from_env(), Settings().body_timeout_seconds)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def database(
    overrides: dict[str, Any], reuse_running: bool = True, supervise: bool = False
) -> Iterator[tuple[Settings, str]]:
    """Settings (with the non-None `overrides`) and a MongoDB URI: the configured one, the embedded
    server a running `modelhub serve` keeps (if `reuse_running`), or an embedded server for this `with`."""
    from ..config import Settings
    from ..embedded import EmbeddedMongo, EmbeddedUnavailable

    settings = Settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    uri = settings.mongo_uri or (EmbeddedMongo.running_uri(settings.data_dir) if reuse_running else None)
    if uri:
        yield settings, uri
        return
    embedded = EmbeddedMongo(settings.data_dir)
    try:
        uri = embedded.start()
    except EmbeddedUnavailable as exc:
        render.console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    render.console.print(f"embedded database: {uri} (data in {settings.data_dir / 'db'})")
    if supervise:
        embedded.supervise()
        settings = settings.model_copy(update={"embedded_state_file": embedded.state_path})
    try:
        yield settings, uri
    finally:
        embedded.stop()
        render.console.print("embedded database stopped")


async def with_db(uri: str, db: str, work: Coroutine[Any, Any, T]) -> T:
    from ..db import connect

    async with connect(uri, db):
        return await work


def export_schema(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the SDL.")] = Path(
        "schema.graphql"
    ),
) -> None:
    """Write the GraphQL schema (SDL) that the code defines."""
    output.write_text(schema_sdl())
    render.console.print(f"wrote {output}")


def fetch_assets(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to put them (default: MODELHUB_ASSETS_DIR, else the package)."),
    ] = None,
) -> None:
    """Fetch GraphiQL's pinned assets with `npm pack`, integrity-checked, so the app serves them itself."""
    from strawberry.http.ides import get_graphql_ide_html

    from ..config import Settings
    from ..http import assets

    target = directory or Settings().assets_dir or assets.default_dir()
    wanted = assets.pinned(get_graphql_ide_html(graphql_ide="graphiql"))
    try:
        wrote = assets.fetch(target, wanted)
    except (assets.AssetError, OSError, subprocess.SubprocessError) as exc:
        render.console.print(f"modelhub: {escape(str(exc))}")
        raise typer.Exit(1) from None
    render.console.print(
        f"GraphiQL: {len(wanted)} assets in {target} ({len(wrote)} fetched now, each integrity-checked)"
    )


def schema_sdl() -> str:
    from ..schema import build_schema

    return build_schema().as_str() + "\n"
