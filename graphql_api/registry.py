"""Registering, finding, listing and archiving models: the registry's use cases."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .analytics import events
from .db import counters as counters_db
from .db import models as models_db
from .documents import Model
from .errors import DomainError, InvalidInput, ModelAlreadyExists, ModelNotFound
from .pagination import Page, check_first, decode_cursor, encode_cursor
from .queries import DownloadWindow, ModelOrder, ModelQuery
from .services import Services
from .storage import ObjectStore, validate_bucket, validate_key

NAME_RE = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
MAX_METADATA_BYTES = 64 * 1024
MAX_TAGS = 64
MAX_DESCRIPTION = 10_000


def validate_name(value: str, field: str = "name") -> None:
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > 128:
        raise InvalidInput(field, f"must be at most 128 characters, got {len(value)}")
    if not NAME_RE.match(value):
        raise InvalidInput(field, "may use only letters, digits and . _ - /")


def validate_version(version: int | None, field: str = "version") -> None:
    if version is not None and not 1 <= version <= 2**31 - 1:
        raise InvalidInput(field, f"must be at least 1, got {version}")


def _check_keys(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("$") or "\x00" in k:
                raise InvalidInput(path, f"key {k!r} must not start with $ or contain NUL")
            _check_keys(v, path)
    elif isinstance(value, list):
        for v in value:
            _check_keys(v, path)


def validate_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata", "must be a JSON object")
    try:
        size = len(json.dumps(metadata, separators=(",", ":"), allow_nan=False).encode())
    except ValueError as exc:
        raise InvalidInput("metadata", "must be valid JSON (no NaN or Infinity)") from exc
    if size > MAX_METADATA_BYTES:
        raise InvalidInput("metadata", f"must be at most 64 KB as JSON, got {size} bytes")
    _check_keys(metadata, "metadata")
    return metadata


def validate_tags(tags: list[str] | None) -> list[str]:
    if not tags:
        return []
    if len(tags) > MAX_TAGS:
        raise InvalidInput("tags", f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not tag or len(tag) > 64 or any(ord(ch) < 32 for ch in tag):
            raise InvalidInput("tags", f"tag {tag!r} must be 1 to 64 printable characters")
    return list(dict.fromkeys(tags))


@dataclass
class RegisterRequest:
    name: str
    project_name: str
    bucket: str
    key: str
    owner: str
    version: int | None = None
    description: str | None = None
    tags: list[str] | None = None
    metadata: Any = None

    def validate(self) -> None:
        validate_name(self.name)
        validate_version(self.version)
        validate_name(self.project_name, "projectName")
        validate_bucket(self.bucket)
        validate_key(self.key)
        if self.description is not None and len(self.description) > MAX_DESCRIPTION:
            raise InvalidInput("description", f"must be at most {MAX_DESCRIPTION} characters")
        self.tags = validate_tags(self.tags)
        self.metadata = validate_metadata(self.metadata)


async def register_model(store: ObjectStore, req: RegisterRequest) -> Model:
    """Validates, checks the artifact, and inserts; the unique (name, version) index decides every race."""
    req.validate()
    info = await store.head(req.bucket, req.key)

    def build(version: int) -> Model:
        return Model(
            name=req.name,
            version=version,
            project_name=req.project_name,
            owner=req.owner,
            description=req.description,
            tags=req.tags or [],
            metadata=req.metadata or {},
            bucket=req.bucket,
            key=req.key,
            size_bytes=info.size,
            etag=info.etag,
            content_type=info.content_type,
        )

    if req.version is not None:
        doc = build(req.version)
        if not await models_db.insert(doc):
            raise ModelAlreadyExists(req.name, req.version)
        await counters_db.raise_to(req.name, req.version)
        return doc
    while True:
        doc = build(await counters_db.next_version(req.name))
        if await models_db.insert(doc):
            return doc
        # an explicit registration took this number: take the next one


async def register(services: Services, req: RegisterRequest) -> Model:
    """`register_model`, counted in the registrations metric by outcome."""
    counter = services.metrics.registrations
    try:
        model = await register_model(services.store, req)
    except DomainError as exc:
        counter.labels(exc.code.lower()).inc()
        raise
    counter.labels("created").inc()
    return model


async def get_model(name: str, version: int | None = None) -> Model | None:
    """One version, or the newest unarchived one when `version` is None."""
    if version is not None:
        return await models_db.find_version(name, version)
    return await models_db.find_latest(name)


async def require_model(name: str, version: int | None = None) -> Model:
    validate_name(name)
    validate_version(version)
    model = await get_model(name, version)
    if model is None:
        raise ModelNotFound(name, version)
    return model


async def set_archived(name: str, version: int, archived: bool) -> Model:
    validate_name(name)
    validate_version(version)
    model = await models_db.set_archived(name, version, archived)
    if model is None:
        raise ModelNotFound(name, version)
    return model


async def list_models(
    query: ModelQuery,
    order: ModelOrder,
    first: int | None,
    after: str | None,
    window: DownloadWindow | None = None,
) -> Page[Model]:
    if order is ModelOrder.DOWNLOADS_DESC:
        return await _list_by_downloads(query, window or DownloadWindow(), first, after)
    return await models_db.page(query, order, first, after)


async def _list_by_downloads(
    query: ModelQuery, window: DownloadWindow, first: int | None, after: str | None
) -> Page[Model]:
    """Most completed downloads in the window first (ties by name, version); the cursor is an offset."""
    limit = check_first(first)
    offset = 0 if after is None else decode_cursor(after, ModelOrder.DOWNLOADS_DESC.value, 1)[0]
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("after", "malformed cursor")
    counts = await events.completed_by_version(window.since, window.until)
    keys = await models_db.name_versions(query)
    keys.sort(key=lambda k: (-counts.get((k[1], k[2]), 0), k[1], k[2]))
    window_ids = [k[0] for k in keys[offset : offset + limit]]
    by_id = await models_db.get_many(window_ids)
    items = [
        (by_id[model_id], encode_cursor(ModelOrder.DOWNLOADS_DESC.value, [offset + i + 1]))
        for i, model_id in enumerate(window_ids)
    ]
    in_window = {doc.id: counts.get((doc.name, doc.version), 0) for doc, _ in items}

    async def count() -> int:
        return len(keys)

    return Page(
        items=items,
        has_next=offset + limit < len(keys),
        has_previous=offset > 0,
        count=count,
        window_downloads=in_window,
    )
