"""Checks every operation passes before it executes: an authenticated caller, the cost budget, the
mutation rate limit; and the deadline every database call of the operation runs under."""

from __future__ import annotations

from collections.abc import Iterator

import pymongo
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from ..documents import utcnow
from ..errors import DomainError
from .context import Context
from .cost import operation_cost


class CostLimitExceeded(DomainError):
    code = "COST_LIMIT_EXCEEDED"

    def __init__(self, cost: int, limit: int) -> None:
        super().__init__(
            f"this operation would cost {cost}, over the limit of {limit}: ask for fewer rows "
            "(first/last/limit), fewer aliases, or exact statistics less often"
        )
        self.cost = cost
        self.limit = limit


class RequestGuards(SchemaExtension):
    """Runs before execution (after parsing and validation): a refused operation executes nothing."""

    cost: int | None = None

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if not isinstance(context, Context):  # executed in-process (schema.introspect()), not for a client
            yield
            return
        services = context.services
        settings = services.settings
        operation = ctx.operation_type
        principal = context.principal  # raises Unauthenticated: every operation needs a caller
        if ctx.graphql_document is not None:
            cost = operation_cost(ctx.graphql_document, ctx.operation_name, ctx.variables)
            self.cost = cost  # for the operation's trace span
            if cost > settings.max_query_cost:
                raise CostLimitExceeded(cost, settings.max_query_cost)
            if operation is OperationType.MUTATION:
                services.limiter.take(
                    principal.engineer, _root_fields(ctx.graphql_document, ctx.operation_name)
                )
        if operation is OperationType.SUBSCRIPTION:
            yield
            return
        context.cached_reads = operation is OperationType.QUERY
        started = utcnow()
        # PyMongo's client-side operation timeout: every call made while executing shares one deadline,
        # and the server is told the time left (maxTimeMS) so it stops working when the client gives up.
        try:
            with pymongo.timeout(settings.request_timeout_seconds):
                yield
        finally:
            if operation is OperationType.MUTATION:
                services.models.wrote(started)  # this caller's next query reads what its mutation wrote


def _root_fields(document: object, operation_name: str | None) -> int:
    from graphql import OperationDefinitionNode

    for definition in getattr(document, "definitions", ()):
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        ):
            return max(1, len(definition.selection_set.selections))
    return 1
