"""Registering, finding, listing and archiving models: the registry's use cases."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from beanie import SortDirection
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from . import analytics
from .documents import Model, VersionCounter
from .errors import InvalidInput, ModelAlreadyExists, ModelNotFound
from .pagination import Page, check_first, decode_cursor, encode_cursor, keyset_page
from .storage import ObjectStore, validate_bucket, validate_key

NAME_RE = re.compile(r"^[A-Za-z0-9._/-]{1,128}$")
MAX_METADATA_BYTES = 64 * 1024
MAX_TAGS = 64
MAX_DESCRIPTION = 10_000
ASC, DESC = SortDirection.ASCENDING, SortDirection.DESCENDING


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


async def _ensure_counter(name: str) -> None:
    # Created with a plain insert rather than an upsert: concurrent upserting findAndModify calls lost
    # increments on SecantusDB 0.7, while an insert that loses a race simply raises DuplicateKeyError.
    with contextlib.suppress(DuplicateKeyError):
        await VersionCounter.get_pymongo_collection().insert_one({"_id": name, "seq": 0})


async def _next_version(name: str) -> int:
    collection = VersionCounter.get_pymongo_collection()
    for _ in range(2):  # the name's first registration creates its counter, then increments it
        doc = await collection.find_one_and_update(
            {"_id": name}, {"$inc": {"seq": 1}}, return_document=ReturnDocument.AFTER
        )
        if doc is not None:
            return int(doc["seq"])
        await _ensure_counter(name)
    raise RuntimeError(f"version counter for {name!r} could not be created")  # pragma: no cover


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
        try:
            await doc.insert()
        except DuplicateKeyError as exc:
            raise ModelAlreadyExists(req.name, req.version) from exc
        # Later auto-numbered versions continue above an explicit one.
        await _ensure_counter(req.name)
        await VersionCounter.get_pymongo_collection().update_one(
            {"_id": req.name}, {"$max": {"seq": req.version}}
        )
        return doc

    while True:
        version = await _next_version(req.name)
        doc = build(version)
        try:
            await doc.insert()
            return doc
        except DuplicateKeyError:
            continue  # an explicit registration took this number: take the next one


async def get_model(name: str, version: int | None = None) -> Model | None:
    """One version, or the newest unarchived one when `version` is None."""
    if version is not None:
        return await Model.find_one({"name": name, "version": version})
    return await Model.find({"name": name, "archived": False}).sort([("version", DESC)]).first_or_none()


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
    doc = await Model.get_pymongo_collection().find_one_and_update(
        {"name": name, "version": version},
        {"$set": {"archived": archived}},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise ModelNotFound(name, version)
    return cast(Model, Model.model_validate(doc))


class ModelOrder(StrEnum):
    CREATED_AT_DESC = "CREATED_AT_DESC"
    CREATED_AT_ASC = "CREATED_AT_ASC"
    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"
    DOWNLOADS_DESC = "DOWNLOADS_DESC"


SORTS: dict[ModelOrder, list[tuple[str, SortDirection]]] = {
    ModelOrder.CREATED_AT_DESC: [("created_at", DESC), ("_id", DESC)],
    ModelOrder.CREATED_AT_ASC: [("created_at", ASC), ("_id", ASC)],
    ModelOrder.NAME_ASC: [("name", ASC), ("version", ASC)],
    ModelOrder.NAME_DESC: [("name", DESC), ("version", DESC)],
}


@dataclass
class ModelQuery:
    name: str | None = None
    name_prefix: str | None = None
    project_name: str | None = None
    owner: str | None = None
    tags: list[str] = field(default_factory=list)
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_archived: bool = False

    def to_mongo(self) -> dict[str, Any]:
        q: dict[str, Any] = {}
        if self.name is not None:
            matches = not self.name_prefix or self.name.startswith(self.name_prefix)
            q["name"] = self.name if matches else {"$in": []}
        elif self.name_prefix:
            q["name"] = {"$regex": "^" + re.escape(self.name_prefix)}
        if self.project_name is not None:
            q["project_name"] = self.project_name
        if self.owner is not None:
            q["owner"] = self.owner
        if self.tags:
            q["tags"] = {"$all": self.tags}
        if self.created_after or self.created_before:
            if self.created_after and self.created_before and self.created_after > self.created_before:
                raise InvalidInput("filter.createdAfter", "must not be later than createdBefore")
            rng: dict[str, Any] = {}
            if self.created_after:
                rng["$gte"] = self.created_after
            if self.created_before:
                rng["$lt"] = self.created_before
            q["created_at"] = rng
        if not self.include_archived:
            q["archived"] = False
        return q


@dataclass
class DownloadWindow:
    since: datetime | None = None
    until: datetime | None = None


async def list_models(
    query: ModelQuery,
    order: ModelOrder,
    first: int | None,
    after: str | None,
    window: DownloadWindow | None = None,
) -> Page[Model]:
    if order is ModelOrder.DOWNLOADS_DESC:
        return await _list_by_downloads(query, window or DownloadWindow(), first, after)
    return await keyset_page(Model, query.to_mongo(), SORTS[order], order.value, first, after)


async def _list_by_downloads(
    query: ModelQuery, window: DownloadWindow, first: int | None, after: str | None
) -> Page[Model]:
    """Most completed downloads in the window first (ties by name, version); the cursor is an offset."""
    limit = check_first(first)
    offset = 0 if after is None else decode_cursor(after, ModelOrder.DOWNLOADS_DESC.value, 1)[0]
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("after", "malformed cursor")
    counts = await analytics.completed_by_version(window.since, window.until)
    base = query.to_mongo()
    keys = [
        (d["_id"], d["name"], d["version"])
        async for d in Model.get_pymongo_collection().find(base, {"name": 1, "version": 1})
    ]
    keys.sort(key=lambda k: (-counts.get((k[1], k[2]), 0), k[1], k[2]))
    window_ids = [k[0] for k in keys[offset : offset + limit]]
    by_id = {d.id: d for d in await Model.find({"_id": {"$in": window_ids}}).to_list()}
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
