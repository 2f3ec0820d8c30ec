"""The schema's extensions, three in all: Strawberry builds every extension anew for each request and walks
each one at every hook, so the parser cache and the token limit share one, the validation cache and the
document limits another, and error masking, metrics and the request guards a third."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from graphql import DocumentNode, GraphQLError
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache
from strawberry.types import ExecutionContext

from .. import logs
from ..tracing import Tracing
from .errors import MaskUnexpectedErrors
from .guards import RequestGuards

CACHE_SIZE = 256


def parsing(max_tokens: int) -> type[SchemaExtension]:
    class Parsing(ParserCache):
        """Parses through the shared cache; no document may hold more than `max_tokens` tokens (checked
        while parsing, before any work)."""

        def __init__(self) -> None:
            super().__init__(maxsize=CACHE_SIZE)

        def on_parse(self) -> Iterator[None]:
            ctx = self.execution_context
            ctx.parse_options["max_tokens"] = max_tokens
            try:
                ctx.graphql_document = self.cached_parse_document(ctx.query, **ctx.parse_options)
            except GraphQLError:
                # Left unparsed, Strawberry parses it again (bounded the same way) inside its own error
                # handling, which answers with the error; raised from here, the WebSocket path dropped it
                # (the client got `complete` alone, and the log a traceback).
                ctx.graphql_document = None
            yield

    return Parsing


def validation(
    rules: tuple[Any, ...],
    replaced: Mapping[Any, Any] | None = None,
    precheck: Callable[[DocumentNode], list[GraphQLError]] | None = None,
) -> type[SchemaExtension]:
    class Validation(ValidationCache):
        """Validates through the shared cache with `rules` added (and graphql-core rules in `replaced`
        swapped for bounded ones): the rule classes are built once, so the cache key (which includes the
        rules) is the same for every request, over HTTP and WebSocket alike. `precheck` (the document
        limits, in time linear in the document) runs first: a document it refuses is not validated further."""

        added: ClassVar[tuple[Any, ...]] = rules
        swaps: ClassVar[Mapping[Any, Any]] = dict(replaced or {})
        check: ClassVar[Callable[[DocumentNode], list[GraphQLError]] | None] = precheck

        def __init__(self) -> None:
            super().__init__(maxsize=CACHE_SIZE)

        def on_operation(self) -> Iterator[None]:
            ctx = self.execution_context
            kept = tuple(self.swaps.get(rule, rule) for rule in ctx.validation_rules)
            ctx.validation_rules = kept + self.added
            yield

        def on_validate(self) -> Iterator[None]:
            ctx = self.execution_context
            check = type(self).check
            refused = check(ctx.graphql_document) if check and ctx.graphql_document is not None else []
            if refused:
                ctx.pre_execution_errors = refused
                yield
            else:
                yield from super().on_validate()

    return Validation


class OperationHooks(MaskUnexpectedErrors, RequestGuards):
    """Around each operation: unexpected errors masked, every error labelled with a code, the operation
    counted and timed; before execution: the request guards (caller, cost, rate limit, deadline)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        ctx = self.execution_context
        tracing = _tracing_of(ctx)
        if tracing is None:
            yield from super().on_operation()
            record_operation(ctx, started)
            return
        # Name, type and outcome only: never the document or its variables.
        with tracing.tracer.start_as_current_span("graphql.operation") as span:
            yield from super().on_operation()
            record_operation(ctx, started)
            operation_type, outcome = operation_facts(ctx)
            name = ctx.operation_name or "(anonymous)"
            span.update_name(f"{operation_type} {name}")
            attributes = {
                "graphql.operation.type": operation_type,
                "graphql.operation.name": name,
                "modelhub.outcome": outcome,
            }
            span.set_attributes(attributes | ({} if self.cost is None else {"modelhub.cost": self.cost}))

    def on_execute(self) -> Iterator[None]:
        # Parsed by now: the log lines of the rest of the request name the operation.
        # Left set: the access log line, written after the response, names the operation too (each request
        # runs in a task of its own, so it does not outlive the request).
        logs.operation.set(self.execution_context.operation_name or "(anonymous)")
        yield from super().on_execute()


def _tracing_of(ctx: ExecutionContext) -> Tracing | None:
    app = getattr(getattr(ctx.context, "request", None), "app", None)
    return getattr(getattr(app, "state", None), "tracing", None)


def operation_facts(ctx: ExecutionContext) -> tuple[str, str]:
    """The operation's type and outcome (errors count though HTTP says 200)."""
    try:
        operation_type = ctx.operation_type.value
    except Exception:  # the document did not parse, so it has no operation type
        operation_type = "unknown"
    errors = ctx.result.errors if ctx.result is not None else None
    return operation_type, "error" if errors or ctx.result is None else "success"


def record_operation(ctx: ExecutionContext, started: float) -> None:
    """Counts an operation by type, allowlisted name and outcome."""
    services = getattr(ctx.context, "services", None)
    if services is None:
        return
    metrics = services.metrics
    operation_type, outcome = operation_facts(ctx)
    name = metrics.operation_label(ctx.operation_name)
    metrics.operations.labels(operation_type, name, outcome).inc()
    metrics.operation_duration.labels(operation_type, name).observe(time.perf_counter() - started)
