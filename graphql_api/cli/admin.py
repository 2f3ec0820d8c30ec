"""Administration straight on the database (and store), as an ADMIN: `seed-demo`, `rebuild-rollups`, `prune`,
`audit`. Each imports the server stack when it runs."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ..roles import Role
from . import render
from .render import human
from .server import database, with_db

if TYPE_CHECKING:
    from ..config import Settings


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
    from .. import demo

    with database({"data_dir": data_dir}) as (settings, uri):
        objects = settings.objects_dir if settings.storage_backend == "local" else None
        started = time.perf_counter()
        work = demo.seed(models, events, days, seed, objects, force=force)
        try:
            result = asyncio.run(with_db(uri, settings.mongo_db, work))
        except demo.DemoRefused as exc:
            render.console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        elapsed = time.perf_counter() - started
    render.console.print(
        f"seeded {result.models} new models ({result.versions} versions in s3://{demo.DEMO_BUCKET}, names "
        f"under {demo.DEMO_PREFIX}), {result.events} download events of those models and "
        f"{result.rollups} rollup buckets in {elapsed:.1f} s"
    )
    if objects is None:
        render.console.print(
            "[yellow]note:[/yellow] artifacts are not uploaded to S3; demo downloads will fail there"
        )


def rebuild_rollups(
    since: Annotated[datetime | None, typer.Option(help="Only the days from this date on (UTC).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The data dir of the embedded default.")] = None,
) -> None:
    """Recompute the download rollups from the raw events (a repair tool), holding the roller's lease
    meanwhile. Days older than MODELHUB_EVENT_RETENTION_DAYS keep their rollups: their raw events may be
    gone."""
    from ..analytics.roller import rebuild_rollups as rebuild
    from ..analytics.stats import retention_horizon

    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    with database({"data_dir": data_dir}) as (settings, uri):
        started = time.perf_counter()
        horizon = retention_horizon(settings.event_retention_days)
        work = rebuild(
            when,
            horizon=horizon,
            lag_seconds=settings.rollup_lag_seconds,
            lease_seconds=settings.rollup_lease_seconds,
        )
        buckets = asyncio.run(with_db(uri, settings.mongo_db, work))
    render.console.print(f"rebuilt {buckets} rollup buckets in {time.perf_counter() - started:.1f} s")


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
    from ..auth import Principal
    from ..errors import DomainError
    from ..prune import RetentionRequest

    req = RetentionRequest(not_downloaded_for_days, keep_latest, keep_aliased, project or None)
    with database({"data_dir": data_dir}) as (settings, uri):
        try:
            if apply:
                asyncio.run(
                    with_db(uri, settings.mongo_db, _prune_apply(settings, req, Principal("cli", Role.ADMIN)))
                )
            else:
                asyncio.run(with_db(uri, settings.mongo_db, _prune_dry_run(settings, req)))
        except DomainError as exc:
            render.console.print(f"[red]{exc.code}[/red] {exc.message}")
            raise typer.Exit(1) from None


async def _prune_dry_run(settings: Settings, req: Any) -> None:
    from ..prune import candidates

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
        f"({human(found.reclaimable_bytes)}); grace period {found.grace_days:g} days"
    )


async def _prune_apply(settings: Settings, req: Any, who: Any) -> None:
    from contextlib import AsyncExitStack

    from ..lifespan import open_store
    from ..prune import Outcome, Step, apply

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
        f"({human(done.freed_bytes)} freed), tombstones of shared objects {counts[Outcome.TOMBSTONED]}, "
        f"given back after a download {counts[Outcome.CANCELLED]}, left alone {counts[Outcome.SKIPPED]}"
    )


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
    from ..db.audit import AuditFilter

    when = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    flt = AuditFilter(principal=principal, action=action, project=project, outcome=outcome, since=when)
    with database({"data_dir": data_dir}) as (settings, uri):
        records = asyncio.run(with_db(uri, settings.mongo_db, _audit_records(flt, limit)))
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
    from ..db import audit as audit_db
    from ..pagination import MAX_PAGE, PageRequest

    out: list[dict[str, Any]] = []
    after: str | None = None
    while len(out) < limit:
        page = await audit_db.page(flt, PageRequest(first=min(MAX_PAGE, limit - len(out)), after=after), None)
        out += [doc.model_dump(mode="json", exclude={"id", "revision_id"}) for doc, _ in page.items]
        if not page.has_next or not page.items:
            break
        after = page.items[-1][1]
    return out
