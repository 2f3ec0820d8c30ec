"""`build_schema`: the root types composed from each domain's queries and mutations, the scalar map, and the
extensions every operation passes through."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry
from graphql import DocumentNode, GraphQLError
from graphql.validation import (
    NoSchemaIntrospectionCustomRule,
    OverlappingFieldsCanBeMergedRule,
    ValuesOfCorrectTypeRule,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from . import document_limits
from .analytics import AnalyticsQueries
from .audit import AuditQueries
from .connections import describe_pages
from .download_fields import DownloadMutations, DownloadQueries
from .downloads import DownloadEvent
from .errors import MASKED_MESSAGE, TypedValues, is_unexpected, label_error
from .extensions import OperationHooks, parsing, validation
from .operations import OperationMutations
from .projects import ProjectMutations, ProjectQueries
from .registry import RegistryMutations, RegistryQueries
from .relay import NodeQueries
from .retention import RetentionQueries
from .scalars import DATETIME_SCALAR, LONG_SCALAR, Long
from .subscriptions import Subscription
from .tokens import TokenMutations, TokenQueries
from .types import AliasChange, Model, ModelVersion
from .uploads import UploadMutations
from .webhooks import WebhookMutations, WebhookQueries

log = logging.getLogger("modelhub.graphql")


# The order of the bases is the order of the fields in the exported SDL.
@strawberry.type(description="Everything that can be read.")
class Query(
    TokenQueries,
    ProjectQueries,
    AuditQueries,
    WebhookQueries,
    RetentionQueries,
    NodeQueries,
    RegistryQueries,
    DownloadQueries,
    AnalyticsQueries,
):
    pass


@strawberry.type(
    description="Everything that changes state; each takes one `input` and returns a result union."
)
class Mutation(
    TokenMutations,
    OperationMutations,
    ProjectMutations,
    WebhookMutations,
    RegistryMutations,
    DownloadMutations,
    UploadMutations,
):
    pass


class ModelhubSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Errors raised on purpose (bad input, auth) are the client's business; only bugs get a traceback.
        unexpected = [e for e in errors if is_unexpected(e)]
        for error in errors:
            if error not in unexpected:
                # parse errors reach here without passing the extensions
                label_error(error, execution_context.graphql_document if execution_context else None)
                log.info("graphql error: %s", error.message)
        if unexpected:
            super().process_errors(unexpected, execution_context)  # logged in full here, then masked:
            for error in unexpected:  # one raised outside the operation's hooks never reaches MaskErrors
                error.message = MASKED_MESSAGE
                error.extensions = {"code": "INTERNAL_SERVER_ERROR"}


@dataclass(frozen=True)
class SchemaLimits:
    """Document limits enforced while parsing and validating (the cost budget is checked per request)."""

    max_depth: int = 12
    max_aliases: int = 50
    max_fields: int = 2_000  # fields once every fragment is spread out
    # Work units of graphql-core's OverlappingFieldsCanBeMergedRule (shipped documents spend at most 2).
    overlap_budget: int = 10_000
    max_tokens: int = 5_000
    introspection: bool = True


def _document_rules(limits: SchemaLimits) -> tuple[Any, ...]:
    """Validation rules added to graphql-core's (no introspection, when off), as classes built once."""
    return (NoSchemaIntrospectionCustomRule,) if not limits.introspection else ()


def document_check(limits: SchemaLimits) -> Callable[[DocumentNode], list[GraphQLError]]:
    """Depth, alias and expanded-field limits, checked before graphql-core's validation. Strawberry's
    QueryDepthLimiter and MaxAliasesLimiter followed every spread anew (a fragment spreading another ten
    times, six deep, took seconds); this measures each fragment once."""
    shape = document_limits.DocumentLimits(limits.max_depth, limits.max_aliases, limits.max_fields)
    return functools.partial(document_limits.check, limits=shape)


def build_schema(limits: SchemaLimits | None = None) -> strawberry.Schema:
    limits = limits or SchemaLimits()
    schema = ModelhubSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Model, ModelVersion, DownloadEvent, AliasChange],
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR, datetime: DATETIME_SCALAR}),
        extensions=[
            OperationHooks,
            parsing(limits.max_tokens),
            validation(
                _document_rules(limits),
                {
                    OverlappingFieldsCanBeMergedRule: document_limits.overlap_rule(limits.overlap_budget),
                    # Literal values: BAD_USER_INPUT naming the field (not graphql-core's generic check).
                    ValuesOfCorrectTypeRule: TypedValues,
                },
                document_check(limits),
            ),
        ],
    )
    describe_pages(schema._schema)
    return schema
