"""Realistic demo data: models and download events with Zipf popularity, daily rhythm, KB to GB sizes."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beanie import PydanticObjectId
from bson import ObjectId

from .analytics.rollups import RollupBuilder
from .client_kind import client_version
from .db import events as events_db
from .db import models as models_db
from .db import projects as projects_db
from .documents import (
    ChecksumStatus,
    ClientKind,
    DownloadEvent,
    DownloadMode,
    DownloadStatus,
    ModelVersion,
    RegisteredModel,
)
from .storage.local import file_etag

# Demo data lives apart from everyone's: its own bucket and a name prefix, so it never touches real models.
DEMO_BUCKET = "modelhub-demo"
DEMO_PREFIX = "demo/"

PROJECTS = ["vision", "nlp", "speech", "recsys", "forecasting", "robotics"]
FAMILIES = [
    "resnet",
    "bert",
    "whisper",
    "llama",
    "yolo",
    "t5",
    "clip",
    "wav2vec",
    "dlrm",
    "prophet",
    "sam",
    "vit",
]
FIRST = [
    "ana",
    "ben",
    "chen",
    "dara",
    "eli",
    "fatima",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kai",
    "lena",
    "mo",
    "nia",
]
# (kind, rule) of demo downloads and how often: mostly CI jobs, then people, a few crawlers.
_KINDS = [(ClientKind.CI, "header"), (ClientKind.HUMAN, "header"), (ClientKind.BOT, "user-agent"),
          (ClientKind.UNKNOWN, "default")]  # fmt: skip
_KIND_WEIGHTS = [0.55, 0.3, 0.03, 0.12]
AGENTS = ["modelhub-sdk/0.2", "python-httpx/0.28", "curl/8.5", "aws-cli/2.15", "Mozilla/5.0"]


@dataclass
class DemoResult:
    models: int
    versions: int
    events: int
    rollups: int


class DemoRefused(Exception):
    """The database holds data already; demo data goes only into an empty one unless forced."""


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (rank**s) for rank in range(1, n + 1)]


def _hour_weight(moment: datetime) -> float:
    # Busy in the (UTC) afternoon, quiet at night, lighter at weekends.
    daily = 0.25 + math.sin(math.pi * ((moment.hour - 6) % 24) / 24) ** 2
    return daily * (0.4 if moment.weekday() >= 5 else 1.0)


def build_models(count: int, rng: random.Random, now: datetime) -> list[ModelVersion]:
    models = []
    for i in range(count):
        family = FAMILIES[i % len(FAMILIES)]
        project = PROJECTS[(i // len(FAMILIES) + i) % len(PROJECTS)]
        name = f"{DEMO_PREFIX}{project}/{family}-{i // len(FAMILIES) + 1}"
        size = int(10 ** rng.uniform(4, 9.9))  # 10 KB .. 8 GB, log-uniform
        models.append(
            ModelVersion(
                name=name,
                version=1 + i % 3,
                project_name=project,
                owner=rng.choice(FIRST),
                description=f"{family} fine-tuned for {project}",
                tags=rng.sample(["prod", "staging", "experimental", "quantized", "fp16", "onnx"], 2),
                metadata={
                    "framework": rng.choice(["pytorch", "jax", "onnx"]),
                    "params_m": rng.randint(5, 7000),
                },
                bucket=DEMO_BUCKET,
                key=f"{name}/v{1 + i % 3}/model.bin",
                size_bytes=size,
                etag=f'"demo-{i}"',
                content_type="application/octet-stream",
                created_at=now - timedelta(days=rng.uniform(30, 120)),
                checksum_status=ChecksumStatus.UNAVAILABLE,
                checksum_error="demo data: the artifact is a sparse placeholder and was not hashed",
            )
        )
    return models


def build_events(
    models: list[ModelVersion], count: int, days: int, rng: random.Random, now: datetime
) -> list[DownloadEvent]:
    engineers = [f"{rng.choice(FIRST)}.{chr(97 + i % 26)}{i}" for i in range(40)]
    model_weights = _zipf_weights(len(models))
    engineer_weights = _zipf_weights(len(engineers), 0.8)
    start = now - timedelta(days=days)
    # Client kinds from a generator of their own, so the rest of the demo data stays what it was.
    kinds = random.Random(count * 31 + days)
    events: list[DownloadEvent] = []
    while len(events) < count:
        moment = start + timedelta(seconds=rng.uniform(0, days * 86400))
        if rng.random() > _hour_weight(moment):  # thinning gives the daily and weekly rhythm
            continue
        model = rng.choices(models, model_weights)[0]
        mode = DownloadMode.STREAM if rng.random() < 0.7 else DownloadMode.PRESIGNED
        status, sent, duration = _outcome(model, mode, rng)
        started = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        engineer = rng.choices(engineers, engineer_weights)[0]
        agent = rng.choice(AGENTS)  # drawn in the order they always were
        kind, rule = kinds.choices(_KINDS, _KIND_WEIGHTS)[0]
        finished = started + timedelta(seconds=duration) if duration is not None else None
        events.append(
            DownloadEvent.of_version(
                model,
                id=ObjectId(),
                engineer=engineer,
                user_agent=agent,
                client_kind=kind,
                client_kind_rule=rule,
                client_version=client_version(agent),
                client_address=f"127.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}",
                mode=mode,
                status=status,
                bytes_sent=sent,
                completes=status is DownloadStatus.COMPLETED,
                started_at=started,
                transfer_started_at=started
                if mode is DownloadMode.STREAM and status is not DownloadStatus.ISSUED
                else None,
                finished_at=finished,
                duration_seconds=round(duration, 3) if duration is not None else None,
                expires_at=started + timedelta(minutes=15),
            )
        )
    return events


def _outcome(
    model: ModelVersion, mode: DownloadMode, rng: random.Random
) -> tuple[DownloadStatus, int, float | None]:
    """A demo download's status, bytes sent and duration (a presigned one stays ISSUED)."""
    status: DownloadStatus = DownloadStatus.ISSUED
    sent: int = 0
    duration: float | None = None
    if mode is DownloadMode.STREAM:
        roll = rng.random()
        throughput = rng.lognormvariate(math.log(80e6), 0.8)  # bytes/s
        full = model.size_bytes / throughput + rng.uniform(0.005, 0.05)
        if roll < 0.92:
            status, sent, duration = DownloadStatus.COMPLETED, model.size_bytes, full
        elif roll < 0.97:
            frac = rng.random()
            status, sent, duration = DownloadStatus.ABORTED, int(model.size_bytes * frac), full * frac
        elif roll < 0.985:
            status, sent, duration = (
                DownloadStatus.FAILED,
                int(model.size_bytes * rng.random() * 0.5),
                1.0,
            )
    return status, sent, duration


async def seed(
    models: int,
    events: int,
    days: int = 30,
    seed_value: int = 1,
    objects_dir: Path | None = None,
    force: bool = False,
    batch: int = 20_000,
) -> DemoResult:
    """Inserts demo models (bucket `modelhub-demo`, names under `demo/`), download events of those models
    only, and their rollups. It refuses a database that holds any model or download unless `force`; even
    then it never adds versions or events to anyone else's models. With `objects_dir`, sparse artifact
    files too (their ETags are the files'). Events go in `batch` at a time; their rollups are written once,
    after the last batch, so each bucket is updated once however many events it counts (a seed stopped
    midway leaves events without rollups: `modelhub rebuild-rollups` mends that)."""
    if not force:
        await _refuse_unless_empty()
    rng = random.Random(seed_value)
    now = datetime.now(UTC)
    model_docs = build_models(models, rng, now)
    existing = await models_db.existing_versions()
    names = sorted({m.name for m in model_docs})
    taken = await models_db.find_models(names)
    # A demo name someone registered for real (a version outside the demo bucket) is theirs: left alone.
    foreign = await models_db.names_with_versions_outside(names, DEMO_BUCKET)
    fresh = [m for m in model_docs if (m.name, m.version) not in existing and m.name not in foreign]
    for m in fresh:
        m.id = PydanticObjectId()
        if objects_dir is not None:
            m.etag = _artifact_etag(objects_dir, m)
    if fresh:
        await models_db.insert_many_versions(fresh)
    parents = {m.name: m for m in fresh if m.name not in taken}.values()
    new_models = [
        RegisteredModel(name=m.name, project_name=m.project_name, owner=m.owner, tags=m.tags) for m in parents
    ]
    if new_models:
        await models_db.insert_many_models(new_models)
    # Their projects INTERNAL, as a first registration makes them: every authenticated caller (one with
    # project grants only too) reads the demo models. A project that exists keeps its visibility.
    await projects_db.ensure_many(sorted({m.project_name for m in fresh}))
    ours = [
        v
        for v in await models_db.versions_in_bucket(DEMO_BUCKET)
        if v.name.startswith(DEMO_PREFIX) and v.name not in foreign
    ]
    total = 0
    builder = RollupBuilder()
    while ours and total < events:
        chunk = build_events(ours, min(batch, events - total), days, rng, now)
        for e in chunk:
            builder.add(e)
        await events_db.insert_many([e.model_dump(by_alias=True) for e in chunk])
        total += len(chunk)
    rollups = await builder.save()
    return DemoResult(models=len(new_models), versions=len(fresh), events=total, rollups=rollups)


async def _refuse_unless_empty() -> None:
    """DemoRefused when the database holds any model or download."""
    have_models, have_events = await models_db.count_models(), await events_db.count_all()
    if have_models or have_events:
        raise DemoRefused(
            f"the database is not empty ({have_models} models, {have_events} downloads); seed-demo fills "
            "only an empty one (pass --force to add demo models beside them)"
        )


def _artifact_etag(objects_dir: Path, m: ModelVersion) -> str:
    """The ETag of a demo version's artifact under `objects_dir`, written first (sparse) when missing."""
    path = objects_dir / m.bucket / m.key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            fh.truncate(m.size_bytes)  # sparse: GB-sized artifacts that take no disk
    return file_etag(path.stat())
