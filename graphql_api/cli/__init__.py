"""The `modelhub` command: its command tree, in the order `--help` lists it, and `main`.

| module | commands |
|---|---|
| `server` | `serve`, `export-schema`, `fetch-assets`; the database a server-side command runs on |
| `admin` | `seed-demo`, `rebuild-rollups`, `prune`, `audit` (straight on the database) |
| `tokens` | `token create/list/revoke` (straight on the database) |
| `client` | `push`, `list`, `info`, `download`, `stats`, `operations push` (over HTTP, through the SDK) |
| `render` | the console, progress bars, sizes and times they print |

Importing this package loads no server module: the server stack (Strawberry, Beanie, aioboto3, uvicorn) is
imported by the commands that run it, so a client-only install runs the client commands.
"""

from __future__ import annotations

import sys

import typer

from . import admin, client, server, tokens
from .server import schema_sdl

__all__ = ["app", "main", "schema_sdl"]

app = typer.Typer(help="modelhub: a GraphQL registry for ML model artifacts.", no_args_is_help=True)
app.command()(server.serve)
app.command("seed-demo")(admin.seed_demo)
app.command()(client.push)
app.command("list")(client.list_models)
app.command("models", hidden=True, help="Same as `list`.")(client.list_models)
app.command()(client.info)
app.command()(client.download)
app.command()(client.stats)
app.command("rebuild-rollups")(admin.rebuild_rollups)
app.command()(admin.prune)
app.add_typer(tokens.tokens_app, name="token")
app.command("audit")(admin.audit_list)
app.command("export-schema")(server.export_schema)
app.add_typer(client.operations_app, name="operations")
app.command("fetch-assets")(server.fetch_assets)


def main() -> None:
    """Runs the command line; on a client-only install, a server command says in one line what to install."""
    try:
        app()
    except ModuleNotFoundError as exc:
        # A plain `pip install modelhub` is the client: a server command (serve, seed-demo, token, ...) finds
        # the server stack missing when it imports it, and says in one line what to install.
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == __name__.partition(".")[0]:
            raise
        print(
            f"modelhub: this command runs the server, which is not installed ({missing} is missing): "
            'pip install "modelhub[server]"',
            file=sys.stderr,
        )
        raise SystemExit(1) from None
