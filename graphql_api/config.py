"""Runtime settings, read from `MODELHUB_` environment variables (and the standard AWS ones)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the app needs to start; built once by the CLI or a test and passed to `create_app`."""

    model_config = SettingsConfigDict(env_prefix="MODELHUB_", extra="ignore", populate_by_name=True)

    # MongoDB: with no URI, `modelhub serve` starts an embedded SecantusDB under `<data_dir>/db`.
    mongo_uri: str | None = None
    mongo_db: str = "modelhub"

    # Object storage: "auto" picks S3 when an endpoint is configured, else the local store under the data dir.
    storage: Literal["auto", "local", "s3"] = "auto"
    s3_endpoint_url: str | None = None
    # The endpoint put into presigned URLs, when clients reach S3 by another name than the app does
    # (docker-compose: the app talks to http://minio:9000, browsers to http://localhost:9000).
    s3_public_endpoint_url: str | None = None
    s3_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("MODELHUB_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MODELHUB_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MODELHUB_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )

    data_dir: Path = Path(".modelhub")
    host: str = "127.0.0.1"
    port: int = 8000
    # Base URL put in download links; when unset, links are built from the request's own URL.
    public_url: str | None = None

    # Key for download tickets and local presigned URLs; when unset, one is generated into the data dir.
    signing_secret: SecretStr | None = None
    ticket_default_seconds: int = 15 * 60
    ticket_max_seconds: int = 24 * 3600
    # An IN_PROGRESS download whose heartbeat is older than this is swept to ABORTED.
    stale_download_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    stream_chunk_bytes: int = 1024 * 1024

    # Browser origins allowed to call the API (CORS), e.g. ["http://localhost:5173"]; none by default.
    # A JSON list in MODELHUB_CORS_ORIGINS; "*" allows any origin (credentials are never sent with CORS here).
    cors_origins: list[str] = []
    cors_max_age_seconds: int = 600

    # Live feed: how many updates a subscriber may fall behind before it is told to reconnect.
    feed_buffer_events: int = 1000

    # Analytics guard: HOUR buckets may span at most this many days.
    max_hour_range_days: int = 31
    # Model names that may appear as a metric label value; every other name is reported as "other".
    metrics_model_allowlist: list[str] = []
    # Operation names that may appear as a metric label (everything else is "other"): by default the
    # operations of modelhub's own SDK and dashboards; add your clients' names.
    metrics_operation_allowlist: list[str] = [
        "RegisterModel",
        "RequestDownload",
        "ListModels",
        "GrafanaTopModels",
        "GrafanaEngineerDownloads",
    ]

    @property
    def storage_backend(self) -> Literal["local", "s3"]:
        if self.storage == "auto":
            return "s3" if self.s3_endpoint_url else "local"
        return self.storage

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    def resolved_signing_secret(self) -> bytes:
        """The configured secret, or one generated once and kept (mode 0600) in the data dir."""
        if self.signing_secret is not None:
            return self.signing_secret.get_secret_value().encode()
        path = self.data_dir / "signing.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
        return path.read_text().strip().encode()
