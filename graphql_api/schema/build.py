"""`build_schema`: the root types, the scalar map, and the extensions every operation passes through."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from .downloads import DownloadEvent
from .errors import is_unexpected, label_error
from .extensions import OperationHooks, parsing, validation
from .root import Mutation, Query
from .scalars import DATETIME_SCALAR, LONG_SCALAR, Long
from .subscriptions import Subscription
from .types import AliasChange, Model, ModelVersion

log = logging.getLogger("modelhub.graphql")


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
            super().process_errors(unexpected, execution_context)


@dataclass(frozen=True)
class SchemaLimits:
    """Document limits enforced while parsing and validating (the cost budget is checked per request)."""

    max_depth: int = 12
    max_aliases: int = 50
    max_tokens: int = 5_000
    introspection: bool = True


def _document_rules(limits: SchemaLimits) -> tuple[Any, ...]:
    """Depth and alias limits (and no introspection, when off) as validation rule classes built once."""
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return tuple(rules)


def build_schema(limits: SchemaLimits | None = None) -> strawberry.Schema:
    limits = limits or SchemaLimits()
    return ModelhubSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Model, ModelVersion, DownloadEvent, AliasChange],
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR, datetime: DATETIME_SCALAR}),
        extensions=[
            OperationHooks,
            parsing(limits.max_tokens),
            validation(_document_rules(limits)),
        ],
    )
