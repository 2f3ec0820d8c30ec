"""The SDK's typed results: frozen dataclasses built from the server's GraphQL answers.

Like `graphql_api.client`, this module imports no server module (the standard library only), so a client-only
install (`pip install modelhub`) has it. Field names are the GraphQL fields in snake_case; times are aware
`datetime`s (UTC); lists are tuples, so every value is immutable and hashable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = [
    "Alias",
    "DownloadResult",
    "DownloadTicket",
    "LatestVersion",
    "Model",
    "ModelTotals",
    "ModelVersion",
    "Page",
    "RegisteredOperation",
    "StatsRow",
]

T = TypeVar("T")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _required_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _identity(value: Mapping[str, Any]) -> dict[str, Any]:
    """What a model and its versions both say about themselves (name, project, owner, description, tags), as
    keyword arguments."""
    return {
        "name": value["name"],
        "project_name": value["projectName"],
        "owner": value["owner"],
        "description": value.get("description"),
        "tags": tuple(value.get("tags") or ()),
    }


@dataclass(frozen=True)
class Alias:
    """An alias of a model (such as `prod`) and the version it names."""

    alias: str
    version: int

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> Alias:
        """An alias from a `ModelAlias { alias version }` answer."""
        return cls(alias=value["alias"], version=int(value["version"]))


@dataclass(frozen=True)
class LatestVersion:
    """The newest version of a model as a listing shows it: its number, size and checksum."""

    version: int
    size_bytes: int
    sha256: str | None
    checksum_status: str

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> LatestVersion:
        """A summary from a `ModelVersion { version sizeBytes sha256 checksumStatus }` answer."""
        return cls(
            version=int(value["version"]),
            size_bytes=int(value["sizeBytes"]),
            sha256=value.get("sha256"),
            checksum_status=value["checksumStatus"],
        )


@dataclass(frozen=True)
class ModelTotals:
    """What `info` adds about the model of a version: its description, downloads of all its versions and its
    aliases."""

    description: str | None
    download_count: int
    aliases: tuple[Alias, ...]

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> ModelTotals:
        """Totals from a `Model { description downloadCount aliases { alias version } }` answer."""
        return cls(
            description=value.get("description"),
            download_count=int(value["downloadCount"]),
            aliases=tuple(Alias.from_graphql(a) for a in value.get("aliases") or ()),
        )


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model: its artifact in the store (`storage_uri`, `size_bytes`, `etag`),
    the SHA-256 the server vouches for (None while `checksum_status` is PENDING or UNAVAILABLE), its
    aliases and how often it was downloaded. `model` holds the model's totals when `info` asked for them."""

    id: str
    name: str
    version: int
    project_name: str
    owner: str
    description: str | None
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    size_bytes: int
    etag: str
    content_type: str
    sha256: str | None
    checksum_status: str
    checksum_error: str | None
    storage_uri: str
    created_at: datetime
    archived: bool
    aliases: tuple[str, ...]
    download_count: int
    last_downloaded_at: datetime | None
    model: ModelTotals | None = None

    @property
    def ref(self) -> str:
        """`NAME@VERSION`, the reference the commands accept."""
        return f"{self.name}@{self.version}"

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> ModelVersion:
        """A version from a `ModelVersion` answer with the SDK's fields (`client.VERSION_FIELDS`)."""
        model = value.get("model")
        return cls(
            id=value["id"],
            version=int(value["version"]),
            **_identity(value),
            metadata=dict(value.get("metadata") or {}),
            size_bytes=int(value["sizeBytes"]),
            etag=value["etag"],
            content_type=value["contentType"],
            sha256=value.get("sha256"),
            checksum_status=value["checksumStatus"],
            checksum_error=value.get("checksumError"),
            storage_uri=value["storageUri"],
            created_at=_required_time(value["createdAt"]),
            archived=bool(value["archived"]),
            aliases=tuple(value.get("aliases") or ()),
            download_count=int(value["downloadCount"]),
            last_downloaded_at=_time(value.get("lastDownloadedAt")),
            model=ModelTotals.from_graphql(model) if model else None,
        )


@dataclass(frozen=True)
class Model:
    """A registered model as `models` / `list` return it: who owns it, its tags, aliases, downloads of all
    its versions and a summary of its newest version (None before the first one is complete)."""

    name: str
    project_name: str
    owner: str
    description: str | None
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    download_count: int
    latest_version: LatestVersion | None
    aliases: tuple[Alias, ...]

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> Model:
        """A model from a `Model` node of the SDK's `ListModels` query."""
        latest = value.get("latestVersion")
        return cls(
            **_identity(value),
            created_at=_required_time(value["createdAt"]),
            updated_at=_required_time(value["updatedAt"]),
            download_count=int(value["downloadCount"]),
            latest_version=LatestVersion.from_graphql(latest) if latest else None,
            aliases=tuple(Alias.from_graphql(a) for a in value.get("aliases") or ()),
        )


@dataclass(frozen=True)
class DownloadTicket:
    """A download the server has recorded and authorised: fetch `url` (it carries its own authority: send no
    credentials) within `expires_at`. `sha256` is the checksum to verify the bytes against, None while the
    server has not verified the artifact yet."""

    url: str
    mode: str
    expires_at: datetime
    download_id: str
    version: int
    size: int
    etag: str
    sha256: str | None

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> DownloadTicket:
        """A ticket from a `DownloadTicket` answer of `requestDownload`."""
        download = value["download"]
        version = download.get("modelVersion") or {}
        return cls(
            url=value["url"],
            mode=value["mode"],
            expires_at=_required_time(value["expiresAt"]),
            download_id=download["id"],
            version=int(download["version"]),
            size=int(download["sizeBytes"]),
            etag=version.get("etag") or "",
            sha256=version.get("sha256") if version.get("checksumStatus") == "VERIFIED" else None,
        )


@dataclass(frozen=True)
class DownloadResult:
    """A finished download: the file at `path` holds `size` bytes of `version`, `bytes_written` of them
    fetched now after `resumed_from` bytes already there. `verified` says whether `sha256` was compared
    with the server's (False while the server has not hashed the object)."""

    path: Path
    version: int
    size: int
    bytes_written: int
    resumed_from: int
    sha256: str
    verified: bool
    seconds: float


@dataclass(frozen=True)
class StatsRow:
    """One row of `downloadStats`: the group's dimensions (None for the ones not grouped by), the start of
    its period when bucketed by an interval, and its figures."""

    model_name: str | None
    version: int | None
    project_name: str | None
    engineer: str | None
    mode: str | None
    status: str | None
    period_start: datetime | None
    downloads: int
    completed: int
    aborted: int
    failed: int
    total_bytes: int
    unique_engineers: int
    avg_duration_seconds: float | None
    p95_duration_seconds: float | None

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> StatsRow:
        """A row from a `DownloadStatsRow` answer of the SDK's `Stats` query."""
        version = value.get("version")
        return cls(
            model_name=value.get("modelName"),
            version=int(version) if version is not None else None,
            project_name=value.get("projectName"),
            engineer=value.get("engineer"),
            mode=value.get("mode"),
            status=value.get("status"),
            period_start=_time(value.get("periodStart")),
            downloads=int(value["downloads"]),
            completed=int(value["completed"]),
            aborted=int(value["aborted"]),
            failed=int(value["failed"]),
            total_bytes=int(value["totalBytes"]),
            unique_engineers=int(value["uniqueEngineers"]),
            avg_duration_seconds=value.get("avgDurationSeconds"),
            p95_duration_seconds=value.get("p95DurationSeconds"),
        )


@dataclass(frozen=True)
class RegisteredOperation:
    """An operation registered for persisted-operation mode: its SHA-256 (what a client sends), its name
    (None when anonymous), and whether this call added it (False: it was registered already)."""

    sha256_hash: str
    name: str | None
    created: bool

    @classmethod
    def from_graphql(cls, value: Mapping[str, Any]) -> RegisteredOperation:
        """An operation from a `RegisteredOperations.operations` item."""
        return cls(sha256_hash=value["sha256Hash"], name=value.get("name"), created=bool(value["created"]))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a paged query: its `items`, and the cursor to pass as `after` for the next page
    (`end_cursor`) while `has_next_page`."""

    items: tuple[T, ...]
    has_next_page: bool
    end_cursor: str | None
