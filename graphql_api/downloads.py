"""Download use cases: issuing tickets, verifying and claiming them (`download_outcomes` records how each
download ends)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from . import auth, checksums, registry
from .analytics import rollups
from .db import events as events_db
from .db import models as models_db
from .documents import ClientKind, DownloadEvent, DownloadMode, DownloadStatus, ModelVersion, utcnow
from .errors import Forbidden, InvalidInput, ModelVersionArchived, ObjectDeleted, TicketInvalid, TicketProblem
from .scope import Scope
from .services import Services
from .storage import ObjectInfo
from .storage.local import OBJECT_TOKEN_PURPOSE

log = logging.getLogger("modelhub.downloads")

TICKET_PURPOSE = "download"
ByteRange = tuple[int, int] | None


@dataclass(frozen=True)
class Requester:
    engineer: str
    user_agent: str | None
    client_address: str | None
    # The record id of the token the requester authenticated with: its tickets and links die with it.
    token_id: str | None = None
    # Who the download is for and the rule that said so (client_kind.decide), and the SDK release.
    client_kind: ClientKind = ClientKind.UNKNOWN
    client_kind_rule: str | None = None
    client_version: str | None = None


@dataclass(frozen=True)
class Ticket:
    url: str
    mode: DownloadMode
    expires_at: datetime
    event: DownloadEvent


@dataclass(frozen=True)
class PresignedObject:
    bucket: str
    key: str
    filename: str
    info: ObjectInfo


def artifact_filename(model: ModelVersion) -> str:
    return PurePosixPath(model.key).name or f"{model.name.replace('/', '_')}-v{model.version}"


def check_expires_in(services: Services, expires_in: int | None) -> int:
    settings = services.settings
    if expires_in is None:
        return settings.ticket_default_seconds
    if not 1 <= expires_in <= settings.ticket_max_seconds:
        raise InvalidInput("expiresIn", f"must be between 1 and {settings.ticket_max_seconds} seconds")
    return expires_in


async def downloadable(
    services: Services, scope: Scope, name: str, version: int | None, alias: str | None = None
) -> tuple[ModelVersion, ObjectInfo]:
    """The version (by number, by alias resolved now, or the latest) and its object, or the reason it
    cannot be downloaded now; a model `scope` may not read is not found, like an absent one."""
    model = await registry.require_version(scope, name, version, alias)
    ensure_servable(model)
    return model, await current_object(services, model)


def ensure_servable(model: ModelVersion) -> None:
    """Refuses a tombstone (ObjectDeleted, also while its deletion is under way) and an archived version.
    A version `modelhub prune` archived stays downloadable through its grace period (by number, or by an
    alias that still points at it): such a download is the signal that cancels its deletion."""
    if model.object_deleted or model.object_deleting:
        raise ObjectDeleted(model.name, model.version)
    if model.archived and model.prune_marked_at is None:
        raise ModelVersionArchived(model.name, model.version)


async def current_object(services: Services, model: ModelVersion) -> ObjectInfo:
    """The version's object as the store has it now, refused if it is not the registered one (changed
    since, its SHA-256 found wrong, or its declared SHA-256 not yet checked where the store cannot vouch)."""
    info = await services.store.head(model.bucket, model.key)
    await checksums.ensure_servable(
        services.store, model, info, services.settings.verify_on_download_max_bytes
    )
    return info


async def report_verification(who: Requester, scope: Scope, event_id: Any, matches: bool) -> DownloadEvent:
    """Records a client's verdict on a download's SHA-256, once, by the download's own principal only, with
    the rollup stage that counts it in the download's buckets (`verified` or `mismatched`, folded by
    analytics/roller.py).
    A download of a project `scope` may not read is "no such download", as a missing one."""
    event = await events_db.get(event_id)
    if event is None or not scope.can_read(event.project_name):
        raise InvalidInput("download", "no such download")
    if event.engineer != who.engineer:
        raise Forbidden("only the principal who downloaded may report its verification")
    done = await events_db.report_verification(event_id, who.engineer, matches, utcnow())
    if done is None:
        raise InvalidInput("download", "its verification was already reported")
    return done


def _new_event(model: ModelVersion, who: Requester, mode: DownloadMode, **fields: Any) -> DownloadEvent:
    """A new event, stamped with its `recorded` rollup stage (the roller counts it; analytics/roller.py)."""
    now = utcnow()
    return DownloadEvent.of_version(
        model,
        stages={rollups.RECORDED: now},
        staged_at=now,
        engineer=who.engineer,
        user_agent=(who.user_agent or "")[:512] or None,
        client_address=who.client_address,
        client_kind=who.client_kind,
        client_kind_rule=who.client_kind_rule,
        client_version=who.client_version,
        mode=mode,
        **fields,
    )


async def resumed_event(resumes: str | None, model: ModelVersion, who: Requester) -> ObjectId | None:
    """The id of the earlier download a new one resumes: it must be this requester's, of this version."""
    if resumes is None:
        return None
    try:
        event_id = ObjectId(resumes)
    except (InvalidId, TypeError):
        raise InvalidInput("resumes", "must be the id of an earlier download") from None
    earlier = await events_db.get(event_id)
    if earlier is None or earlier.model_id != model.id or earlier.engineer != who.engineer:
        raise InvalidInput("resumes", "is not an earlier download of this version by the same requester")
    return event_id


async def issue_ticket(
    services: Services,
    *,
    name: str,
    version: int | None,
    alias: str | None = None,
    mode: DownloadMode,
    expires_in: int | None,
    who: Requester,
    scope: Scope,
    base_url: str,
    resumes: str | None = None,
) -> Ticket:
    """Checks the model and its object, records an ISSUED event, and signs a URL for it."""
    metrics = services.metrics
    try:
        seconds = check_expires_in(services, expires_in)
        model, _ = await downloadable(services, scope, name, version, alias)
        resumed = await resumed_event(resumes, model, who)
    except Exception as exc:
        metrics.count_download_request(mode.value, getattr(exc, "code", "error"))
        raise
    expires_at = utcnow() + timedelta(seconds=seconds)
    event = _new_event(model, who, mode, expires_at=expires_at, resumes=resumed, requested_alias=alias)
    await services.events.insert(event)
    if mode is DownloadMode.STREAM:
        payload = {"e": str(event.id), "m": str(model.id), "v": model.version, "p": who.engineer}
        token = services.signer.sign(TICKET_PURPOSE, _bound(payload, who), expires_at.timestamp())
        url = f"{base_url}/downloads/{token}"
    else:
        # Claims a store that serves its links through the app (local) checks when one is used; S3 serves
        # its presigned URLs itself, so they live until they expire (at most MODELHUB_TICKET_MAX_SECONDS).
        claims = _bound({"m": str(model.id)}, who)
        url = await services.store.presign_get(
            model.bucket, model.key, seconds, artifact_filename(model), claims=claims
        )
        if url.startswith("/"):
            url = base_url + url
    _count_issued(services, mode, model)
    return Ticket(url=url, mode=mode, expires_at=expires_at, event=event)


def _bound(payload: dict[str, Any], who: Requester) -> dict[str, Any]:
    """A ticket's or link's payload bound to the requester's token (when it has one): it dies with it."""
    return {**payload, "t": who.token_id} if who.token_id is not None else payload


async def _check_token(services: Services, payload: dict[str, Any], project: str | None) -> None:
    """Refuses a ticket or link whose token has been revoked or has expired since it was issued, or whose
    principal may no longer read the project (a grant revoked, the project made PRIVATE: as the directory
    of projects knows it, so within MODELHUB_TOKEN_CACHE_SECONDS of a change made elsewhere)."""
    token_id = payload.get("t")
    if token_id is None:
        return
    principal = await auth.token_principal(str(token_id))
    if principal is None:
        raise TicketInvalid(
            "the token this was issued to has been revoked or has expired", TicketProblem.FORBIDDEN
        )
    if project is not None:
        _, scope = await services.projects.resolve(principal)
        if not scope.can_read(project):
            raise TicketInvalid(
                "the token this was issued to may no longer read this model", TicketProblem.FORBIDDEN
            )


def _object_id(value: Any) -> ObjectId:
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError) as exc:
        raise TicketInvalid("malformed ticket", TicketProblem.MALFORMED) from exc


async def open_ticket(services: Services, token: str) -> tuple[DownloadEvent, ModelVersion]:
    """Verifies a STREAM ticket and finds its event and model; nothing is changed yet."""
    payload = services.signer.verify(TICKET_PURPOSE, token)
    event = await events_db.get(_object_id(payload.get("e")))
    if event is None:
        raise TicketInvalid("unknown ticket", TicketProblem.UNKNOWN)
    if (
        str(event.model_id) != payload.get("m")
        or event.model_version != payload.get("v")
        or event.engineer != payload.get("p")
    ):
        raise TicketInvalid("ticket does not belong to this download", TicketProblem.FORBIDDEN)
    if event.mode is not DownloadMode.STREAM:
        raise TicketInvalid("not a streaming ticket", TicketProblem.FORBIDDEN)
    model = await models_db.get_version(event.model_id)
    if model is None:
        raise TicketInvalid("the model of this ticket no longer exists", TicketProblem.UNKNOWN)
    await _check_token(services, payload, model.project_name)
    ensure_servable(model)  # archived (or pruned) after the ticket was issued: the ticket dies with it
    return event, model


def _range_fields(byte_range: ByteRange) -> dict[str, Any]:
    now = utcnow()
    return {
        "transfer_started_at": now,
        "heartbeat_at": now,
        "range_start": byte_range[0] if byte_range else None,
        "range_end": byte_range[1] if byte_range else None,
    }


async def claim(event: DownloadEvent, byte_range: ByteRange) -> DownloadEvent:
    """ISSUED → IN_PROGRESS, atomically: a ticket is good for one download, however many race for it."""
    claimed = await events_db.claim(event.id, _range_fields(byte_range), uuid.uuid4().hex)
    if claimed is None:
        raise TicketInvalid("ticket has already been used", TicketProblem.USED)
    return claimed


async def start_direct(
    services: Services,
    model: ModelVersion,
    who: Requester,
    byte_range: ByteRange,
    resumes: ObjectId | None = None,
    alias: str | None = None,
) -> DownloadEvent:
    """The one-step download: an event created already IN_PROGRESS (the caller streams it at once);
    `alias` is the alias it asked for, if it asked by alias."""
    fields = _range_fields(byte_range)
    event = _new_event(
        model,
        who,
        DownloadMode.STREAM,
        status=DownloadStatus.IN_PROGRESS,
        resumes=resumes,
        requested_alias=alias,
        **fields,
    )
    await services.events.insert(event)
    _count_issued(services, DownloadMode.STREAM, model)
    return event


def _count_issued(services: Services, mode: DownloadMode, model: ModelVersion) -> None:
    """Counts a download issued (a ticket, or a one-step download begun) and the size it asks for."""
    services.metrics.download_requests.labels(mode.value, "issued").inc()
    services.metrics.download_size.labels(mode.value).observe(model.size_bytes)


async def open_presigned(services: Services, token: str) -> tuple[str, str, str]:
    """The (bucket, key, filename) a local-store presigned URL was signed for, refused (like a stream
    ticket) when its version has been archived or deleted, or its token revoked, since it was issued."""
    payload = services.signer.verify(OBJECT_TOKEN_PURPOSE, token)
    try:
        bucket, key, filename = str(payload["b"]), str(payload["k"]), str(payload["fn"])
    except KeyError:
        raise TicketInvalid("malformed ticket", TicketProblem.MALFORMED) from None
    model = await models_db.get_version(_object_id(payload["m"])) if "m" in payload else None
    if "m" in payload and model is None:
        raise TicketInvalid("the model of this link no longer exists", TicketProblem.UNKNOWN)
    await _check_token(services, payload, model.project_name if model else None)
    if model is not None:
        ensure_servable(model)
    return bucket, key, filename
