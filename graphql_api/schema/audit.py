"""The audit trail at the GraphQL edge: one record per root mutation field, and per root field of any
operation refused as UNAUTHENTICATED, FORBIDDEN or RATE_LIMITED; and the `auditEvents` query."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    value_from_ast_untyped,
)
from strawberry.types import ExecutionContext

from .. import audit
from ..db.audit import AuditFilter
from ..documents import AuditEvent as AuditRecord
from ..documents import AuditKind as AuditKindValue
from ..errors import DomainError
from ..http.caller import client_address
from .connections import AFTER, FIRST, Connection, PageWords, page_request
from .context import Context, Info
from .document_limits import fragments_of
from .enums import graphql_enum
from .node import from_doc

REFUSALS = frozenset({"UNAUTHENTICATED", "FORBIDDEN", "RATE_LIMITED"})
# Where a root field's arguments name what it acts on, in order of preference (looked for in its `input`
# first, then among its own arguments): a model, token, webhook or upload by name or id, else the
# principal a grant is about, else the project itself.
TARGET_KEYS = (
    "name",
    "modelName",
    "model",
    "tokenName",
    "token",
    "webhookName",
    "webhook",
    "principal",
    "uploadId",
    "id",
    "projectName",
    "project",
)
PROJECT_KEYS = ("projectName", "project")
# Root fields whose `name` names a model (so the record's project can be looked up when not given).
_MODEL_WORDS = ("Model", "Alias", "Download", "Upload")


def target_of(arguments: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(target, project) named by a root field's arguments, each None when absent."""
    given = arguments.get("input")
    places = [given, arguments] if isinstance(given, Mapping) else [arguments]

    def first(keys: tuple[str, ...]) -> str | None:
        for place in places:
            for key in keys:
                value = place.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                    return str(value)[:256]
        return None

    return first(TARGET_KEYS), first(PROJECT_KEYS)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            name is None or (definition.name is not None and definition.name.value == name)
        ):
            return definition
    return None


def _root_fields(document: DocumentNode, selections: SelectionSetNode, depth: int = 0) -> Iterator[FieldNode]:
    """The root fields, fragments spread out (at most a few levels: the document limits apply already)."""
    fragments = fragments_of(document)
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            if not selection.name.value.startswith("__"):
                yield selection
        elif depth < 8 and isinstance(selection, InlineFragmentNode):
            yield from _root_fields(document, selection.selection_set, depth + 1)
        elif depth < 8 and isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                yield from _root_fields(document, fragment.selection_set, depth + 1)


def _code(error: GraphQLError) -> str:
    return str((error.extensions or {}).get("code") or "ERROR")


def record_operation(ctx: ExecutionContext, raised: BaseException | None = None) -> None:
    """Queues the audit records of one finished operation (none for a query or subscription that was not
    refused); `raised` is the domain error a request guard refused it with before it executed (it passes
    through the hooks, so the operation has no result yet). Never raises: an audit failure must not fail
    the operation (it is logged and counted)."""
    context = ctx.context
    if not isinstance(context, Context) or ctx.graphql_document is None:
        return
    try:
        _record(ctx, context, ctx.graphql_document, raised)
    except Exception:
        audit.log.exception("audit: recording an operation failed")
        context.services.metrics.audit_dropped.labels("write_failed").inc()


def _record(
    ctx: ExecutionContext, context: Context, document: DocumentNode, raised: BaseException | None
) -> None:
    operation = _operation(document, ctx.operation_name)
    if operation is None:
        return
    errors = list((ctx.result.errors if ctx.result is not None else None) or ctx.pre_execution_errors or [])
    whole = next((_code(e) for e in errors if not e.path), None)
    if isinstance(raised, DomainError):
        whole = raised.code
    elif whole is not None and whole not in REFUSALS:
        return  # refused while parsing or validating (before authentication): nothing was attempted
    by_key: dict[str, str] = {}
    for error in errors:
        if error.path:
            by_key.setdefault(str(error.path[0]), _code(error))
    is_mutation = operation.operation is OperationType.MUTATION
    if not is_mutation and not (whole in REFUSALS or REFUSALS & set(by_key.values())):
        return
    data = ctx.result.data if ctx.result is not None else None
    identity = context.identity
    where = client_address(context.request)
    transport = "websocket" if context.request.scope.get("type") == "websocket" else "http"
    for field in _root_fields(document, operation.selection_set):
        key = field.alias.value if field.alias else field.name.value
        code = by_key.get(key) or whole
        # Popped: the operations of a batched request share one context.
        noted, noted_project = context.audit_outcomes.pop(key, (None, None))
        if is_mutation:
            answered = isinstance(data, Mapping) and data.get(key) is not None
            outcome = noted or code or ("OK" if answered else "ERROR")
            kind = AuditKindValue.REFUSED if outcome in REFUSALS else AuditKindValue.MUTATION
        elif code in REFUSALS:
            outcome, kind = code, AuditKindValue.REFUSED
        else:
            continue
        arguments = {
            a.name.value: value_from_ast_untyped(a.value, ctx.variables) for a in field.arguments or ()
        }
        target, project = target_of(arguments)
        project = project or noted_project
        name = field.name.value
        record = AuditRecord(
            kind=kind,
            principal=identity.engineer if identity is not None else None,
            action=name,
            target=target,
            project=project,
            outcome=outcome,
            client_address=where,
            transport=transport,
        )
        model_name = target if any(w in name for w in _MODEL_WORDS) else None
        context.services.audit.record(record, model_name)


AuditKind = AuditKindValue
graphql_enum(
    AuditKind,
    "What an audit record is about.",
    name="AuditKind",
    MUTATION="A root mutation field, whatever its outcome.",
    TOKEN="A token made or revoked by `modelhub token ...`.",
    REFUSED="A refused attempt: an operation refused UNAUTHENTICATED, FORBIDDEN or RATE_LIMITED, or a "
    "download, object or upload route answering 401/403.",
    SIGN_IN="The first sign-in of a principal not seen before.",
)


@strawberry.type(description="One audit record: who did what to which target, the outcome, when, from where.")
class AuditEvent:
    page_words: ClassVar[PageWords] = PageWords(
        page="A page of audit records, newest first.",
        edge="An audit record and its cursor.",
        one="The record.",
        many="records",
        cursor="Pass as `after` to page from here.",
    )

    at: datetime = strawberry.field(description="When it happened.")
    kind: AuditKind = strawberry.field(description="What the record is about.")
    principal: str | None = strawberry.field(description="Who: the principal, or null when unidentified.")
    action: str = strawberry.field(
        description="What: the root field (`createToken`), CLI command (`token create`) or route "
        "(`GET /downloads`)."
    )
    target: str | None = strawberry.field(
        description="The model, token, webhook, upload or principal acted on, when the action named one."
    )
    project: str | None = strawberry.field(description="The project the target belongs to, when known.")
    outcome: str = strawberry.field(
        description="The result: the result union's type on success (e.g. `ModelVersion`), else the error "
        "code (a union member's or the top-level one, e.g. `FORBIDDEN`); `OK` where there is no result."
    )
    client_address: str | None = strawberry.field(description="From where: the client's address.")
    transport: str = strawberry.field(description="`http`, `websocket` or `cli`.")

    @classmethod
    def from_doc(cls, doc: AuditRecord) -> AuditEvent:
        return from_doc(cls, doc)


AuditEventConnection = Connection[AuditEvent]


@strawberry.input(description="Which audit records: every field given must match.")
class AuditFilterInput:
    principal: str | None = strawberry.field(default=None, description="Only this principal's records.")
    action: str | None = strawberry.field(default=None, description="Only this action, e.g. `createToken`.")
    project: str | None = strawberry.field(default=None, description="Only records about this project.")
    outcome: str | None = strawberry.field(default=None, description="Only this outcome, e.g. `FORBIDDEN`.")
    since: datetime | None = strawberry.field(default=None, description="From this moment (inclusive).")
    until: datetime | None = strawberry.field(default=None, description="Before this moment (exclusive).")

    def to_filter(self) -> AuditFilter:
        names = (field.name for field in dataclasses.fields(AuditFilter))
        return AuditFilter(**{name: getattr(self, name) for name in names})


@strawberry.type
class AuditQueries:
    @strawberry.field(
        description="The audit trail, newest first: every mutation, token change, refused attempt and first "
        "sign-in. An ADMIN reads every record, a project MAINTAINER the records about its projects; anyone "
        "else is refused FORBIDDEN. Records are kept MODELHUB_AUDIT_RETENTION_DAYS."
    )
    async def audit_events(
        self,
        info: Info,
        filter: Annotated[AuditFilterInput | None, strawberry.argument(description="Which records.")] = None,
        first: FIRST = None,
        after: AFTER = None,
    ) -> AuditEventConnection:
        flt = (filter or AuditFilterInput()).to_filter()
        page = await audit.list_events(info.context.principal, flt, page_request(first, after, None, None))
        return AuditEventConnection.of(page, AuditEvent.from_doc)
