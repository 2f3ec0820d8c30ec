"""Runtime settings, read from `MODELHUB_` environment variables (and the standard AWS ones)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .storage import StorageScope

MIN_SECRET_CHARS = 32


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
    # uvicorn's access log (one line per request); /metrics and the download events record every request too.
    access_log: bool = True
    # "json": one JSON object per log line (time, level, logger, message, request_id, trace_id, principal,
    # operation) for log shippers; "text": uvicorn's lines.
    log_format: Literal["text", "json"] = "text"
    # Base URL put in download links; when unset, links are built from the request's own URL.
    public_url: str | None = None

    # Key for download tickets and local presigned URLs; when unset, one is generated into the data dir.
    signing_secret: SecretStr | None = None
    ticket_default_seconds: int = 15 * 60
    ticket_max_seconds: int = 24 * 3600
    # An IN_PROGRESS download whose heartbeat is older than this is swept to ABORTED.
    stale_download_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    # The roller (analytics/roller.py): how often the lease holder folds download stages into the rollups,
    # how old a stage must be before it is folded (clock skew between instances and writes still in flight;
    # a stage later than this is missed until `modelhub rebuild-rollups`), and how long its lease lasts
    # without renewal (a dead holder is replaced after this).
    rollup_interval_seconds: float = Field(default=1.0, gt=0)
    rollup_lag_seconds: float = Field(default=10.0, ge=0)
    rollup_lease_seconds: float = Field(default=15.0, gt=0)
    # How often each worker looks for versions whose artifact still needs hashing.
    checksum_interval_seconds: float = 2.0
    # Versions each worker's verifier hashes at once: for large objects on S3 (reads and hashing overlap)
    # more clears a backlog faster; it takes store and database time from the requests being served (it has
    # no lower priority). On the embedded DB with small objects the database sets the pace (about 30/s at 1,
    # 2 or 4).
    checksum_concurrency: int = Field(default=2, ge=1, le=32)
    stream_chunk_bytes: int = 1024 * 1024

    # Uploads (`requestUpload`): where the server puts uploaded artifacts (its own location, so outside
    # MODELHUB_ALLOWED_STORAGE's reach), how long an upload may stay open before it is cleaned up, and the
    # size above which S3 uploads are multipart (in parts of `upload_part_bytes`, at least 5 MiB).
    upload_bucket: str = "modelhub-artifacts"
    upload_prefix: str = "uploads"
    upload_expires_seconds: int = 3600
    multipart_threshold_bytes: int = 64 * 1024 * 1024
    upload_part_bytes: int = 64 * 1024 * 1024
    # The largest artifact an upload may declare (requestUpload: InvalidInput on sizeBytes above it).
    max_upload_bytes: int = Field(default=1024**4, ge=0)
    # A version whose SHA-256 is still PENDING (its store held no full-object checksum, so only hashing can
    # tell whether the bytes are the declared ones) is hashed by the download that asks for it up to this
    # size; a larger one is refused with CHECKSUM_PENDING until the background verifier has hashed it.
    verify_on_download_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)

    # Browser origins allowed to call the API (CORS), e.g. ["http://localhost:5173"]; none by default.
    # A JSON list in MODELHUB_CORS_ORIGINS; "*" allows any origin (credentials are never sent with CORS here).
    cors_origins: list[str] = []
    cors_max_age_seconds: int = 600

    # Identity: "token" (Authorization: Bearer) or "header" (X-Engineer-ID is trusted; local development);
    # "oidc" is "token" plus bearer JWTs from the OpenID Connect issuer below (graphql_api/oidc.py).
    # Unset: `modelhub serve` picks "header" when it started the embedded DB itself, "token" otherwise.
    auth: Literal["header", "token", "oidc"] | None = None
    # Single sign-on (MODELHUB_AUTH=oidc): the issuer (its discovery document is
    # `<issuer>/.well-known/openid-configuration`), the audience a token's `aud` must contain, the public
    # client /ui and GraphiQL sign in as (authorization-code flow with PKCE; unset: no browser sign-in), the
    # scopes the page asks for, the claim naming the principal (a token without it falls back to `sub`), the
    # claim listing its groups, and group -> {project: role} (with "*": the global role, READER or ADMIN).
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_client_id: str | None = None
    oidc_scopes: str = "openid email profile"
    oidc_principal_claim: str = "email"
    oidc_groups_claim: str = "groups"
    oidc_group_grants: dict[str, dict[str, str]] = {}
    # Clock skew allowed on exp/nbf/iat; the JWKS is fetched again for an unknown kid at most once per
    # `oidc_jwks_refetch_seconds`, and in any case once it is older than `oidc_jwks_max_age_seconds`.
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300)
    oidc_jwks_refetch_seconds: float = Field(default=60.0, ge=1.0)
    oidc_jwks_max_age_seconds: float = Field(default=3600.0, ge=60.0)
    token_cache_seconds: float = 30.0
    # Models held in memory for queries, kept true by a change stream (0: off); see model_cache.py.
    model_cache_entries: int = Field(default=10_000, ge=0)
    model_cache_seconds: float = Field(default=300.0, gt=0)
    token_touch_seconds: float = 60.0
    # `modelhub prune --apply`: days between archiving an unused version and deleting its object (a download
    # or an unarchive meanwhile cancels the deletion), and a pause between two deletions (spares the store).
    prune_grace_days: float = Field(default=7.0, ge=0)
    prune_pause_seconds: float = Field(default=0.0, ge=0, le=60)
    # Where models may be registered: a JSON list of "bucket" or "bucket/prefix" ("*": anywhere). Unset: the
    # local store allows anywhere under its root; S3 allows nothing until configured.
    allowed_storage: list[str] | None = None

    # Webhooks (see README "Webhooks"): delivery targets on loopback, link-local or private addresses are
    # refused unless their host is listed here (a JSON list of host names or addresses, matched exactly).
    webhook_allowed_hosts: list[str] = []
    # How long a delivery is retried (and a webhook may fail without a break before it is disabled).
    webhook_retry_seconds: float = Field(default=24 * 3600.0, gt=0)
    # Exponential backoff between attempts: the first wait, doubled per attempt up to the cap, with jitter.
    webhook_backoff_initial_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # The whole attempt: connect, send, and read the (capped) response.
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_response_cap_bytes: int = Field(default=4096, ge=0)
    # Requests in flight from one instance, overall and to one webhook.
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_concurrency_per_webhook: int = Field(default=4, ge=1, le=64)
    webhook_max_count: int = Field(default=100, ge=0, le=1000)
    # How often an idle worker looks for due deliveries (new ones wake it sooner on the same instance).
    webhook_poll_seconds: float = Field(default=1.0, gt=0)

    # Abuse limits.
    max_body_bytes: int = 1_000_000
    max_query_tokens: int = 5_000
    max_query_cost: int = 5_000
    # Fields an operation selects once every fragment is spread out (refused while validating).
    max_expanded_fields: int = Field(default=2_000, ge=1)
    request_timeout_seconds: float = 15.0
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 100
    # The cost budget (limits.CostBudget): points per principal, refilled evenly over the window; callers
    # without a principal share a smaller one per client address (every operation of theirs costs at least 1
    # point, refused or not). Reported in `extensions.cost` and the RateLimit-* headers; spent: RATE_LIMITED.
    cost_budget: int = Field(default=100_000, ge=1)
    anonymous_cost_budget: int = Field(default=1_000, ge=1)
    cost_budget_window_seconds: float = Field(default=3600.0, gt=0)
    # Raw-event scans: each runs in pieces of about `raw_scan_piece_seconds` of database work (the deadline
    # and the client are checked between pieces); at most `raw_scans_per_principal` pieces of one principal
    # and `raw_scans_total` of the instance (within a quarter of `mongo_max_pool_size`) run on the database at
    # once; the rest wait in the app until their request's deadline (DATABASE_TIMEOUT).
    raw_scan_piece_seconds: float = Field(default=0.5, gt=0)
    raw_scans_per_principal: int = Field(default=2, ge=1)
    raw_scans_total: int = Field(default=6, ge=1)
    introspection: bool = True
    graphiql: bool = True
    # Persisted operations (operations.py): "off" runs any operation (registered hashes resolve too),
    # "audit" also logs and counts the unregistered ones, "enforce" runs registered operations only.
    persisted_operations: Literal["off", "audit", "enforce"] = "off"
    # Where GraphiQL's own copies of its assets live (`modelhub fetch-assets` puts them there); unset: inside
    # the installed package. When they are missing the page loads them from the CDN, and the log says so.
    assets_dir: Path | None = None
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs); none by default.
    trusted_proxies: list[str] = []
    # Host header values this server answers to (e.g. ["models.example.com"]); any when empty.
    allowed_hosts: list[str] = []

    # Connections held by `modelhub serve` (graphql_api/http/server.py): a request's headers must arrive
    # within `header_timeout_seconds` of its first byte (or of the connection opening), else 408 and closed
    # (a WebSocket's `connection_init` within the same time of its upgrade, else close 4408); a request's
    # line and headers may take at most `max_header_bytes`, and at most `max_header_count` header lines, else
    # 431 and closed;
    # a request body may pause at most `body_timeout_seconds` between chunks (the whole body is not timed);
    # an idle keep-alive connection is closed after `keep_alive_seconds`; a worker process holds at most
    # `max_connections` / workers open connections (HTTP and WebSocket) and answers further ones 503 and
    # closes them at once.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    max_connections: int = Field(default=1000, ge=1)
    max_header_bytes: int = Field(default=65536, ge=8192, le=1_048_576)
    max_header_count: int = Field(default=100, ge=32, le=10_000)

    # Outages: a dependency is probed every `health_interval_seconds`, each probe bounded by
    # `health_probe_timeout_seconds`; `health_failures` failures in a row mark it down (requests that need it
    # then fail at once with a typed error) until a probe answers again.
    health_interval_seconds: float = 0.5
    health_probe_timeout_seconds: float = 1.5
    health_failures: int = 2
    # The longest an object-store call that should answer at once (HEAD, the start of a GET) may take.
    store_timeout_seconds: float = 4.0
    # How long a download already streaming waits out a stalled store before it ends FAILED.
    store_read_timeout_seconds: float = 60.0
    # A database call's connection and server-selection bounds (each request also has its deadline).
    mongo_connect_timeout_seconds: float = 2.0
    mongo_server_selection_timeout_seconds: float = 4.0
    # The database connection pool of an instance; raw scans take at most a quarter of it
    # (limits.SCAN_POOL_SHARE), and the health probe has a client of its own, outside it.
    mongo_max_pool_size: int = Field(default=100, ge=4)

    # Set by `modelhub serve` when it supervises an embedded database: where the supervisor writes its
    # state; `/healthz` fails once it says the database could not be restarted.
    embedded_state_file: Path | None = None

    # Live feed: how many updates a subscriber may fall behind before it is told to reconnect.
    feed_buffer_events: int = 1000
    # Live subscriptions an instance takes: per principal, in all, and replaying from a cursor at once (each
    # of those holds a change stream of its own until it reaches the shared one), in all and per principal
    # (never more than in all: one principal cannot take every replay slot). Past them a subscription
    # ends at once with SUBSCRIPTION_LIMIT_REACHED.
    feed_max_subscriptions_per_principal: int = Field(default=20, ge=1)
    feed_max_subscriptions: int = Field(default=1000, ge=1)
    feed_max_catching_up: int = Field(default=20, ge=1)
    feed_max_catching_up_per_principal: int = Field(default=3, ge=1)
    # Acknowledged WebSockets one caller (a principal, or a client address without one) may hold open on an
    # instance: an idle socket costs nothing per minute, so without this one token could hold every
    # connection MODELHUB_MAX_CONNECTIONS allows. Past it the new socket is closed with 4429.
    max_sockets_per_principal: int = Field(default=50, ge=1)

    # Analytics guard: HOUR buckets may span at most this many days.
    max_hour_range_days: int = 31
    # Personal data: raw download events (who, what, when, from which address) are deleted this many days
    # after they started (a TTL index on `started_at`, and a periodic delete where the database does not
    # expire documents); the rollups keep the figures (see README "Teams, sign-on and privacy").
    event_retention_days: int = Field(default=90, ge=1, le=36_500)
    # Audit records are kept this many days (a TTL index on their time), then deleted the same way.
    audit_retention_days: int = Field(default=365, ge=1, le=36_500)
    # Audit records wait in a bounded in-memory queue for their insert; when it is full a record is dropped,
    # logged and counted (modelhub_audit_records_dropped_total), never lost silently.
    audit_queue_records: int = Field(default=10_000, ge=1)
    # When set, /metrics answers only `Authorization: Bearer <this token>` (401 otherwise); compose's
    # Prometheus sends it from observability/prometheus/metrics-token.
    metrics_token: SecretStr | None = None
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

    @field_validator("signing_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"MODELHUB_SIGNING_SECRET must be at least {MIN_SECRET_CHARS} characters")
        return value

    @property
    def storage_scope(self) -> StorageScope:
        if self.allowed_storage is None:
            return StorageScope(None if self.storage_backend == "local" else ())
        return StorageScope.parse(self.allowed_storage)

    def private_data_dir(self) -> Path:
        """The data dir, created readable by this user only (0700)."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        return self.data_dir

    def resolved_signing_secret(self) -> bytes:
        """The configured secret, or one generated once and kept (mode 0600) in the data dir. Created
        atomically: written under a temporary name, then linked into place, so that concurrent workers
        all read the one complete key."""
        if self.signing_secret is not None:
            return self.signing_secret.get_secret_value().encode()
        path = self.private_data_dir() / "signing.key"
        if not path.exists():
            temp = path.with_name(f".signing.key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another process won; use its key
            finally:
                temp.unlink()
        secret = path.read_text().strip()
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                f"{path.name} in the data dir holds a key shorter than {MIN_SECRET_CHARS} characters"
            )
        return secret.encode()
